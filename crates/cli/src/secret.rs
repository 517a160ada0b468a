//! `moat secret …`: the credential vault from the command line.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use moat_sandbox_core::credentials::open_vault;
use moat_sandbox_core::paths::Home;
use moat_secrets::catalog::CustomService;
use moat_secrets::{Scope, Secret, Source, ValueSource};

use crate::args::SecretCommand;

pub fn run(home: &Home, cmd: SecretCommand) -> Result<i32> {
    home.ensure_private()?;
    let vault = open_vault(home)?;
    match cmd {
        SecretCommand::Set { global, token, command, ttl, target } => {
            let (scope, service) = scope_and_service(global, &target)?;
            let source = match (token, command) {
                (Some(t), _) => ValueSource::Literal(Secret::new(t)),
                (None, Some(cmd)) => ValueSource::Command { cmd, ttl: parse_ttl(&ttl)? },
                (None, None) => {
                    let mut value = String::new();
                    std::io::stdin().read_to_string(&mut value).context("reading the value from stdin")?;
                    let value = value.trim().to_string();
                    if value.is_empty() {
                        bail!("no value on stdin; pipe it in, or use -t TOKEN or --command CMD");
                    }
                    ValueSource::Literal(Secret::new(value))
                }
            };
            vault.set(&scope, &service, source)?;
            println!("stored {service} ({})", scope_name(&scope));
        }
        SecretCommand::Rm { global, target } => {
            let (scope, service) = scope_and_service(global, &target)?;
            if !vault.rm(&scope, &service)? {
                bail!("no {service} credential for {}; see `moat secret ls`", scope_name(&scope));
            }
            println!("removed {service} ({})", scope_name(&scope));
        }
        SecretCommand::SetCustom { name, host, header } => {
            let Some((header_name, template)) = header.split_once(':') else {
                bail!("--header must be `Name: template`, e.g. `X-Api-Key: {{}}`");
            };
            let (header_name, template) = (header_name.trim(), template.trim());
            if !template.contains("{}") {
                bail!("the header template must contain {{}} where the credential goes");
            }
            let hosts: Vec<String> =
                host.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
            if hosts.is_empty() || hosts.iter().any(|h| h.contains('*') || h.contains('/') || h.contains(':')) {
                bail!("--host takes exact host names, comma-separated (no wildcards, ports or paths)");
            }
            vault.add_custom_service(CustomService {
                id: name.clone(),
                hosts,
                header: header_name.to_string(),
                template: template.to_string(),
            })?;
            println!("defined {name}; store its value with `moat secret set -g {name}` (or `SANDBOX {name}`)");
        }
        SecretCommand::Ls { json } => {
            let entries = vault.list()?;
            if json {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "service": e.service,
                            "scope": scope_name(&e.scope),
                            "source": source_name(&e.source),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("vault key: {}\n{:<12} {:<20} SOURCE", vault.key_location(), "SERVICE", "SCOPE");
                for e in &entries {
                    println!("{:<12} {:<20} {}", e.service, scope_name(&e.scope), source_name(&e.source));
                }
            }
        }
    }
    Ok(0)
}

fn scope_and_service(global: bool, target: &[String]) -> Result<(Scope, String)> {
    match (global, target) {
        (true, [service]) => Ok((Scope::Global, service.clone())),
        (false, [sandbox, service]) => Ok((Scope::Sandbox(sandbox.clone()), service.clone())),
        (true, _) => bail!("with -g, give only the service: `moat secret set -g SERVICE`"),
        (false, _) => bail!("give a sandbox and a service (`SANDBOX SERVICE`), or -g and a service"),
    }
}

fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Global => "global".into(),
        Scope::Sandbox(s) => format!("sandbox {s}"),
    }
}

fn source_name(source: &Source) -> String {
    match source {
        Source::Literal => "value".into(),
        Source::Command { cmd, ttl } => format!("command `{cmd}` (ttl {}s)", ttl.as_secs()),
    }
}

/// `90`, `30s`, `15m`, `2h` → a duration.
fn parse_ttl(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("invalid --ttl {s:?}: use e.g. 30s, 15m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid --ttl {s:?}: use e.g. 30s, 15m, 1h"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("5d").is_err());
    }
}
