//! The one rule for a sandbox's variables: names, values, and the set's size.

use moat_secrets::catalog;

use super::credential::looks_like_credential;
use super::Env;

/// Most variables a sandbox may have.
pub const MAX_VARS: usize = 256;

/// Most bytes the whole set may take as it travels: JSON, in every exec
/// request, whose frame (`moat_proto::exec::MAX_FRAME`, 32 KiB) also carries
/// the command line and the credential placeholders.
pub const MAX_ENCODED: usize = 16 * 1024;

/// Longest variable name an error message repeats (a mistyped line may hold anything).
const ECHOED_NAME: usize = 40;

/// Why a variable, or a set of them, was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Not a shell identifier.
    #[error(
        "{} is not a valid variable name: use letters, digits and `_`, not starting with a digit",
        echo(.0)
    )]
    BadName(String),
    /// Moat sets this variable itself.
    #[error("{name} is set by Moat: {why}")]
    Reserved { name: String, why: String },
    /// The value has the shape of a credential.
    #[error("{name} looks like {what}; {advice}")]
    Credential { name: String, what: &'static str, advice: String },
    /// A NUL byte can't be in a process's environment.
    #[error("the value of {0} contains a NUL byte")]
    Nul(String),
    /// More variables than [`MAX_VARS`].
    #[error("{0} variables are more than a sandbox may have ({MAX_VARS})")]
    TooMany(usize),
    /// The set is over [`MAX_ENCODED`].
    #[error(
        "the variables take {0} bytes, more than the {MAX_ENCODED} a sandbox may have (they travel with every \
         command); put large values in a file in the workspace instead"
    )]
    TooLarge(usize),
    /// `-e KEY` names a variable this process doesn't have.
    #[error("-e {0}: {0} is not set here; set it first or give its value with `-e {0}=VALUE`")]
    Unset(String),
    /// `-e KEY` names a variable whose value here is not UTF-8.
    #[error("-e {0}: the value of {0} here is not UTF-8")]
    NotUnicode(String),
}

/// A name as an error message may show it: quoted, escaped, and cut short.
fn echo(name: &str) -> String {
    if name.chars().count() <= ECHOED_NAME {
        format!("{name:?}")
    } else {
        let cut: String = name.chars().take(ECHOED_NAME).collect();
        format!("{cut:?}…")
    }
}

/// Whether `name` is a shell identifier: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a name alone (before its value is known, e.g. `-e KEY`).
pub fn check_name(name: &str) -> Result<(), EnvError> {
    if !is_identifier(name) {
        return Err(EnvError::BadName(name.to_string()));
    }
    if let Some(why) = reserved(name) {
        return Err(EnvError::Reserved { name: name.to_string(), why });
    }
    Ok(())
}

/// Checks one variable: a valid name Moat doesn't set, and a value without NUL
/// that doesn't look like a credential.
pub fn check_var(name: &str, value: &str) -> Result<(), EnvError> {
    check_name(name)?;
    if value.contains('\0') {
        return Err(EnvError::Nul(name.to_string()));
    }
    if let Some(c) = looks_like_credential(name, value) {
        return Err(EnvError::Credential { name: name.to_string(), what: c.what, advice: c.advice() });
    }
    Ok(())
}

/// Checks a whole set: each variable, their number and their size on the wire.
pub fn check(env: &Env) -> Result<(), EnvError> {
    if env.len() > MAX_VARS {
        return Err(EnvError::TooMany(env.len()));
    }
    for (name, value) in env {
        check_var(name, value)?;
    }
    let size = encoded_len(env);
    if size > MAX_ENCODED {
        return Err(EnvError::TooLarge(size));
    }
    Ok(())
}

/// Bytes the set takes in an exec request (`[["K","V"],…]`).
fn encoded_len(env: &Env) -> usize {
    let pairs: Vec<(&String, &String)> = env.iter().collect();
    serde_json::to_vec(&pairs).map_or(usize::MAX, |v| v.len())
}

/// Why Moat keeps `name` to itself, if it does. Proxy and CA variables count
/// in any case (`http_proxy` and `HTTP_PROXY` are both read); so do the
/// credential catalog's, which hold placeholders.
fn reserved(name: &str) -> Option<String> {
    let egress = moat_proto::egress::proxy_env(true);
    let proxy = egress.iter().map(|(k, _)| k.as_str()).chain(["ALL_PROXY"]).any(|k| k.eq_ignore_ascii_case(name));
    if proxy {
        return Some(
            "the guest's traffic goes through Moat's proxy and trusts its CA; change what the sandbox may reach \
             with `moat policy`"
                .into(),
        );
    }
    let service = catalog::SERVICES.iter().find(|s| s.env_vars.iter().any(|v| v.eq_ignore_ascii_case(name)))?;
    Some(format!(
        "it holds a placeholder for the {id} credential; store the real one with `moat secret set -g {id}` (or \
         `moat secret set SANDBOX {id}`) and the proxy swaps it in",
        id = service.id
    ))
}

/// How one set of variables differs from another, by name only (an error
/// message shows it; values never).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// In both, with another value.
    pub changed: Vec<String>,
    /// Only in the new set.
    pub added: Vec<String>,
    /// Only in the old set.
    pub dropped: Vec<String>,
}

impl Changes {
    /// From `old` to `new`.
    pub fn between(old: &Env, new: &Env) -> Changes {
        let only = |a: &Env, b: &Env| a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
        Changes {
            changed: old.iter().filter(|(k, v)| new.get(*k).is_some_and(|n| n != *v)).map(|(k, _)| k.clone()).collect(),
            added: only(new, old),
            dropped: only(old, new),
        }
    }

    /// Whether the two sets are the same.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.dropped.is_empty()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts =
            [(&self.changed, "would change"), (&self.added, "would be added"), (&self.dropped, "would be dropped")];
        let said: Vec<String> =
            parts.iter().filter(|(n, _)| !n.is_empty()).map(|(n, what)| format!("{} {what}", n.join(", "))).collect();
        f.write_str(&said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn names_are_shell_identifiers() {
        for good in ["A", "_", "_x1", "FOO_TOKEN", "path", "a1_B2"] {
            assert!(check_name(good).is_ok(), "{good} refused");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "Ä", "A.B", "$A"] {
            assert!(matches!(check_name(bad), Err(EnvError::BadName(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn moat_s_own_variables_are_reserved_in_any_case() {
        for name in [
            "HTTP_PROXY",
            "https_proxy",
            "No_Proxy",
            "ALL_PROXY",
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
        ] {
            let err = check_name(name).unwrap_err();
            assert!(matches!(err, EnvError::Reserved { .. }), "{name}: {err}");
            assert!(err.to_string().contains("moat policy"), "{err}");
        }
        for s in catalog::SERVICES {
            for var in s.env_vars {
                let err = check_name(var).unwrap_err().to_string();
                assert!(err.contains(&format!("moat secret set -g {}", s.id)), "{var}: {err}");
            }
        }
        let err = check_name("ANTHROPIC_API_KEY").unwrap_err().to_string();
        assert!(err.starts_with("ANTHROPIC_API_KEY is set by Moat"), "{err}");
        assert!(check_name("HTTP_PROXY_PORT").is_ok() && check_name("MY_ANTHROPIC_API_KEY").is_ok());
    }

    #[test]
    fn values_without_nul_that_are_no_credential_pass() {
        assert!(check_var("FOO_TOKEN", "abc").is_ok(), "a secret-sounding name alone is fine");
        assert!(check_var("MULTI", "line one\nline two").is_ok());
        assert!(check_var("EMPTY", "").is_ok());
        assert!(matches!(check_var("A", "x\0y"), Err(EnvError::Nul(n)) if n == "A"));
        let key = format!("sk-ant-api03-{}", "Ab9_".repeat(24));
        let err = check_var("FOO", &key).unwrap_err().to_string();
        assert!(err.starts_with("FOO looks like an Anthropic API key; store it with `moat secret set -g anthropic`"));
        assert!(!err.contains(&key), "the message never repeats the value: {err}");
    }

    #[test]
    fn the_set_is_bounded_in_number_and_bytes() {
        let many: Env = (0..=MAX_VARS).map(|i| (format!("V{i}"), String::new())).collect();
        assert!(matches!(check(&many), Err(EnvError::TooMany(n)) if n == MAX_VARS + 1));
        let most: Env = (0..MAX_VARS).map(|i| (format!("V{i}"), "x".into())).collect();
        assert!(check(&most).is_ok());

        // The bound is on the wire, where escaping counts: 3,000 control bytes take 18,000.
        let escaped = env(&[("CTRL", &"\x01".repeat(3000))]);
        assert!(matches!(check(&escaped), Err(EnvError::TooLarge(n)) if n > MAX_ENCODED));
        let fits = env(&[("BIG", &"x".repeat(MAX_ENCODED - 20))]);
        assert!(check(&fits).is_ok(), "{}", encoded_len(&fits));
        let over = env(&[("BIG", &"x".repeat(MAX_ENCODED))]);
        assert!(matches!(check(&over), Err(EnvError::TooLarge(_))));
        let bad = env(&[("OK", "1"), ("HTTPS_PROXY", "http://elsewhere")]);
        assert!(matches!(check(&bad), Err(EnvError::Reserved { .. })));
    }

    #[test]
    fn changes_are_said_by_name_only() {
        let old = env(&[("A", "1"), ("B", "secret-ish"), ("C", "3")]);
        let new = env(&[("A", "1"), ("B", "other"), ("D", "4")]);
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.to_string(), "B would change; D would be added; C would be dropped");
        assert!(!changes.to_string().contains("secret-ish"));
        assert!(Changes::between(&old, &old).is_empty());
        assert_eq!(Changes::between(&Env::new(), &env(&[("X", "")])).to_string(), "X would be added");
    }

    #[test]
    fn bad_names_are_echoed_short() {
        let long = format!("Bearer {}", "x".repeat(100));
        let msg = EnvError::BadName(long).to_string();
        assert!(msg.contains("…") && !msg.contains(&"x".repeat(50)), "{msg}");
    }
}
