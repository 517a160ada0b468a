//! Templates: what a sandbox boots and starts. Each is data in
//! `crates/images/recipes/templates/<name>/`:
//!
//! - `template.toml`: description, npm packages of its layer, the launch argv
//!   with the agent's own unattended flag, the arguments that make it run
//!   without a terminal, environment, credential services, extra hosts;
//! - `setup.sh` (optional): runs as root in a chroot of the base plus this
//!   layer when the layer is built;
//! - `prepare.sh` (optional): runs as the launching user in the workspace
//!   right before the agent (per-folder answers such as "trust this folder").
//!
//! A template with no packages and no setup (`shell`) is the base alone.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::npm::{NpmError, NpmPackage};

/// Where a layer's `prepare.sh` is installed in the image.
pub const PREPARE_PATH: &str = "/usr/local/libexec/moat/prepare";

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Its name (`claude`).
    pub name: String,
    /// The parsed `template.toml`.
    pub spec: TemplateSpec,
    /// Layer build script.
    pub setup: Option<String>,
    /// Per-launch script.
    pub prepare: Option<String>,
}

/// `template.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// One line for `moat template ls`.
    pub description: String,
    /// Packages of the template's layer.
    #[serde(default)]
    pub npm: Vec<NpmPackage>,
    /// How the agent starts.
    pub launch: Launch,
    /// Environment of every process the user starts in the sandbox.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Credential services whose placeholders the agent reads.
    #[serde(default)]
    pub credentials: Credentials,
    /// Hosts the agent needs.
    #[serde(default)]
    pub network: Network,
}

/// `[launch]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Launch {
    /// The agent in its unattended mode.
    pub argv: Vec<String>,
    /// Arguments of which any one makes the agent run without a terminal.
    #[serde(default)]
    pub batch: Vec<String>,
    /// Shown when the agent needs a terminal: arguments that run it without one.
    #[serde(default)]
    pub batch_example: Option<String>,
    /// User arguments replace `argv` instead of following it (`shell`).
    #[serde(default)]
    pub replace_with_args: bool,
    /// Subcommands that take the unattended flags after them: when the user's
    /// arguments start with one, the flags (`argv` after the program) follow
    /// it (`opencode run --auto …`, where `opencode --auto run …` is refused).
    #[serde(default)]
    pub flags_after: Vec<String>,
}

/// `[credentials]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Service ids of the credentials catalog.
    #[serde(default)]
    pub services: Vec<String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Hosts allowed for this sandbox on top of the `balanced` preset.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No template of that name.
    #[error("unknown template `{name}` (known: {known})")]
    Unknown { name: String, known: String },
    /// `template.toml` does not parse.
    #[error("template `{name}`: template.toml")]
    Parse {
        name: String,
        #[source]
        source: toml::de::Error,
    },
    /// A field is wrong.
    #[error("template `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    /// A package entry is wrong.
    #[error("template `{name}`")]
    Package {
        name: String,
        #[source]
        source: NpmError,
    },
}

/// The agent needs a terminal and none was given (see [`Template::launch_argv`]).
#[derive(Debug, thiserror::Error)]
#[error("{agent} is interactive and this is not a terminal; run it from a terminal, or give it arguments that work without one{}", .example.as_ref().map(|e| format!(", e.g. `moat run {} PATH -- {e}`", .agent)).unwrap_or_default())]
pub struct NeedsTerminal {
    /// The template.
    pub agent: String,
    /// Its batch example.
    pub example: Option<String>,
}

struct Builtin {
    name: &'static str,
    toml: &'static str,
    setup: Option<&'static str>,
    prepare: Option<&'static str>,
}

macro_rules! builtin {
    ($name:literal) => {
        Builtin {
            name: $name,
            toml: include_str!(concat!("../recipes/templates/", $name, "/template.toml")),
            setup: None,
            prepare: None,
        }
    };
    ($name:literal, setup) => {
        Builtin { setup: Some(include_str!(concat!("../recipes/templates/", $name, "/setup.sh"))), ..builtin!($name) }
    };
    ($name:literal, setup, prepare) => {
        Builtin {
            prepare: Some(include_str!(concat!("../recipes/templates/", $name, "/prepare.sh"))),
            ..builtin!($name, setup)
        }
    };
}

const BUILTINS: &[Builtin] = &[
    builtin!("shell"),
    builtin!("claude", setup, prepare),
    builtin!("codex", setup, prepare),
    builtin!("copilot", setup),
    builtin!("gemini", setup),
    builtin!("opencode", setup),
];

/// Names of the templates this build of Moat ships.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

impl Template {
    /// A template this build of Moat ships.
    pub fn builtin(name: &str) -> Result<Template, TemplateError> {
        let b = BUILTINS
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| TemplateError::Unknown { name: name.to_string(), known: builtin_names().join(", ") })?;
        Template::parse(b.name, b.toml, b.setup, b.prepare)
    }

    /// Parses and checks a template from its files.
    pub fn parse(
        name: &str,
        toml_text: &str,
        setup: Option<&str>,
        prepare: Option<&str>,
    ) -> Result<Template, TemplateError> {
        let spec: TemplateSpec =
            toml::from_str(toml_text).map_err(|source| TemplateError::Parse { name: name.to_string(), source })?;
        let invalid = |reason: String| TemplateError::Invalid { name: name.to_string(), reason };
        if spec.launch.argv.is_empty() || spec.launch.argv.iter().any(|a| a.is_empty() || a.contains('\0')) {
            return Err(invalid("launch.argv must be a non-empty list of non-empty words".into()));
        }
        if let Some(key) = spec.env.keys().find(|k| !is_env_name(k)) {
            return Err(invalid(format!("env key {key:?} is not a variable name")));
        }
        for pkg in &spec.npm {
            pkg.validate().map_err(|source| TemplateError::Package { name: name.to_string(), source })?;
        }
        Ok(Template {
            name: name.to_string(),
            spec,
            setup: setup.map(String::from),
            prepare: prepare.map(String::from),
        })
    }

    /// Whether the template adds a layer over the base.
    pub fn has_layer(&self) -> bool {
        !self.spec.npm.is_empty() || self.setup.is_some() || self.prepare.is_some()
    }

    /// What `moat run` starts: the agent in its unattended mode followed by
    /// `args` (or `args` alone where they replace the default), behind the
    /// template's prepare script. Without a terminal the agent must be given
    /// arguments that make it run without one.
    pub fn launch_argv(&self, args: &[String], terminal: bool) -> Result<Vec<String>, NeedsTerminal> {
        let launch = &self.spec.launch;
        if launch.replace_with_args && !args.is_empty() {
            return Ok(args.to_vec());
        }
        let batch = args.iter().any(|a| launch.batch.iter().any(|b| b == a));
        if !terminal && !batch && !launch.replace_with_args {
            return Err(NeedsTerminal { agent: self.name.clone(), example: launch.batch_example.clone() });
        }
        let prepare = self.prepare.is_some().then(|| PREPARE_PATH.to_string());
        let (program, flags) = launch.argv.split_first().expect("parse() refuses an empty argv");
        let (sub, rest) = match args.split_first() {
            Some((first, rest)) if launch.flags_after.contains(first) => (Some(first), rest),
            _ => (None, args),
        };
        Ok(prepare
            .into_iter()
            .chain([program.clone()])
            .chain(sub.cloned())
            .chain(flags.iter().cloned())
            .chain(rest.iter().cloned())
            .collect())
    }
}

fn is_env_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_template_parses_and_names_an_unattended_launch() {
        for name in builtin_names() {
            let t = Template::builtin(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!t.spec.description.is_empty(), "{name}");
            if name != "shell" {
                assert!(t.has_layer(), "{name} installs its agent");
                assert!(t.spec.launch.argv.iter().any(|a| a.starts_with("--")), "{name}: no unattended flag");
                assert!(!t.spec.credentials.services.is_empty(), "{name}: no credentials");
                assert!(t.spec.launch.batch_example.is_some(), "{name}: no batch example");
            }
        }
        assert!(!Template::builtin("shell").unwrap().has_layer());
        assert!(matches!(Template::builtin("kiro"), Err(TemplateError::Unknown { .. })));
    }

    #[test]
    fn launch_puts_the_unattended_flag_first_and_needs_a_terminal_unless_batch() {
        let claude = Template::builtin("claude").unwrap();
        let argv = claude.launch_argv(&[], true).unwrap();
        assert_eq!(argv, [PREPARE_PATH, "claude", "--dangerously-skip-permissions"]);
        let err = claude.launch_argv(&[], false).unwrap_err();
        assert!(err.to_string().contains("moat run claude PATH -- -p"), "{err}");
        assert!(claude.launch_argv(&["--model".into(), "opus".into()], false).is_err());
        let batch = claude.launch_argv(&["-p".into(), "hi".into()], false).unwrap();
        assert_eq!(batch[1..], ["claude", "--dangerously-skip-permissions", "-p", "hi"]);

        let opencode = Template::builtin("opencode").unwrap();
        let run = opencode.launch_argv(&["run".into(), "hi".into()], false).unwrap();
        assert_eq!(run, ["opencode", "run", "--auto", "hi"], "the flag follows the subcommand");
        assert_eq!(opencode.launch_argv(&[], true).unwrap(), ["opencode", "--auto"]);

        let shell = Template::builtin("shell").unwrap();
        assert_eq!(shell.launch_argv(&[], false).unwrap(), ["bash", "-l"]);
        assert_eq!(shell.launch_argv(&["true".into()], false).unwrap(), ["true"]);
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let launch = "[launch]\nargv = [\"x\"]\n";
        assert!(Template::parse("t", &format!("description = \"d\"\n{launch}"), None, None).is_ok());
        for (toml_text, what) in [
            ("description = \"d\"\n[launch]\nargv = []\n", "argv"),
            (&*format!("description = \"d\"\nsurprise = 1\n{launch}"), "unknown field"),
            (&*format!("description = \"d\"\n{launch}[env]\n\"A B\" = \"1\"\n"), "not a variable"),
        ] {
            let err = Template::parse("t", toml_text, None, None).unwrap_err();
            let chain = format!("{err} {:?}", std::error::Error::source(&err).map(ToString::to_string));
            assert!(chain.contains(what), "{chain}");
        }
    }
}
