//! The services catalog: hosts, auth headers, env vars and token formats of
//! the AI providers Moat knows, plus user-defined custom services.

use serde::{Deserialize, Serialize};

/// Characters a token body may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Za-z0-9_-]`
    Base64Url,
}

impl Alphabet {
    /// The characters, in a fixed order (placeholders index into it).
    pub fn chars(self) -> &'static [u8] {
        match self {
            Alphabet::Alnum => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Alphabet::Base64Url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
        }
    }

    /// Whether `c` belongs to the alphabet.
    pub fn contains(self, c: u8) -> bool {
        self.chars().contains(&c)
    }
}

/// The shape of a token: prefix, then `len` characters of `alphabet`.
/// `min_len..=max_len` is what real tokens are accepted with; `len` is what
/// placeholders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenFormat {
    pub prefix: &'static str,
    pub alphabet: Alphabet,
    pub len: usize,
    pub min_len: usize,
    pub max_len: usize,
}

impl TokenFormat {
    const fn exact(prefix: &'static str, alphabet: Alphabet, len: usize) -> Self {
        Self { prefix, alphabet, len, min_len: len, max_len: len }
    }

    const fn range(prefix: &'static str, alphabet: Alphabet, len: usize, min: usize, max: usize) -> Self {
        Self { prefix, alphabet, len, min_len: min, max_len: max }
    }

    /// Whether `value` has this shape.
    pub fn matches(&self, value: &str) -> bool {
        let Some(body) = value.strip_prefix(self.prefix) else {
            return false;
        };
        (self.min_len..=self.max_len).contains(&body.len()) && body.bytes().all(|c| self.alphabet.contains(c))
    }
}

/// One authentication header: its name and value template (`{}` is the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderTemplate {
    pub name: &'static str,
    pub template: &'static str,
}

/// A built-in service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub id: &'static str,
    pub hosts: &'static [&'static str],
    /// Its authentication headers: the only ones the proxy puts its credential in.
    pub headers: &'static [HeaderTemplate],
    pub env_vars: &'static [&'static str],
    /// Accepted token formats; the first one is used for placeholders.
    pub formats: &'static [TokenFormat],
}

const fn h(name: &'static str, template: &'static str) -> HeaderTemplate {
    HeaderTemplate { name, template }
}

use Alphabet::{Alnum, Base64Url};

/// Every built-in service.
pub static SERVICES: &[Service] = &[
    Service {
        id: "anthropic",
        hosts: &["api.anthropic.com"],
        // API keys go in x-api-key; OAuth tokens (`sk-ant-oat01-`) as a bearer token.
        headers: &[h("x-api-key", "{}"), h("Authorization", "Bearer {}")],
        env_vars: &["ANTHROPIC_API_KEY"],
        formats: &[
            TokenFormat::range("sk-ant-api03-", Base64Url, 95, 80, 120),
            TokenFormat::range("sk-ant-oat01-", Base64Url, 95, 80, 120),
        ],
    },
    Service {
        id: "openai",
        hosts: &["api.openai.com"],
        headers: &[h("Authorization", "Bearer {}")],
        // `codex exec` authenticates with CODEX_API_KEY only.
        env_vars: &["OPENAI_API_KEY", "CODEX_API_KEY"],
        formats: &[
            TokenFormat::range("sk-proj-", Base64Url, 156, 40, 200),
            TokenFormat::range("sk-svcacct-", Base64Url, 156, 40, 200),
            TokenFormat::range("sk-", Alnum, 48, 32, 64),
        ],
    },
    Service {
        id: "github",
        hosts: &[
            "api.github.com",
            "github.com",
            "copilot-proxy.githubusercontent.com",
            "api.githubcopilot.com",
            "api.individual.githubcopilot.com",
        ],
        headers: &[h("Authorization", "token {}")],
        env_vars: &["GH_TOKEN", "GITHUB_TOKEN", "COPILOT_GITHUB_TOKEN"],
        // Placeholders look like fine-grained tokens: Copilot CLI refuses a
        // classic `ghp_` one before sending anything.
        formats: &[
            TokenFormat::exact("github_pat_", Alnum, 82),
            TokenFormat::exact("gho_", Alnum, 36),
            TokenFormat::exact("ghp_", Alnum, 36),
            TokenFormat::exact("ghu_", Alnum, 36),
            TokenFormat::exact("ghs_", Alnum, 36),
            TokenFormat::exact("ghr_", Alnum, 36),
            TokenFormat::range("github_pat_", Base64Url, 82, 60, 100),
        ],
    },
    Service {
        id: "google",
        hosts: &["generativelanguage.googleapis.com"],
        headers: &[h("x-goog-api-key", "{}")],
        env_vars: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        formats: &[TokenFormat::exact("AIza", Base64Url, 35)],
    },
    Service {
        id: "groq",
        hosts: &["api.groq.com"],
        headers: &[h("Authorization", "Bearer {}")],
        env_vars: &["GROQ_API_KEY"],
        formats: &[TokenFormat::exact("gsk_", Alnum, 52)],
    },
    Service {
        id: "mistral",
        hosts: &["api.mistral.ai", "codestral.mistral.ai"],
        headers: &[h("Authorization", "Bearer {}")],
        env_vars: &["MISTRAL_API_KEY"],
        formats: &[TokenFormat::exact("", Alnum, 32)],
    },
    Service {
        id: "nebius",
        hosts: &["api.studio.nebius.com", "api.studio.nebius.ai"],
        headers: &[h("Authorization", "Bearer {}")],
        env_vars: &["NEBIUS_API_KEY"],
        formats: &[TokenFormat::range("", Base64Url, 64, 32, 1024)],
    },
    Service {
        id: "xai",
        hosts: &["api.x.ai"],
        headers: &[h("Authorization", "Bearer {}")],
        env_vars: &["XAI_API_KEY"],
        formats: &[TokenFormat::exact("xai-", Alnum, 80)],
    },
];

/// The format of placeholders for custom services (which have none of their own).
pub const CUSTOM_FORMAT: TokenFormat = TokenFormat::exact("moat-ph-", Alnum, 40);

impl Service {
    /// Whether `name` is one of the service's authentication headers (case-insensitive).
    pub fn is_auth_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
    }
}

/// Looks up a built-in service by id.
pub fn service(id: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.id == id)
}

/// Ids of every built-in service, for error messages.
pub fn known_ids() -> Vec<&'static str> {
    SERVICES.iter().map(|s| s.id).collect()
}

/// A user-defined service: hosts and one header template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomService {
    pub id: String,
    pub hosts: Vec<String>,
    pub header: String,
    /// Value template; `{}` is replaced by the token.
    pub template: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_hosts_headers_and_a_placeholder_format() {
        for s in SERVICES {
            assert!(!s.hosts.is_empty() && !s.headers.is_empty() && !s.formats.is_empty(), "{}", s.id);
            assert!(s.headers.iter().all(|h| h.template.contains("{}")), "{}", s.id);
            let f = s.formats[0];
            assert!((f.min_len..=f.max_len).contains(&f.len), "{}", s.id);
        }
    }

    #[test]
    fn formats_match_real_looking_tokens() {
        let gh = service("github").unwrap();
        let ghp = format!("ghp_{}", "a1B2".repeat(9));
        assert!(gh.formats.iter().any(|f| f.matches(&ghp)));
        assert!(!gh.formats.iter().any(|f| f.matches("ghp_short")));
        let g = service("google").unwrap();
        assert!(g.formats[0].matches(&format!("AIza{}", "x".repeat(35))));
    }
}
