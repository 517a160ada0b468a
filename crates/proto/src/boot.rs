//! The boot configuration the host passes on the kernel command line: one
//! [`BootConfig::encode`] (the host, whatever the backend) and one [`parse`]
//! (the guest's init).
//!
//! ```text
//! moat.name=NAME  moat.root=/dev/vda  moat.state=/dev/vdb
//! moat.mount=TAG,HEXPATH,rw|ro   (repeatable; HEXPATH = lowercase hex of the path's bytes)
//! moat.layer=DEV[,HEXDIR]         (repeatable, lowest first: read-only layers over the root;
//!                                  HEXDIR = the layer's folder on DEV, its root when absent)
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// What `/proc/cmdline` asked of this boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// Hostname.
    pub name: Option<String>,
    /// Read-only base image device.
    pub root: Option<String>,
    /// Read-write state device; a tmpfs upper layer when absent.
    pub state: Option<String>,
    /// Read-only layers over the root device, lowest first.
    pub layers: Vec<Layer>,
    /// virtiofs shares to mount.
    pub mounts: Vec<ShareMount>,
}

/// One `moat.layer=` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Block device (`/dev/vdc`).
    pub device: String,
    /// The folder of the device's file system that is the layer (its root when `None`).
    pub dir: Option<PathBuf>,
}

/// One `moat.mount=` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMount {
    /// virtiofs tag.
    pub tag: String,
    /// Absolute mount point in the guest.
    pub path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl BootConfig {
    /// The `moat.*` parameters, space-separated, as [`parse`] reads them back.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        for (key, value) in [("moat.name", &self.name), ("moat.root", &self.root), ("moat.state", &self.state)] {
            if let Some(v) = value {
                out.push(format!("{key}={v}"));
            }
        }
        for l in &self.layers {
            match &l.dir {
                Some(dir) => out.push(format!("moat.layer={},{}", l.device, encode_hex(dir))),
                None => out.push(format!("moat.layer={}", l.device)),
            }
        }
        for m in &self.mounts {
            let mode = if m.read_only { "ro" } else { "rw" };
            out.push(format!("moat.mount={},{},{mode}", m.tag, encode_hex(&m.path)));
        }
        out.join(" ")
    }
}

fn encode_hex(path: &std::path::Path) -> String {
    path.as_os_str().as_encoded_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A `moat.*` parameter that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ignoring bad kernel parameter `{param}`: {reason}")]
pub struct CmdlineError {
    /// The parameter as written.
    pub param: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a command line; bad `moat.*` entries are returned alongside, not fatal.
pub fn parse(cmdline: &str) -> (BootConfig, Vec<CmdlineError>) {
    let mut cfg = BootConfig::default();
    let mut errors = Vec::new();
    for param in cmdline.split_whitespace() {
        let Some((key, value)) = param.split_once('=') else { continue };
        let bad = |reason| CmdlineError { param: param.to_string(), reason };
        match key {
            "moat.name" if crate::name::SandboxName::parse(value).is_ok() => cfg.name = Some(value.to_string()),
            "moat.name" => errors.push(bad("not a sandbox name (see moat_proto::name)")),
            "moat.root" => cfg.root = Some(value.to_string()),
            "moat.state" => cfg.state = Some(value.to_string()),
            "moat.layer" => match parse_layer(value) {
                Ok(l) => cfg.layers.push(l),
                Err(reason) => errors.push(bad(reason)),
            },
            "moat.mount" => match parse_mount(value) {
                Ok(m) => cfg.mounts.push(m),
                Err(reason) => errors.push(bad(reason)),
            },
            _ => {}
        }
    }
    (cfg, errors)
}

fn parse_layer(value: &str) -> Result<Layer, &'static str> {
    let (device, dir) = match value.split_once(',') {
        Some((device, hex)) => (device, Some(decode_path(hex)?)),
        None => (value, None),
    };
    if !device.starts_with("/dev/") || device.contains("..") {
        return Err("expected /dev/DEVICE[,HEXDIR]");
    }
    Ok(Layer { device: device.to_string(), dir })
}

fn decode_path(hex: &str) -> Result<PathBuf, &'static str> {
    let bytes = decode_hex(hex).ok_or("HEXPATH is not lowercase hex")?;
    let path = PathBuf::from(OsString::from_vec(bytes));
    if !path.is_absolute() || bytes_contain_nul(&path) {
        return Err("the path must be absolute");
    }
    Ok(path)
}

fn parse_mount(value: &str) -> Result<ShareMount, &'static str> {
    let mut parts = value.split(',');
    let (Some(tag), Some(hex), Some(mode), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("expected TAG,HEXPATH,rw|ro");
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        _ => return Err("mode must be rw or ro"),
    };
    if tag.is_empty() {
        return Err("empty virtiofs tag");
    }
    Ok(ShareMount { tag: tag.to_string(), path: decode_path(hex)?, read_only })
}

fn bytes_contain_nul(path: &std::path::Path) -> bool {
    path.as_os_str().as_encoded_bytes().contains(&0)
}

/// Lowercase hex to bytes.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = hex.as_bytes();
    if b.is_empty() || b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn parses_a_full_command_line() {
        let line = format!(
            "console=ttyS0 reboot=t moat.name=box-1 moat.root=/dev/vda moat.state=/dev/vdb \
             moat.mount=work,{},rw moat.mount=ro0,{},ro quiet\n",
            hex("/home/agent/my project"),
            hex("/opt/données")
        );
        let (cfg, errors) = parse(&line);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(cfg.name.as_deref(), Some("box-1"));
        assert_eq!(cfg.root.as_deref(), Some("/dev/vda"));
        assert_eq!(cfg.state.as_deref(), Some("/dev/vdb"));
        assert_eq!(
            cfg.mounts,
            vec![
                ShareMount { tag: "work".into(), path: "/home/agent/my project".into(), read_only: false },
                ShareMount { tag: "ro0".into(), path: "/opt/données".into(), read_only: true },
            ]
        );
    }

    #[test]
    fn bad_entries_are_reported_not_fatal() {
        let line = format!(
            "moat.mount=t,{},rx moat.mount=t,ZZ,ro moat.mount=t,{},ro moat.mount=t moat.name=a/b moat.root=/dev/vda \
             moat.layer=vdc moat.layer=/dev/vdc,{} moat.layer=/dev/../etc",
            hex("/x"),
            hex("relative"),
            hex("up")
        );
        let (cfg, errors) = parse(&line);
        assert_eq!(errors.len(), 8, "{errors:?}");
        assert!(cfg.layers.is_empty());
        assert!(cfg.mounts.is_empty());
        assert_eq!(cfg.name, None);
        assert_eq!(cfg.root.as_deref(), Some("/dev/vda"));
    }

    #[test]
    fn what_the_host_encodes_the_guest_parses() {
        let cfg = BootConfig {
            name: Some("shell-my-project".into()),
            root: Some("/dev/vda".into()),
            state: Some("/dev/vdb".into()),
            layers: vec![
                Layer { device: "/dev/vdc".into(), dir: None },
                Layer { device: "/dev/vdd".into(), dir: Some("/upper".into()) },
            ],
            mounts: vec![
                ShareMount { tag: "ws0".into(), path: "/a b/é,x".into(), read_only: false },
                ShareMount { tag: "ws1".into(), path: "/srv/docs".into(), read_only: true },
            ],
        };
        let line = format!("console=ttyS0 {} quiet", cfg.encode());
        assert_eq!(parse(&line), (cfg, vec![]));
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("2f6120"), Some(b"/a ".to_vec()));
        assert_eq!(decode_hex("2F"), None);
        assert_eq!(decode_hex("2"), None);
        assert_eq!(decode_hex(""), None);
    }
}
