//! Credential injection: the real value goes from the host's vault to the
//! service's own host over TLS, and nowhere else — not to other hosts, not
//! over plain HTTP, not after a redirect, and never into the guest.
//!
//! A Python server on the host's loopback stands in for `api.github.com`
//! (mapped through `$MOAT_HOME/hosts`, its test CA trusted by the proxy via
//! `$MOAT_HOME/upstream-ca.pem`).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{moat, stderr, StandIn};

struct Upstream {
    server: StandIn,
    https: u16,
    http: u16,
}

impl Upstream {
    fn start(dir: &Path) -> Upstream {
        let args = ["leaf.pem", "leaf.key", "other.test"].map(std::ffi::OsStr::new);
        let server = StandIn::start("upstream.py", &args, dir);
        Upstream { https: server.port("https"), http: server.port("http"), server }
    }

    fn request(&self, path: &str) -> serde_json::Value {
        let seen = self.server.seen.lock().unwrap();
        seen.iter().find(|r| r["path"] == path).cloned().unwrap_or_else(|| panic!("{path} never arrived: {seen:?}"))
    }
}

/// A CA (`ca.pem`) and a certificate (`leaf.pem`, `leaf.key`) for the
/// stand-in `hosts`, made with openssl.
pub(crate) fn make_certs(dir: &Path, hosts: &[&str]) {
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj '/CN=moat e2e CA' \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
    ));
    sh(&format!("openssl req {ec} -keyout leaf.key -out leaf.csr -subj '/CN={}'", hosts[0]));
    let san: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
    std::fs::write(
        dir.join("leaf.ext"),
        format!("subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n", san.join(",")),
    )
    .unwrap();
    sh("openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext");
}

/// True if `needle` is anywhere in the QEMU process's memory (guest RAM included).
pub(crate) fn in_process_memory(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (mut at, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            if mem.seek(SeekFrom::Start(at)).is_err() {
                break;
            }
            let Ok(got) = mem.read(&mut buf[..n]) else { break };
            if got == 0 {
                break;
            }
            if buf[..got].windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            // Overlap chunks so a value straddling a boundary is still found.
            at += got.saturating_sub(needle.len()).max(1) as u64;
        }
    }
    false
}

#[test]
fn the_real_credential_reaches_only_the_service_host_over_tls() {
    let Some(m) = moat() else { return };
    let certs = m.workspace("certs");
    make_certs(&certs, &["api.github.com", "github.com", "other.test"]);
    let up = Upstream::start(&certs);
    std::fs::copy(certs.join("ca.pem"), m.home().join("upstream-ca.pem")).unwrap();
    std::fs::write(m.home().join("hosts"), "127.0.0.1 api.github.com github.com other.test\n").unwrap();
    m.ok(&["policy", "preset", "deny-all"]);
    let (https, http) = (up.https.to_string(), up.http.to_string());
    m.ok(&[
        "policy",
        "allow",
        "network",
        &format!("api.github.com:{https},api.github.com:{http},github.com:{https},other.test:{https}"),
    ]);
    let real = format!("ghp_{}", "K8w".repeat(12));
    m.ok(&["secret", "set", "-g", "github", "-t", &real]);

    let ws = m.workspace("inj");
    std::fs::copy(certs.join("ca.pem"), ws.join("upstream-ca.pem")).unwrap();
    m.sandbox("inj", &ws, &[]);
    let ca = ws.join("upstream-ca.pem");
    let ca = ca.to_str().unwrap();
    let auth = "-H \"Authorization: token $GH_TOKEN\"";
    let gh = format!("https://api.github.com:{https}");
    // To the service host over TLS, through the proxy: intercepted, injected. The guest trusts Moat's CA.
    assert_eq!(m.sh("inj", &format!("curl -sS {auth} {gh}/user")), "ok\n");
    // Around the proxy (transparent redirect): the same.
    assert_eq!(m.sh("inj", &format!("curl -sS --noproxy '*' {auth} {gh}/user-transparent")), "ok\n");
    // To another host: tunnelled untouched (the guest sees that server's own certificate).
    let other = format!("https://other.test:{https}");
    assert_eq!(m.sh("inj", &format!("curl -sS --cacert {ca} {auth} {other}/other")), "ok\n");
    // Plain HTTP to the service host: never injected.
    assert_eq!(m.sh("inj", &format!("curl -sS {auth} http://api.github.com:{http}/plain")), "ok\n");
    // A redirect from the service host to another host: the next request carries no credential.
    let out = m.run(&[
        "exec",
        "inj",
        "sh",
        "-c",
        &format!("curl -sSL --location-trusted --cacert {ca} {auth} {gh}/redirect"),
    ]);
    assert!(out.status.success() || !stderr(&out).is_empty());
    // A real-looking token the guest brings itself is stripped, not forwarded.
    let smuggled = format!("ghp_{}", "Zq4".repeat(12));
    assert_eq!(m.sh("inj", &format!("curl -sS -H 'Authorization: token {smuggled}' {gh}/smuggled")), "ok\n");

    // git's HTTPS credentials (Basic) for github.com: the image's credential helper
    // hands git the placeholder, and the proxy swaps it inside the Basic value.
    let fill = m.sh("inj", "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill");
    assert!(fill.contains("username=x-access-token\npassword=github_pat_"), "{fill}");
    let basic = format!("curl -sS -u \"x-access-token:$GH_TOKEN\" https://github.com:{https}/basic");
    assert_eq!(m.sh("inj", &basic), "ok\n");

    // A request rule limits what the credential may be used for, on the running sandbox.
    m.ok(&["policy", "deny", "request", "DELETE", "api.github.com/repos/**", "--sandbox", "inj"]);
    let deleted = m.sh("inj", &format!("sleep 1; curl -sS -X DELETE {auth} {gh}/repos/moat/keep"));
    assert!(deleted.contains("Moat blocked this request"), "{deleted}");
    assert!(deleted.contains("deny request DELETE api.github.com/repos/** --sandbox inj"), "{deleted}");
    assert_eq!(m.sh("inj", &format!("curl -sS {auth} {gh}/repos/moat/keep")), "ok\n", "GET still goes");
    let ls = m.ok(&["policy", "ls"]);
    assert!(ls.contains("deny request DELETE api.github.com/repos/** --sandbox inj"), "{ls}");
    m.ok(&["policy", "rm", "deny", "request", "DELETE", "api.github.com/repos/**", "--sandbox", "inj"]);

    let placeholder = m.sh("inj", "printf %s \"$GH_TOKEN\"");
    // A service that reflects what it was sent shows the guest the placeholder, never the real value.
    let echoed = m.sh("inj", &format!("curl -sS -i {auth} {gh}/echo"));
    assert!(!echoed.contains(&real), "the real token came back:\n{echoed}");
    assert!(echoed.contains(&format!("HTTP/1.1 401 bad credential token {placeholder}\r\n")), "{echoed}");
    assert!(echoed.contains(&format!("X-Echo: token {placeholder}")), "{echoed}");
    assert!(echoed.contains(&format!("Authorization: token {placeholder}")), "the body too:\n{echoed}");
    assert_eq!(up.request("/echo")["auth"], format!("token {real}"), "the service did get the real value");
    // In the fine-grained token format (which every GitHub client accepts), whatever the real one's.
    assert!(placeholder.starts_with("github_pat_") && placeholder != real, "{placeholder}");
    // gh's own config carries the same placeholder, private to `agent`.
    let hosts = m.sh("inj", "stat -c '%U %a' ~/.config/gh/hosts.yml; cat ~/.config/gh/hosts.yml");
    assert!(hosts.starts_with("agent 600\n") && hosts.contains(&format!("oauth_token: {placeholder}")), "{hosts}");
    assert_eq!(up.request("/user")["auth"], format!("token {real}"));
    assert_eq!(up.request("/user-transparent")["auth"], format!("token {real}"));
    assert_eq!(up.request("/other")["auth"], format!("token {placeholder}"));
    assert_eq!(up.request("/plain")["auth"], format!("token {placeholder}"));
    assert_eq!(up.request("/smuggled")["auth"], serde_json::Value::Null);
    let basic_auth = up.request("/basic")["auth"].as_str().unwrap().to_string();
    assert!(basic_auth.starts_with("Basic "), "{basic_auth}");
    let decoded =
        Command::new("base64").arg("-d").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&basic_auth.as_bytes()[6..])?;
            c.wait_with_output()
        });
    assert_eq!(String::from_utf8_lossy(&decoded.unwrap().stdout), format!("x-access-token:{real}"));
    let seen = up.server.requests();
    for r in &seen {
        let host = r["host"].as_str().unwrap_or("");
        let injected_ok =
            (host.starts_with("api.github.com:") || host.starts_with("github.com:")) && r["proto"] == "https";
        if !injected_ok {
            assert!(!r.to_string().contains(&real), "the real token reached {r}");
        }
    }
    if let Some(landing) = seen.iter().find(|r| r["path"] == "/landing") {
        assert_ne!(landing["auth"], format!("token {real}"), "no credential after a redirect");
    }

    // The real value is nowhere in the guest: every process's environment, the whole disk...
    let hunt = "a=K8w; a=$a$a$a$a; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c \"$a\"; \
                grep -rl \"$a\" / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | wc -l";
    assert_eq!(m.ok(&["exec", "-u", "root", "inj", "sh", "-c", hunt]), "0\n0\n");
    // ...nor in guest memory (the monitor's whole address space, guest RAM included)...
    let status: serde_json::Value = serde_json::from_str(&m.ok(&["ls", "--json"])).unwrap();
    let vmm_pid = status[0]["status"]["vmm_pid"].as_u64().expect("vmm pid in ls --json") as u32;
    assert!(!in_process_memory(vmm_pid, real.as_bytes()), "the real token is in guest memory");
    // ...nor in the serial log or the connection log on the host (which do record the requests).
    let grep = Command::new("grep").args(["-rlF", &real]).arg(m.home()).output().unwrap();
    assert!(grep.stdout.is_empty(), "plaintext credential in {}", String::from_utf8_lossy(&grep.stdout));
    let log = m.ok(&["policy", "log", "inj", "--json", "-n", "500"]);
    assert!(log.contains("injected the github credential"), "{log}");
    assert!(log.contains("stripped"), "{log}");
    // What was done with the credential: method, path and status of each intercepted request.
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let done = |path: &str| {
        records
            .iter()
            .find(|r| r["path"] == path && r["mode"] == "intercept")
            .cloned()
            .unwrap_or_else(|| panic!("{path}: {log}"))
    };
    assert_eq!((done("/user")["method"].as_str(), done("/user")["status"].as_u64()), (Some("GET"), Some(200)));
    assert_eq!(done("/echo")["status"].as_u64(), Some(401));
    assert!(done("/echo")["note"].as_str().unwrap().contains("took the credential out of the answer"), "{log}");
    let table = m.ok(&["policy", "log", "inj", "-n", "500"]);
    assert!(table.lines().any(|l| l.contains(" 401 GET ") && l.contains("api.github.com/echo")), "{table}");
}
