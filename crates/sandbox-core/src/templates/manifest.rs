//! A user template's manifest (`manifest.json`): what it is made of. Also
//! the first member of an export, so [`Manifest::parse`] treats its bytes as
//! hostile: bounded, strict JSON, every field checked.

use serde::{Deserialize, Serialize};

/// The manifest format this Moat writes and reads.
pub const FORMAT: u32 = 1;
/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Most user layers one template stacks: QEMU's microvm has 8 virtio
/// devices, and root, state, vsock and the workspace take 4 of them.
pub const MAX_LAYERS: usize = crate::backend::QEMU_MAX_DEVICES - 4;
/// Largest layer: a saved state disk is at most `--disk 1t`.
pub const MAX_LAYER_BYTES: u64 = 1 << 40;
/// The folder of a saved state disk that is the layer: the guest's overlay upper.
pub const SAVED_LAYER_DIR: &str = "/upper";

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The template's name (see [`check_name`]).
    pub name: String,
    /// One line for `moat template ls`.
    #[serde(default)]
    pub description: String,
    /// The template Moat ships that it derives from: its agent's launch,
    /// environment, hosts and credentials come from there, and its images lie
    /// under the user layers.
    pub agent: String,
    /// The recipe hashes of that template's images when the first layer was
    /// made over them.
    pub base: BaseDigests,
    /// How the agent starts, when not as `agent`'s template says (programs
    /// brought from the host).
    #[serde(default)]
    pub launch: Option<Launch>,
    /// The user layers, lowest first (file `layer-<i>.ext4` each).
    pub layers: Vec<Layer>,
    /// The user template the source sandbox was made from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// The sandbox whose disk became the top layer, if one did.
    #[serde(default)]
    pub source_sandbox: Option<String>,
}

/// Recipe hashes (64 hex digits) of a shipped template's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseDigests {
    /// The base root file system.
    pub rootfs: String,
    /// The template's own layer (none for `shell`).
    #[serde(default)]
    pub layer: Option<String>,
}

/// How a template's agent starts, replacing its shipped template's launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// The agent in its unattended mode.
    pub argv: Vec<String>,
    /// Arguments of which any one makes it run without a terminal.
    #[serde(default)]
    pub batch: Vec<String>,
}

impl Launch {
    /// `template` (the shipped one a user template derives from) starting
    /// this way instead: its own launch and prepare script are not used.
    pub fn apply(&self, template: &mut moat_images::Template) {
        let launch = &mut template.spec.launch;
        launch.argv = self.argv.clone();
        launch.batch = self.batch.clone();
        launch.batch_example = None;
        launch.replace_with_args = false;
        // The shipped template's subcommands belong to its own argv.
        launch.flags_after.clear();
        template.prepare = None;
    }
}

/// What a layer was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A stopped sandbox's state disk; the layer is its [`SAVED_LAYER_DIR`].
    Sandbox,
    /// Programs brought from the host, in `/usr/local/bin` of the image's root.
    Programs,
}

/// One user layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// What it was made from.
    pub kind: LayerKind,
    /// The sandbox's name, or the programs' names.
    pub source: String,
    /// The image's size in bytes (holes included).
    pub bytes: u64,
    /// Seconds since the epoch.
    pub created_at: i64,
}

impl Layer {
    /// The folder of the image's file system that is the layer (its root when `None`).
    pub fn dir(&self) -> Option<&'static str> {
        match self.kind {
            LayerKind::Sandbox => Some(SAVED_LAYER_DIR),
            LayerKind::Programs => None,
        }
    }
}

/// The file of the `i`-th layer in a template's folder and in an export.
pub fn layer_file(i: usize) -> String {
    format!("layer-{i}.ext4")
}

/// A name that can't be a template's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a name by the rule sandboxes follow.
    #[error("invalid template name {0:?}: use 1-63 characters from a-z, 0-9, '-' and '.', starting and ending with a letter or digit")]
    Invalid(String),
    /// A template Moat ships has it.
    #[error("{0:?} is a template Moat ships; choose another name")]
    Builtin(String),
}

/// The naming rule of user templates: a sandbox name's (`moat_proto::name`),
/// and not the name of a template Moat ships.
pub fn check_name(name: &str) -> Result<(), NameError> {
    moat_proto::name::SandboxName::parse(name).map_err(|_| NameError::Invalid(name.to_string()))?;
    if moat_images::builtin_names().contains(&name) {
        return Err(NameError::Builtin(name.to_string()));
    }
    Ok(())
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("the manifest is {0} bytes, more than the {MAX_MANIFEST_BYTES} a template's may have")]
    TooLarge(u64),
    /// Not JSON of the right shape.
    #[error("the manifest is not valid")]
    Json(#[source] serde_json::Error),
    /// Made by another Moat.
    #[error("the manifest has format {0}; this Moat reads format {FORMAT} (upgrade moat)")]
    Format(u32),
    /// The name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Another field.
    #[error("the manifest's {field} is not valid: {why}")]
    Field { field: &'static str, why: String },
}

impl Manifest {
    /// Parses and checks manifest bytes from anywhere (an export included).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len() as u64));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        m.check()?;
        Ok(m)
    }

    /// The manifest as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("serializing a manifest");
        out.push(b'\n');
        out
    }

    /// Checks every field.
    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |field, why: &str| Err(ManifestError::Field { field, why: why.to_string() });
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        check_name(&self.name)?;
        if let Some(why) = line_problem(&self.description, 200) {
            return bad("description", why);
        }
        if !moat_images::builtin_names().contains(&self.agent.as_str()) {
            return bad("agent", &format!("{:?} is no template this Moat ships", self.agent));
        }
        let is_digest = |d: &str| d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_digest(&self.base.rootfs) || self.base.layer.as_deref().is_some_and(|l| !is_digest(l)) {
            return bad("base", "recipe hashes are 64 lowercase hex digits");
        }
        if let Some(launch) = &self.launch {
            if launch.argv.is_empty() || launch.argv.len() > 64 || launch.batch.len() > 64 {
                return bad("launch", "argv must have 1 to 64 words, batch at most 64");
            }
            if launch.argv.iter().chain(&launch.batch).any(|w| w.is_empty() || line_problem(w, 1024).is_some()) {
                return bad("launch", "words must be non-empty printable text of at most 1024 characters");
            }
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return bad("layers", &format!("a template has 1 to {MAX_LAYERS} layers"));
        }
        for layer in &self.layers {
            if let Some(why) = line_problem(&layer.source, 256) {
                return bad("layers.source", why);
            }
            if layer.bytes == 0 || layer.bytes > MAX_LAYER_BYTES {
                return bad("layers.bytes", "a layer is 1 byte to 1 TiB");
            }
        }
        if let Some(parent) = &self.parent {
            check_name(parent)?;
        }
        if let Some(sandbox) = &self.source_sandbox {
            if moat_proto::name::SandboxName::parse(sandbox).is_err() {
                return bad("source_sandbox", "not a sandbox name");
            }
        }
        Ok(())
    }
}

/// Why `s` can't be shown as one line of at most `max` characters.
fn line_problem(s: &str, max: usize) -> Option<&'static str> {
    if s.chars().count() > max {
        Some("too long")
    } else if s.chars().any(|c| c.is_control() || moat_text::escape_str(&c.to_string()) != c.to_string()) {
        Some("it has control or formatting characters")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "py-tools".into(),
            description: "shell with Python tools".into(),
            agent: "shell".into(),
            base: BaseDigests { rootfs: "ab".repeat(32), layer: None },
            launch: None,
            layers: vec![Layer {
                kind: LayerKind::Sandbox,
                source: "shell-proj".into(),
                bytes: 1 << 30,
                created_at: 5,
            }],
            parent: None,
            created_at: 5,
            source_sandbox: Some("shell-proj".into()),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_every_field_is_checked() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.encode()).unwrap(), m);
        let launch = Manifest {
            launch: Some(Launch {
                argv: vec!["kiro-cli".into(), "chat".into()],
                batch: vec!["--no-interactive".into()],
            }),
            layers: vec![Layer { kind: LayerKind::Programs, source: "kiro-cli".into(), bytes: 4096, created_at: 5 }],
            ..m.clone()
        };
        assert_eq!(Manifest::parse(&launch.encode()).unwrap(), launch);
        assert_eq!(m.layers[0].dir(), Some("/upper"));
        assert_eq!(launch.layers[0].dir(), None);

        let refused = |m: Manifest, what: &str| {
            let err = Manifest::parse(&m.encode()).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        };
        refused(Manifest { format: 2, ..m.clone() }, "format 2");
        refused(Manifest { name: "Bad Name".into(), ..m.clone() }, "invalid template name");
        refused(Manifest { name: "claude".into(), ..m.clone() }, "Moat ships");
        refused(Manifest { description: "a\u{1b}[2Jb".into(), ..m.clone() }, "description");
        refused(Manifest { description: "x".repeat(201), ..m.clone() }, "too long");
        refused(Manifest { agent: "kiro".into(), ..m.clone() }, "agent");
        refused(Manifest { base: BaseDigests { rootfs: "xyz".into(), layer: None }, ..m.clone() }, "base");
        refused(Manifest { layers: vec![], ..m.clone() }, "layers");
        refused(Manifest { layers: vec![m.layers[0].clone(); MAX_LAYERS + 1], ..m.clone() }, "layers");
        let huge = Layer { bytes: MAX_LAYER_BYTES + 1, ..m.layers[0].clone() };
        refused(Manifest { layers: vec![huge], ..m.clone() }, "layers.bytes");
        refused(Manifest { launch: Some(Launch { argv: vec![], batch: vec![] }), ..m.clone() }, "launch");
        refused(Manifest { parent: Some("../x".into()), ..m.clone() }, "invalid template name");
        refused(Manifest { source_sandbox: Some("A".into()), ..m.clone() }, "source_sandbox");
    }

    #[test]
    fn bytes_that_are_not_a_manifest_are_refused() {
        assert!(matches!(Manifest::parse(b"not json"), Err(ManifestError::Json(_))));
        let mut extra = serde_json::to_value(sample()).unwrap();
        extra["surprise"] = 1.into();
        let err = Manifest::parse(&serde_json::to_vec(&extra).unwrap()).unwrap_err();
        assert!(matches!(err, ManifestError::Json(_)), "unknown fields are refused: {err}");
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(Manifest::parse(&big), Err(ManifestError::TooLarge(_))));
    }

    #[test]
    fn template_names_follow_the_sandbox_rule_and_leave_the_shipped_ones_alone() {
        assert!(check_name("py-tools.v2").is_ok());
        for bad in ["", "A", "a b", "a/b", "../x", "x..y", &"a".repeat(64)] {
            assert!(matches!(check_name(bad), Err(NameError::Invalid(_))), "{bad:?}");
        }
        for shipped in moat_images::builtin_names() {
            assert_eq!(check_name(shipped), Err(NameError::Builtin(shipped.into())));
        }
    }
}
