//! Presets: the base layer of rules chosen when Moat is first used.
//!
//! User rules are added on top of a preset; deny still beats allow, so a user
//! deny carves holes in `allow-all` and a user allow extends `balanced`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::rule::{Action, Resource, Rule, Scope};

const BALANCED: &str = include_str!("presets/balanced.txt");

/// A named base policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// `allow network **`: everything except special addresses.
    AllowAll,
    /// Default deny plus AI APIs, package registries, code hosting, container
    /// registries and OS package repositories (see `presets/balanced.txt`).
    #[default]
    Balanced,
    /// Nothing until the user allows it.
    DenyAll,
}

impl Preset {
    /// Every preset, in the order a picker should show them.
    pub const ALL: [Preset; 3] = [Preset::AllowAll, Preset::Balanced, Preset::DenyAll];

    /// The preset's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Preset::AllowAll => "allow-all",
            Preset::Balanced => "balanced",
            Preset::DenyAll => "deny-all",
        }
    }

    /// The preset's rules (all global allows), each with its category.
    pub fn rules(self) -> Vec<(Rule, &'static str)> {
        match self {
            Preset::AllowAll => vec![(allow("**"), "everything")],
            Preset::Balanced => parse_list(BALANCED),
            Preset::DenyAll => Vec::new(),
        }
    }
}

fn allow(resource: &str) -> Rule {
    let resource: Resource = resource.parse().unwrap_or_else(|e| panic!("{e}"));
    Rule::new(Action::Allow, Scope::Global, resource)
}

/// Parses the preset file format; an invalid line is a bug caught by tests.
fn parse_list(text: &'static str) -> Vec<(Rule, &'static str)> {
    let mut category = "uncategorized";
    let mut rules = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            category = name;
        } else if !line.is_empty() {
            rules.push((allow(line), category));
        }
    }
    rules
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A preset name was not recognized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset {0:?}: choose allow-all, balanced or deny-all")]
pub struct PresetError(pub String);

impl FromStr for Preset {
    type Err = PresetError;

    fn from_str(s: &str) -> Result<Preset, PresetError> {
        Preset::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| PresetError(s.to_string()))
    }
}
