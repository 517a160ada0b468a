//! The other proxies, as child processes on loopback ports, each with its
//! own configuration in a temporary folder: mitmproxy (`mitmdump`,
//! intercepting) and squid (tunnelling).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::upstream::HOST;

/// How long a tool may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A proxy running as a child process; killed when dropped.
pub struct Tool {
    pub addr: SocketAddr,
    /// The CA a client must trust (intercepting tools only).
    pub ca_pem: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mitmproxy addon: sends `bench.test` to 127.0.0.1 (the SNI stays
/// `bench.test`, which is what the upstream certificate is checked against)
/// and adds one header to every request, as our intercepting proxy does.
const MITM_ADDON: &str = r#"
class Bench:
    def server_connect(self, data):
        host, port = data.server.address
        if host == "bench.test":
            data.server.address = ("127.0.0.1", port)

    def request(self, flow):
        flow.request.headers["X-Moat-Bench"] = "injected"

addons = [Bench()]
"#;

/// Starts `mitmdump` intercepting everything, trusting `upstream_ca_pem`
/// for its upstream TLS.
pub fn mitmproxy(upstream_ca_pem: &str, cpu: Option<usize>) -> Result<Tool, String> {
    let program = find("mitmdump").ok_or("mitmdump not found (pip install mitmproxy)")?;
    let dir = tempfile::Builder::new().prefix("moat-bench-mitm-").tempdir().map_err(|e| e.to_string())?;
    let ca_file = dir.path().join("upstream-ca.pem");
    write(&ca_file, upstream_ca_pem)?;
    let addon = dir.path().join("bench_addon.py");
    write(&addon, MITM_ADDON)?;
    let port = free_port()?;
    let mut cmd = Command::new(program);
    cmd.args(["--listen-host", "127.0.0.1", "--listen-port", &port.to_string(), "-q"])
        .args(["--set", &format!("confdir={}", dir.path().display())])
        .args(["--set", &format!("ssl_verify_upstream_trusted_ca={}", ca_file.display())])
        .arg("-s")
        .arg(&addon);
    let mut tool = spawn(cmd, dir, port, "mitmdump", cpu)?;
    let ca = tool._dir.path().join("mitmproxy-ca-cert.pem");
    tool.ca_pem = Some(std::fs::read_to_string(&ca).map_err(|e| format!("{}: {e}", ca.display()))?);
    Ok(tool)
}

/// Starts a private squid allowing CONNECT from localhost to
/// `upstream_port` only, with no cache and no access log, resolving
/// `bench.test` from its own hosts file.
pub fn squid(upstream_port: u16, cpu: Option<usize>) -> Result<Tool, String> {
    let program = find("squid").ok_or("squid not found (apt-get install squid)")?;
    let dir = tempfile::Builder::new().prefix("moat-bench-squid-").tempdir().map_err(|e| e.to_string())?;
    // Squid started as root drops to its own user, which must write here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())?;
    let d = dir.path().display();
    let hosts = dir.path().join("hosts");
    write(&hosts, &format!("127.0.0.1 {HOST}\n"))?;
    let port = free_port()?;
    let config = format!(
        "http_port 127.0.0.1:{port}\n\
         pid_filename {d}/squid.pid\n\
         cache_log {d}/cache.log\n\
         coredump_dir {d}\n\
         access_log none\n\
         cache_store_log none\n\
         netdb_filename none\n\
         cache deny all\n\
         hosts_file {d}/hosts\n\
         dns_nameservers 127.0.0.1\n\
         pinger_enable off\n\
         shutdown_lifetime 0 seconds\n\
         acl bench_port port {upstream_port}\n\
         acl CONNECT method CONNECT\n\
         http_access allow localhost CONNECT bench_port\n\
         http_access deny all\n"
    );
    let conf = dir.path().join("squid.conf");
    write(&conf, &config)?;
    let mut cmd = Command::new(program);
    cmd.args(["-N", "-f"]).arg(&conf);
    spawn(cmd, dir, port, "squid", cpu)
}

/// Starts `cmd` (and so every process it forks) on `cpu` only, if given.
fn spawn(mut cmd: Command, dir: tempfile::TempDir, port: u16, name: &str, cpu: Option<usize>) -> Result<Tool, String> {
    if let Some(cpu) = cpu {
        // SAFETY: between fork and exec the closure only calls
        // sched_setaffinity on a stack bit set: async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpu, &mut set);
                match libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    let log_path = dir.path().join(format!("{name}.out"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = cmd.stdin(Stdio::null()).stdout(log).stderr(err).spawn().map_err(|e| format!("{name}: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut tool = Tool { addr, ca_pem: None, child, _dir: dir };
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(tool);
        }
        let exited = tool.child.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > START_TIMEOUT {
            let out = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = out.lines().rev().take(5).collect();
            let why = exited.map_or("did not listen in time".to_string(), |s| format!("exited ({s})"));
            return Err(format!("{name} {why}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())
}

/// A port nothing listens on right now (the tool binds it a moment later).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// `program` on PATH, or in /usr/sbin (squid lives there).
fn find(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([Path::new("/usr/sbin").to_path_buf(), Path::new("/sbin").to_path_buf()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
