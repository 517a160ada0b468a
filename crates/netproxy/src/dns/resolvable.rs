//! Which names the guest may resolve: those it could connect to on some port.

use crate::policy::{Action, CompiledPolicy, Decision, PortSet, Ports, Request, Resource};

/// Port 0 is never named by a rule (rules take 1 to 65535), so it stands for
/// every port no rule names.
const UNNAMED_PORT: u16 = 0;

/// Decides whether `sandbox` may resolve `host` (a host name, not an IP
/// literal): allowed if a connection to `host` would be allowed on at least
/// one port. Returns the first allowing decision, trying 443, 80, any port
/// no rule names, then each port an allow rule names; or, if none allows,
/// the decision for port 443 (which names the deny rule or the default).
///
/// Those ports cover every case: rules only distinguish 80 and 443 (the
/// default web ports), ports they name, and "any port", and a port that no
/// allow rule names is allowed only if the unnamed port is too, or it is 80
/// or 443.
pub fn resolvable(policy: &CompiledPolicy, sandbox: &str, host: &str) -> Decision {
    let first = policy.decide(&Request::new(sandbox, host, 443));
    if first.is_allowed() {
        return first;
    }
    let mut ports = vec![80, UNNAMED_PORT];
    ports.extend(policy.rules().iter().filter_map(|entry| match (&entry.rule.action, &entry.rule.resource) {
        (Action::Allow, Resource::Host { ports: Ports::One(port), .. }) if entry.rule.applies_to(sandbox) => {
            Some(*port)
        }
        _ => None,
    }));
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .filter(|&port| port != 443)
        .map(|port| policy.decide(&Request::new(sandbox, host, port)))
        .find(Decision::is_allowed)
        .unwrap_or(first)
}

/// Whether `sandbox` may resolve the host machine's name
/// ([`HOST_ALIAS`](crate::policy::HOST_ALIAS)): only through an allow rule
/// naming `localhost` itself (the proxy will refuse the loopback address for
/// anything less, `**` included), and only where no deny wins. `None` if not.
pub fn host_alias_resolvable(policy: &CompiledPolicy, sandbox: &str) -> Option<Decision> {
    policy.rules().iter().find_map(|entry| {
        let rule = &entry.rule;
        let names_localhost = matches!(&rule.resource, Resource::Host { pattern, .. } if pattern.is_localhost());
        if rule.action != Action::Allow || !names_localhost || !rule.applies_to(sandbox) {
            return None;
        }
        let port = match rule.port_set() {
            PortSet::One(p) => p,
            PortSet::Web => 80,
            PortSet::Any => 1,
        };
        let decision = policy.decide(&Request::new(sandbox, crate::policy::HOST_ALIAS, port));
        decision.is_allowed().then_some(decision)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Preset, Reason, Rule};

    fn policy(preset: Preset, rules: &[&str]) -> CompiledPolicy {
        let rules: Vec<Rule> = rules.iter().map(|r| r.parse().unwrap()).collect();
        CompiledPolicy::compile(preset, &rules)
    }

    fn allowed(p: &CompiledPolicy, sandbox: &str, host: &str) -> bool {
        resolvable(p, sandbox, host).is_allowed()
    }

    #[test]
    fn a_name_allowed_on_any_port_resolves() {
        let p = policy(
            Preset::DenyAll,
            &[
                "allow network web.example.com",
                "allow network db.example.com:5432",
                "allow network ssh.example.com:*",
                "allow network only-in-a.example.com:22 --sandbox a",
                "allow network **.wild.example.com",
            ],
        );
        for host in ["web.example.com", "db.example.com", "ssh.example.com", "x.y.wild.example.com"] {
            assert!(allowed(&p, "s", host), "{host}");
        }
        assert!(allowed(&p, "a", "only-in-a.example.com"));
        assert!(!allowed(&p, "b", "only-in-a.example.com"));
        assert!(!allowed(&p, "s", "other.example.com"));
        assert!(!allowed(&p, "s", "wild.example.com"));
    }

    #[test]
    fn denies_on_every_port_block_resolution() {
        let p = policy(
            Preset::AllowAll,
            &[
                "deny network blocked.example.com",
                "deny network web-denied.example.com:443",
                "deny network web-denied.example.com:80",
                "allow network api.blocked.example.com",
                "deny network **.blocked.example.com",
            ],
        );
        let d = resolvable(&p, "s", "blocked.example.com");
        assert!(!d.is_allowed());
        assert!(matches!(&d.reason, Reason::Rule(e) if e.rule.to_string() == "deny network blocked.example.com"));
        assert!(!allowed(&p, "s", "api.blocked.example.com"), "deny beats allow on every port");
        // Denied on the web ports only: `**` still allows the rest.
        assert!(allowed(&p, "s", "web-denied.example.com"));
        assert!(allowed(&p, "s", "anything.example.org"));
    }

    #[test]
    fn the_default_deny_is_reported() {
        let p = policy(Preset::Balanced, &[]);
        assert!(allowed(&p, "s", "api.anthropic.com"));
        let d = resolvable(&p, "s", "exfil.attacker.example");
        assert_eq!(d.reason, Reason::Default(Preset::Balanced));
    }
}
