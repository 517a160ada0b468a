//! Boot-time set-up of the guest's way out, and the threads that serve it.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::relay::{self, Kind};
use super::vsock::VsockStream;
use crate::log::log;
use crate::server::Reaper;
use moat_proto::egress::{
    GuestNetConfig, HomeFile, CA_PATH, CONFIG_PORT, DNS_PORT, GATEWAY_ADDR, GATEWAY_NAME, GUEST_PROXY_PORT,
    GUEST_TRANSPARENT_PORT, MAX_CONFIG, PROXY_PORT, TRANSPARENT_PORT,
};
use moat_proto::exec::ExitStatus;

/// The system CA bundle clients read by default.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Asks the host for its egress configuration. `None` (logged) when the host
/// does not serve one: the guest then has no way out at all.
pub fn fetch_config() -> Option<GuestNetConfig> {
    let read = || -> std::io::Result<Vec<u8>> {
        let stream = VsockStream::connect_host(CONFIG_PORT, Duration::from_secs(3))?;
        let mut doc = Vec::new();
        stream.take(MAX_CONFIG as u64 + 1).read_to_end(&mut doc)?;
        Ok(doc)
    };
    match read() {
        Ok(doc) if doc.len() > MAX_CONFIG => log!("egress: the host's configuration is too large; ignored"),
        Ok(doc) => match serde_json::from_slice(&doc) {
            Ok(config) => return Some(config),
            Err(e) => log!("egress: the host's configuration is not valid: {e}"),
        },
        Err(e) => log!("egress: no configuration from the host ({e}); the sandbox has no network"),
    }
    None
}

/// Sets up the guest's network and starts the relays. Failures are logged:
/// a missing piece means less connectivity, never more.
pub fn start(config: &GuestNetConfig) {
    interfaces();
    redirect_rules();
    write_files(config);
    spawn_tcp("proxy", SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, GUEST_PROXY_PORT), Kind::Proxy(PROXY_PORT));
    spawn_tcp(
        "transparent",
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, GUEST_TRANSPARENT_PORT),
        Kind::Transparent(TRANSPARENT_PORT),
    );
    spawn_tcp("dns-tcp", SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 53), Kind::Proxy(DNS_PORT));
    // One UDP socket per address, not the wildcard: a reply must leave from
    // the address the question went to (containers ask the gateway through
    // their bridge, and a resolver drops answers from any other source).
    for addr in [Ipv4Addr::LOCALHOST, GATEWAY_ADDR] {
        match UdpSocket::bind((addr, 53)) {
            Ok(socket) => spawn("dns-udp", move || super::dns::serve_udp(socket)),
            Err(e) => log!("egress: cannot listen on udp {addr}:53: {e}"),
        }
    }
}

fn spawn_tcp(what: &'static str, addr: SocketAddrV4, kind: Kind) {
    match TcpListener::bind(addr) {
        Ok(listener) => spawn(what, move || relay::serve(listener, kind)),
        Err(e) => log!("egress: cannot listen on {addr} ({what}): {e}"),
    }
}

fn spawn(what: &'static str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(what.into()).spawn(f) {
        log!("egress: cannot start {what}: {e}");
    }
}

/// `lo`, and `moat0`: a dummy device holding the gateway address and the
/// default route. Packets routed to it vanish; TCP is redirected before that.
fn interfaces() {
    let script = format!(
        "link set lo up\n\
         link add moat0 type dummy\n\
         addr add {GATEWAY_ADDR}/32 dev moat0\n\
         link set moat0 up\n\
         route add default dev moat0\n"
    );
    run("ip", &["-force", "-batch", "-"], &script);
}

/// Every outbound TCP connection (from guest processes, and from containers
/// through `prerouting`) lands on the transparent port; loopback and the
/// gateway itself are left alone.
fn redirect_rules() {
    let rules = format!(
        "table ip moat {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr 127.0.0.0/8 return\n\
         \t\tip daddr {GATEWAY_ADDR} return\n\
         \t\tmeta l4proto tcp redirect to :{GUEST_TRANSPARENT_PORT}\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority -100; policy accept;\n\
         \t\tiifname \"lo\" return\n\
         \t\tip daddr {GATEWAY_ADDR} return\n\
         \t\tmeta l4proto tcp redirect to :{GUEST_TRANSPARENT_PORT}\n\
         \t}}\n\
         }}\n"
    );
    run("nft", &["-f", "-"], &rules);
}

fn write_files(config: &GuestNetConfig) {
    write(
        "/etc/resolv.conf",
        "# Answered by the Moat agent, under the sandbox's network policy.\nnameserver 127.0.0.1\n",
    );
    let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !hosts.lines().any(|l| l.split_whitespace().nth(1) == Some(GATEWAY_NAME)) {
        let sep = if hosts.is_empty() || hosts.ends_with('\n') { "" } else { "\n" };
        write("/etc/hosts", &format!("{hosts}{sep}{GATEWAY_ADDR}\t{GATEWAY_NAME}\n"));
    }
    let proxy = format!("http://{GATEWAY_NAME}:{GUEST_PROXY_PORT}");
    write(
        "/etc/apt/apt.conf.d/90moat-proxy",
        &format!("Acquire::http::Proxy \"{proxy}\";\nAcquire::https::Proxy \"{proxy}\";\n"),
    );
    let mut profile = String::from("# Written by the Moat agent at boot: the sandbox's way out.\n");
    for (k, v) in &config.env {
        profile.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
    }
    write("/etc/profile.d/moat-egress.sh", &profile);
    if let Some(ca) = &config.ca_pem {
        trust_ca(ca);
    }
    for file in &config.home_files {
        write_home_file(file);
    }
}

/// Writes one file under `/home/agent`, owned by `agent` (uid/gid 1000), mode
/// 0600, creating its folders. Symlinks planted on the way are not followed
/// out of the home: a path that resolves elsewhere is skipped.
fn write_home_file(file: &HomeFile) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    const HOME: &str = "/home/agent";
    const AGENT: u32 = 1000;
    if !file.is_safe() {
        return log!("egress: refusing home file {:?}", file.path);
    }
    let path = Path::new(HOME).join(&file.path);
    let mut dir = Path::new(HOME).to_path_buf();
    let parts: Vec<&str> = file.path.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        if fs::symlink_metadata(&dir).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
            return log!("egress: {} is a symlink; not writing {}", dir.display(), file.path);
        }
        if fs::create_dir(&dir).is_ok() {
            let _ = std::os::unix::fs::chown(&dir, Some(AGENT), Some(AGENT));
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
    }
    let _ = fs::remove_file(&path); // Never write through a planted symlink.
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut f| f.write_all(file.content.as_bytes()));
    match written {
        Ok(()) => {
            let _ = std::os::unix::fs::chown(&path, Some(AGENT), Some(AGENT));
        }
        Err(e) => log!("egress: cannot write {}: {e}", path.display()),
    }
}

/// Installs the CA where Debian keeps local CAs and appends it to the system
/// bundle (once: the root overlay persists across restarts).
fn trust_ca(pem: &str) {
    if let Some(dir) = Path::new(CA_PATH).parent() {
        let _ = fs::create_dir_all(dir);
    }
    write(CA_PATH, pem);
    let bundle = fs::read_to_string(SYSTEM_BUNDLE).unwrap_or_default();
    if !bundle.contains(pem.trim()) {
        let sep = if bundle.is_empty() || bundle.ends_with('\n') { "" } else { "\n" };
        write(SYSTEM_BUNDLE, &format!("{bundle}{sep}{}\n", pem.trim()));
    }
}

fn write(path: &str, text: &str) {
    if let Err(e) = fs::write(path, text) {
        log!("egress: cannot write {path}: {e}");
    }
}

/// Runs a set-up tool from the root filesystem with `input` on stdin. The
/// agent's reaper owns every child's exit status, so the child is registered
/// with it rather than waited for directly.
fn run(program: &str, args: &[&str], input: &str) {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = None;
    let spawned = Reaper::global().spawn(|| {
        let c = command.spawn()?;
        let pid = c.id() as i32;
        child = Some(c);
        Ok::<i32, std::io::Error>(pid)
    });
    let (exit, mut child) = match (spawned, child) {
        (Ok((_, exit)), Some(child)) => (exit, child),
        (Err(e), _) => return log!("egress: cannot run {program}: {e}"),
        (Ok(_), None) => return,
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let mut stderr = String::new();
    if let Some(err) = child.stderr.take() {
        let _ = err.take(4096).read_to_string(&mut stderr);
    }
    match exit.wait(Duration::from_secs(10)) {
        Some(ExitStatus::Code(0)) => {}
        Some(status) => log!("egress: {program} failed ({status:?}): {}", stderr.trim()),
        None => log!("egress: {program} did not finish in 10 s"),
    }
}
