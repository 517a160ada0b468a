//! The sandbox's own Docker engine: there on first use, for the agent user,
//! and exactly as policed as everything else in the guest — containers and
//! the engine's own pulls included.
//!
//! No registry or base image is reachable here, so the test builds a tiny
//! image inside the guest from its own `curl` and the libraries it links.

use crate::egress::Upstream;
use crate::harness::{moat, stderr};

/// Packs the guest's curl (with its libraries and the CA bundle) into an image.
const MAKE_IMAGE: &str = r#"set -e
d=$(mktemp -d)
mkdir -p "$d/etc/ssl/certs" "$d/tmp"
for f in /usr/bin/curl $(ldd /usr/bin/curl | grep -o '/[^ ]*'); do
    mkdir -p "$d$(dirname "$f")" && cp -L "$f" "$d$f"
done
cp /etc/ssl/certs/ca-certificates.crt "$d/etc/ssl/certs/"
tar -C "$d" -c . | docker import - moat-test/curl >/dev/null
rm -rf "$d"
docker images --format '{{.Repository}}'"#;

#[test]
fn containers_get_their_own_engine_and_no_other_way_out() {
    let Some(m) = moat() else { return };
    let up = Upstream::start();
    let port = up.port;
    std::fs::write(m.home().join("hosts"), "127.0.0.1 upstream.test denied.test\n").unwrap();
    m.ok(&["policy", "preset", "balanced"]);
    m.ok(&["policy", "allow", "network", &format!("upstream.test:{port}")]);
    let ws = m.workspace("dock");
    m.sandbox("dock", &ws, &[]);

    // The engine starts on the first connection, for the agent user (no sudo),
    // with the sandbox's proxy and its data on the state disk (overlay2).
    let info = m.sh("dock", "docker info --format '{{.HTTPProxy}} {{.Driver}} {{.DockerRootDir}}'");
    assert_eq!(info, "http://gateway.moat.internal:3128 overlay2 /var/lib/docker\n");
    assert_eq!(m.sh("dock", MAKE_IMAGE), "moat-test/curl\n");

    // Containers reach an allowed host through the proxy their config names,
    // around it, and from a user-defined network: every path is policed.
    let url = format!("http://upstream.test:{port}");
    let run = |args: &str, path: &str| {
        m.sh("dock", &format!("docker run --rm {args} moat-test/curl /usr/bin/curl -sS {url}{path}"))
    };
    assert_eq!(run("", "/c-explicit"), "hello from upstream\n");
    assert_eq!(run("-e http_proxy= -e HTTP_PROXY=", "/c-around"), "hello from upstream\n");
    m.sh("dock", "docker network create moatnet >/dev/null");
    assert_eq!(run("--network moatnet -e http_proxy= -e HTTP_PROXY=", "/c-network"), "hello from upstream\n");
    let seen = up.seen();
    for path in ["/c-explicit", "/c-around", "/c-network"] {
        assert!(seen.iter().any(|l| l.starts_with(&format!("GET {path} "))), "{path} missing from {seen:?}");
    }

    // A name no rule allows: 403 through the proxy, no address around it.
    let denied = format!("http://denied.test:{port}/c-denied");
    let out = m.sh("dock", &format!("docker run --rm moat-test/curl /usr/bin/curl -s -w '\\n%{{http_code}}' {denied}"));
    assert!(out.ends_with("\n403"), "{out}");
    let around = format!("docker run --rm -e http_proxy= moat-test/curl /usr/bin/curl -sS {denied}; echo \"exit:$?\"");
    assert!(m.sh("dock", &around).ends_with("exit:6\n"), "curl could not resolve the denied name");
    assert!(!up.seen().iter().any(|l| l.contains("/c-denied")), "a denied request reached the upstream");

    // The engine's own pulls go through the proxy and its policy.
    let out = m.run(&["exec", "dock", "docker", "pull", "denied.test/moat/none:1"]);
    assert!(!out.status.success(), "pull from a denied registry succeeded");
    let log = m.ok(&["policy", "log", "dock", "--json", "-n", "200"]);
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pull = records.iter().find(|r| r["host"] == "denied.test" && r["port"] == 443);
    assert_eq!(pull.map(|r| r["verdict"].as_str()), Some(Some("denied")), "{}\n{log}", stderr(&out));

    // Images live on the sandbox's state disk: they survive a restart.
    m.ok(&["stop", "dock"]);
    m.ok(&["start", "dock"]);
    assert_eq!(m.sh("dock", "docker images --format '{{.Repository}}'"), "moat-test/curl\n");
}
