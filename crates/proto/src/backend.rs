//! Which VM monitor runs a sandbox: what the user asks for ([`BackendChoice`],
//! from `--backend` to the stored record), and what runs ([`Running`]: a
//! [`BackendKind`] and its [`Accel`], shown as `qemu/tcg` in status).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Moat picks (QEMU today; with KVM on CPUs with VMX/SVM).
    #[default]
    Auto,
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
    /// moat-vmm, Moat's own KVM monitor (opt-in).
    Vmm,
}

/// The monitors Moat can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
    /// Moat's own KVM monitor.
    Vmm,
}

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// The monitor a running sandbox uses: `qemu/tcg`, `vmm/kvm`, … on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Running {
    /// The monitor.
    pub kind: BackendKind,
    /// Its acceleration.
    pub accel: Accel,
}

/// A string that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: use auto, qemu or vmm")]
pub struct BackendError(pub String);

impl BackendChoice {
    /// The word the user writes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Qemu => "qemu",
            BackendChoice::Vmm => "vmm",
        }
    }
}

impl FromStr for BackendChoice {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "qemu" => Ok(BackendChoice::Qemu),
            "vmm" => Ok(BackendChoice::Vmm),
            _ => Err(BackendError(s.to_string())),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BackendKind {
    /// Short name (`qemu`, `vmm`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Vmm => "vmm",
        }
    }
}

impl Accel {
    /// Short name (`kvm`, `tcg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.accel.as_str())
    }
}

impl From<Running> for String {
    fn from(r: Running) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for Running {
    type Error = BackendError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let kind = match s.split('/').next() {
            Some("qemu") => BackendKind::Qemu,
            Some("vmm") => BackendKind::Vmm,
            _ => return Err(BackendError(s)),
        };
        let accel = match s.split_once('/').map(|(_, a)| a) {
            Some("kvm") => Accel::Kvm,
            Some("tcg") => Accel::Tcg,
            _ => return Err(BackendError(s)),
        };
        Ok(Running { kind, accel })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_and_running_backends_keep_their_spelling() {
        for word in ["auto", "qemu", "vmm"] {
            let choice: BackendChoice = word.parse().unwrap();
            assert_eq!(choice.to_string(), word);
            assert_eq!(serde_json::to_string(&choice).unwrap(), format!("\"{word}\""));
        }
        assert!("kvm".parse::<BackendChoice>().is_err());
        let running = Running { kind: BackendKind::Qemu, accel: Accel::Tcg };
        assert_eq!(serde_json::to_string(&running).unwrap(), "\"qemu/tcg\"");
        assert_eq!(serde_json::from_str::<Running>("\"vmm/kvm\"").unwrap().kind, BackendKind::Vmm);
        assert!(serde_json::from_str::<Running>("\"qemu\"").is_err());
    }
}
