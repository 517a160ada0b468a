//! What the guest sees when the proxy refuses: a 403 page that says what was
//! denied, by which rule, and what to type to allow it; 400 and 502 with a
//! short reason; a TLS alert when the refusal comes after the tunnel opened.

use crate::policy::{Decision, Origin, Reason, Request};

use super::target::HostPort;

/// A fatal TLS `access_denied` alert, sent in place of a ServerHello.
pub(crate) const TLS_ACCESS_DENIED: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

/// The body of the 403 page.
pub(crate) fn denial_text(req: &Request<'_>, decision: &Decision) -> String {
    let mut text = format!(
        "Moat blocked this connection.\n\n  host:    {}\n  sandbox: {}\n  reason:  {decision}\n",
        HostPort(req.host, req.port),
        req.sandbox
    );
    if let Some(remedy) = decision.remedy(req) {
        text.push_str("\nTo allow it for this sandbox only, run on the host:\n");
        for command in remedy.commands(true) {
            text.push_str(&format!("    {command}\n"));
        }
        text.push_str("To allow it for every sandbox:\n");
        for command in remedy.commands(false) {
            text.push_str(&format!("    {command}\n"));
        }
    }
    text
}

/// A complete `403 Forbidden` response for a request a request rule denied.
pub(crate) fn request_forbidden(req: &Request<'_>, method: &str, path: &str, decision: &Decision) -> Vec<u8> {
    let mut text = format!(
        "Moat blocked this request.\n\n  request: {method} {}{path}\n  sandbox: {}\n  reason:  {decision}\n",
        HostPort(req.host, req.port),
        req.sandbox
    );
    match &decision.reason {
        Reason::Rule(entry) if entry.origin == Origin::User => {
            text.push_str(&format!("\nTo stop denying it, remove the rule on the host:\n    moat policy rm {}\n", entry.rule));
        }
        Reason::NoRequestRule => text.push_str(
            "\nTo allow it, add a rule on the host, e.g.:\n    moat policy allow request METHOD HOST/PATH [--sandbox NAME]\n",
        ),
        _ => {}
    }
    response(403, "Forbidden", &text)
}

/// A complete `403 Forbidden` response for a policy denial.
pub(crate) fn forbidden(req: &Request<'_>, decision: &Decision) -> Vec<u8> {
    response(403, "Forbidden", &denial_text(req, decision))
}

/// A complete `403 Forbidden` response for a refusal that is not a policy
/// decision (e.g. domain fronting inside a tunnel).
pub(crate) fn refused(why: &str) -> Vec<u8> {
    response(403, "Forbidden", &format!("Moat refused this connection: {why}.\n"))
}

/// A complete `400 Bad Request` response.
pub(crate) fn bad_request(why: &str) -> Vec<u8> {
    response(400, "Bad Request", &format!("Moat refused a malformed request: {why}.\n"))
}

/// A complete `405 Method Not Allowed` response.
pub(crate) fn method_not_allowed(why: &str) -> Vec<u8> {
    response(405, "Method Not Allowed", &format!("Moat refused this request: {why}.\n"))
}

/// A complete `502 Bad Gateway` response.
pub(crate) fn bad_gateway(why: &str) -> Vec<u8> {
    response(502, "Bad Gateway", &format!("Moat could not complete the request: {why}.\n"))
}

/// A complete `503 Service Unavailable` response: the sandbox has `max` connections open.
pub(crate) fn too_many_connections(max: usize) -> Vec<u8> {
    let why = format!("this sandbox already has {max} connections open through Moat; close some and retry");
    response(503, "Service Unavailable", &format!("Moat refused this connection: {why}.\n"))
}

fn response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, Preset, Rule};

    #[test]
    fn the_403_page_names_host_rule_and_commands() {
        let rules: Vec<Rule> = vec!["deny network evil.example.test".parse().expect("rule")];
        let policy = Policy::new(Preset::Balanced, &rules);
        let req = Request::new("web", "evil.example.test", 443);
        let text = denial_text(&req, &policy.decide(&req));
        assert!(text.contains("evil.example.test:443"), "{text}");
        assert!(text.contains("rule 'deny network evil.example.test'"), "{text}");
        assert!(text.contains("moat policy rm deny network evil.example.test"), "{text}");
        assert!(text.contains("moat policy allow network evil.example.test --sandbox web"), "{text}");
    }
}
