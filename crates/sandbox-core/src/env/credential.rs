//! Which values look like credentials, so they go to the vault and not into a
//! sandbox's environment.
//!
//! The value is judged, not the name: `FOO_TOKEN=abc` is fine, and a value of
//! a credential's shape is refused whatever its name. A value is split into
//! words (runs of `[A-Za-z0-9_-]`), so a token inside a URL or after `Bearer `
//! counts too. Shapes: every token format of the vault's catalog
//! (`moat_secrets::catalog::SERVICES`), then well-known ones it lacks (the
//! [`WORD_SHAPES`] table, and private keys in PEM armour). A catalog format
//! without a prefix (Mistral's 32 letters and digits, Nebius's) is as plain as
//! a commit hash, so it counts only when the variable's name mentions its
//! service (`MY_MISTRAL_KEY`).

use moat_secrets::catalog::{self, Service};

/// What a refused value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// Its kind, with an article: "an Anthropic API key".
    pub what: &'static str,
    /// The built-in service whose placeholder the vault can give instead.
    pub service: Option<&'static str>,
}

impl Credential {
    /// What the user should do with it instead.
    pub fn advice(&self) -> String {
        match self.service {
            Some(id) => format!(
                "store it with `moat secret set -g {id}` and the sandbox gets a placeholder the proxy swaps for it"
            ),
            None => "Moat keeps credentials out of sandboxes: leave it on the host, or, for a service that takes it \
                     in an HTTP header, define it with `moat secret set-custom NAME --host HOST` and store it with \
                     `moat secret set -g NAME` (the proxy adds it)"
                .to_string(),
        }
    }
}

/// A credential shape a word of a value may have.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Its kind, with an article.
    pub what: &'static str,
    /// Whether one word has it.
    pub matches: fn(&str) -> bool,
}

/// Credential shapes the catalog doesn't have, tried on each word in order.
pub static WORD_SHAPES: &[Shape] = &[
    Shape { what: "an AWS access key id", matches: aws_access_key_id },
    Shape { what: "a Slack token", matches: slack_token },
    Shape { what: "a Stripe secret key", matches: stripe_secret_key },
    Shape { what: "an API key (`sk-…`)", matches: sk_key },
];

/// What `value` looks like, if it looks like a credential; `name` is the
/// variable's name (it only matters for prefix-less catalog formats).
pub fn looks_like_credential(name: &str, value: &str) -> Option<Credential> {
    if pem_private_key(value) {
        return Some(Credential { what: "a private key", service: None });
    }
    let words = || value.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    for service in catalog::SERVICES {
        if words().any(|w| has_service_format(service, name, w)) {
            return Some(Credential { what: service_kind(service.id), service: Some(service.id) });
        }
    }
    let shape = WORD_SHAPES.iter().find(|shape| words().any(shape.matches))?;
    Some(Credential { what: shape.what, service: None })
}

/// Whether `word` has one of `service`'s token formats. A format without a
/// prefix counts only when `name` mentions the service.
fn has_service_format(service: &Service, name: &str, word: &str) -> bool {
    let named = name.to_ascii_lowercase().contains(service.id);
    service.formats.iter().any(|f| (named || !f.prefix.is_empty()) && f.matches(word))
}

/// How error messages call each built-in service's credential.
fn service_kind(id: &str) -> &'static str {
    match id {
        "anthropic" => "an Anthropic API key",
        "openai" => "an OpenAI API key",
        "github" => "a GitHub token",
        "google" => "a Google API key",
        "groq" => "a Groq API key",
        "mistral" => "a Mistral API key",
        "nebius" => "a Nebius API key",
        "xai" => "an xAI API key",
        _ => "a credential Moat's vault manages",
    }
}

/// `-----BEGIN … PRIVATE KEY-----` anywhere (RSA, EC, OPENSSH, ENCRYPTED, PKCS#8).
fn pem_private_key(value: &str) -> bool {
    value.match_indices("-----BEGIN ").any(|(i, begin)| {
        let header = &value[i + begin.len()..];
        header.find("-----").is_some_and(|end| header[..end].ends_with("PRIVATE KEY"))
    })
}

/// `AKIA` (long-term) or `ASIA` (temporary), then 16 capitals or digits.
fn aws_access_key_id(word: &str) -> bool {
    let body = word.strip_prefix("AKIA").or_else(|| word.strip_prefix("ASIA"));
    body.is_some_and(|b| b.len() == 16 && b.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
}

/// `xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`, then at least 10 more with a digit.
fn slack_token(word: &str) -> bool {
    let body = ["xoxa-", "xoxb-", "xoxp-", "xoxr-"].iter().find_map(|p| word.strip_prefix(p));
    body.is_some_and(|b| b.len() >= 10 && b.bytes().any(|c| c.is_ascii_digit()))
}

/// `sk_live_` (secret) or `rk_live_` (restricted), then at least 16 letters or digits.
fn stripe_secret_key(word: &str) -> bool {
    let body = word.strip_prefix("sk_live_").or_else(|| word.strip_prefix("rk_live_"));
    body.is_some_and(|b| b.len() >= 16 && b.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// `sk-` and at least 20 more, with a random-looking run in them (16 letters
/// and digits, one a digit): DeepSeek's, OpenRouter's `sk-or-v1-…` and the
/// like, but not `sk-learn-tutorial-2024`.
fn sk_key(word: &str) -> bool {
    let Some(body) = word.strip_prefix("sk-") else { return false };
    body.len() >= 20
        && body
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|run| run.len() >= 16 && run.bytes().any(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use moat_secrets::catalog::TokenFormat;

    use super::*;

    /// A token of `format`'s placeholder length, cycling through its alphabet.
    fn token(format: &TokenFormat) -> String {
        let chars = format.alphabet.chars();
        let body: String = (0..format.len).map(|i| chars[(i * 7 + 3) % chars.len()] as char).collect();
        format!("{}{body}", format.prefix)
    }

    #[test]
    fn every_catalog_format_is_refused_with_its_service() {
        for service in catalog::SERVICES {
            for format in service.formats {
                // Prefix-less formats need the name to mention the service.
                let name = format!("MY_{}_VALUE", service.id.to_ascii_uppercase());
                let found = looks_like_credential(&name, &token(format));
                assert_eq!(found.map(|c| c.service), Some(Some(service.id)), "{} {format:?}", service.id);
                assert_ne!(service_kind(service.id), service_kind("?"), "{} has a name", service.id);
            }
        }
    }

    #[test]
    fn well_known_shapes_are_refused_and_near_misses_are_not() {
        let anthropic = format!("sk-ant-api03-{}", "Zr9_".repeat(24));
        let in_url = format!("https://x-access-token:ghp_{}@github.com/o/r.git", "a1B2".repeat(9));
        let bearer = format!("Bearer gsk_{}", "Q7x2".repeat(13));
        let google_short = format!("AIza{}", "x".repeat(34));
        let refused = [
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
                "a private key",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "a private key"),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "a private key"),
            ("AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
            ("ASIAY34FZKBOKMUTVV7A", "an AWS access key id"),
            ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "a Slack token"),
            ("xoxp-1234567890-abc", "a Slack token"),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe secret key"),
            ("rk_live_51H8zQ2eZvKYlo2C0aBcDeFgHi", "a Stripe secret key"),
            ("sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "an API key (`sk-…`)"),
            ("sk-a1b2c3d4e5f6a7b8c9d0e1f2", "an API key (`sk-…`)"),
            (anthropic.as_str(), "an Anthropic API key"),
            (in_url.as_str(), "a GitHub token"),
            (bearer.as_str(), "a Groq API key"),
        ];
        for (value, what) in refused {
            assert_eq!(looks_like_credential("FOO", value).map(|c| c.what), Some(what), "{value:?}");
        }
        let accepted = [
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----",
            "AKIAIOSFODNN7EXAMPL",
            "akiaiosfodnn7example",
            "AKIAIOSFODNN7EXAMPLE1",
            "xoxo-hugs-and-kisses-123",
            "xoxb-123",
            "sk_live_short",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "sk-a1b2c3d4e5f6a7b8c9d",
            "sk-learn-tutorial-examples-2024",
            "sk-supercalifragilistic",
            "ghp_short",
            google_short.as_str(),
            "abc",
            "production",
            "https://example.com/path?q=1",
            "",
        ];
        for value in accepted {
            assert_eq!(looks_like_credential("FOO_TOKEN", value), None, "{value:?}");
        }
    }

    #[test]
    fn prefix_less_formats_count_only_when_the_name_says_whose() {
        let commit = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let alnum32 = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6";
        assert_eq!(looks_like_credential("GIT_SHA", commit), None);
        assert_eq!(looks_like_credential("CACHE_KEY", commit), None);
        assert_eq!(looks_like_credential("BUILD_ID", alnum32), None);
        let mistral = looks_like_credential("MY_MISTRAL_KEY", alnum32).unwrap();
        assert_eq!((mistral.what, mistral.service), ("a Mistral API key", Some("mistral")));
        assert_eq!(looks_like_credential("nebius_token", commit).and_then(|c| c.service), Some("nebius"));
    }

    #[test]
    fn advice_points_at_the_vault() {
        let key = format!("xai-{}", &"k3Y".repeat(27)[..80]);
        let c = looks_like_credential("X", &key).unwrap();
        assert_eq!(
            c.advice(),
            "store it with `moat secret set -g xai` and the sandbox gets a placeholder the proxy swaps for it"
        );
        let aws = looks_like_credential("X", "AKIAIOSFODNN7EXAMPLE").unwrap();
        assert!(aws.advice().contains("moat secret set-custom"), "{}", aws.advice());
    }
}
