//! The egress service of one VM, run by its supervisor: the host ends of the
//! guest's vsock egress ports (see `moat_proto::egress`), each
//! answered by `moat-netproxy` under the live policy.
//!
//! The vsock backend turns a guest connection to host port P into a
//! connection to the Unix socket `<vsock.sock>_P`; this service listens on
//! exactly those sockets and nothing else, so a port it doesn't serve is a
//! refused connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moat_netproxy::dns::{FakeIps, Responder};
use moat_netproxy::log::{ConnectionSink, LogOptions, SqliteLog};
use moat_netproxy::policy::{Action, Policy, Preset, Rule, Scope};
use moat_netproxy::proxy::{CertificateAuthority, Proxy, ProxyConfig, StaticResolver};
use moat_proto::egress::{self as wire, GuestNetConfig, TransparentHeader};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::store::PolicyStore;
use crate::paths::Home;

/// How often the policy database is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_millis(200);
/// Rows the shared connection log keeps.
const LOG_ROWS: u64 = 200_000;
/// Rows one sandbox keeps in it: a noisy one evicts its own records.
const LOG_ROWS_PER_SANDBOX: u64 = 50_000;
/// DNS streams one guest may hold open (its agent uses one).
const DNS_STREAMS: usize = 16;
/// Names one sandbox's DNS keeps fake addresses for before recycling the oldest.
const FAKE_NAMES: usize = 65_000;

/// Where a VM's egress service finds what it needs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPaths {
    /// The policy database ([`PolicyStore`]).
    pub policy_db: PathBuf,
    /// The connection log (SQLite, shared by every sandbox).
    pub connection_log: PathBuf,
    /// The installation's proxy CA.
    pub ca_dir: PathBuf,
    /// Optional `hosts`-format overrides for the proxy's resolver
    /// (`127.0.0.1 api.test`): how tests and users point a name at a host service.
    pub hosts_file: PathBuf,
    /// Optional PEM certificates trusted for upstream TLS besides the system's
    /// (a corporate CA, or a test server's).
    pub extra_roots: PathBuf,
    /// The credential vault, for injection.
    pub secrets_dir: PathBuf,
}

impl EgressPaths {
    /// The standard locations under a Moat home.
    pub fn for_home(home: &Home) -> EgressPaths {
        EgressPaths {
            policy_db: home.policy_database(),
            connection_log: home.connection_log(),
            ca_dir: home.egress_ca_dir(),
            hosts_file: home.root().join("hosts"),
            extra_roots: home.root().join("upstream-ca.pem"),
            secrets_dir: home.secrets_dir(),
        }
    }
}

/// Why the egress service could not start.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The policy database could not be read.
    #[error(transparent)]
    Policy(#[from] super::PolicyStoreError),
    /// The connection log could not be opened.
    #[error(transparent)]
    Log(#[from] moat_netproxy::log::OpenError),
    /// The proxy's CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] moat_netproxy::proxy::CaError),
    /// The proxy could not be set up (trust roots, TLS).
    #[error(transparent)]
    Proxy(#[from] moat_netproxy::proxy::ProxyError),
    /// The credential vault could not be opened.
    #[error(transparent)]
    Vault(#[from] moat_secrets::OpenError),
    /// The extra trust roots file could not be read.
    #[error("cannot read {}", .0.display())]
    Roots(PathBuf, #[source] std::io::Error),
    /// A socket or the runtime could not be created.
    #[error("cannot listen on {}", .0.display())]
    Listen(PathBuf, #[source] std::io::Error),
    /// A host the sandbox's template allows is not a network resource.
    #[error("the template allows {0:?}, which is not a host pattern")]
    AgentHost(String, #[source] moat_netproxy::policy::ResourceError),
}

/// A running egress service; dropping it stops everything.
#[derive(Debug)]
pub struct EgressService {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    sockets: Vec<PathBuf>,
}

impl Drop for EgressService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Everything a connection handler needs.
struct Shared {
    sandbox: String,
    proxy: Proxy,
    dns: Responder,
    fake: Arc<FakeIps>,
    config: Vec<u8>,
    dns_streams: Arc<tokio::sync::Semaphore>,
}

/// Starts the egress service for `sandbox`, listening beside `vsock_uds`.
/// `agent_hosts` (its template's) extend the `balanced` preset for it.
pub fn start(
    sandbox: &str,
    agent_hosts: &[String],
    paths: &EgressPaths,
    vsock_uds: &Path,
) -> Result<EgressService, EgressError> {
    let mut store = PolicyStore::open(&paths.policy_db)?;
    let (preset, rules) = store.load()?;
    store.changed()?;
    let extension = agent_hosts
        .iter()
        .map(|h| {
            let resource = h.parse().map_err(|e| EgressError::AgentHost(h.clone(), e))?;
            Ok(Rule::new(Action::Allow, Scope::Sandbox(sandbox.to_string()), resource))
        })
        .collect::<Result<Vec<_>, EgressError>>()?;
    let policy = Arc::new(Policy::extended(preset, extension, &rules));
    let log_options =
        LogOptions { max_rows: LOG_ROWS, max_rows_per_sandbox: LOG_ROWS_PER_SANDBOX, ..LogOptions::default() };
    let sink: Arc<dyn ConnectionSink> = Arc::new(SqliteLog::open_with(&paths.connection_log, log_options)?);
    let fake = Arc::new(FakeIps::new(FAKE_NAMES));
    let ca = Arc::new(CertificateAuthority::load_or_create(&paths.ca_dir)?);
    let vault = crate::credentials::open_vault_in(&paths.secrets_dir)?;
    let home_files = super::inject::home_files(&vault, sandbox);
    let mut config = ProxyConfig::new(Arc::clone(&policy), ca, Arc::clone(&sink));
    // `$MOAT_HOME/hosts` (a missing file is no overrides), then the host's resolver.
    let hosts = std::fs::read_to_string(&paths.hosts_file).unwrap_or_default();
    config.resolver = Arc::new(StaticResolver::from_hosts(&hosts).or_system());
    config.intercept = Some(Arc::new(super::inject::CredentialInjector::new(vault)));
    match std::fs::read_to_string(&paths.extra_roots) {
        Ok(pem) => config.extra_roots_pem.push(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EgressError::Roots(paths.extra_roots.clone(), e)),
    }
    let proxy = Proxy::new(config)?;
    let guest =
        GuestNetConfig { ca_pem: Some(proxy.ca_certificate_pem().to_string()), env: wire::proxy_env(true), home_files };
    let shared = Arc::new(Shared {
        sandbox: sandbox.to_string(),
        dns: Responder::new(Arc::clone(&policy), Arc::clone(&fake), Some(Arc::clone(&sink)), sandbox.to_string()),
        proxy,
        fake,
        config: serde_json::to_vec(&guest).expect("serializing the guest config"),
        dns_streams: Arc::new(tokio::sync::Semaphore::new(DNS_STREAMS)),
    });

    // Built with every signal blocked, so its threads (and the blocking pool
    // they start) never take the process's signals.
    let runtime = crate::threads::with_signals_blocked(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("egress").enable_all().build()
    })
    .map_err(|e| EgressError::Listen(vsock_uds.into(), e))?;
    let mut sockets = Vec::new();
    let _guard = runtime.enter();
    for (port, kind) in [
        (wire::CONFIG_PORT, Port::Config),
        (wire::PROXY_PORT, Port::Proxy),
        (wire::TRANSPARENT_PORT, Port::Transparent),
        (wire::DNS_PORT, Port::Dns),
    ] {
        let path = PathBuf::from(format!("{}_{port}", vsock_uds.display()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| EgressError::Listen(path.clone(), e))?;
        sockets.push(path);
        runtime.spawn(accept_loop(listener, kind, Arc::clone(&shared)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_reload = Arc::clone(&stop);
    crate::threads::spawn_without_signals(move || {
        while !stop_reload.load(Ordering::Relaxed) {
            std::thread::sleep(RELOAD_EVERY);
            match store.changed() {
                Ok(false) => {}
                Ok(true) => reload(&policy, store.load()),
                Err(e) => reload(&policy, Err(e)),
            }
        }
    });
    Ok(EgressService { runtime: Some(runtime), stop, sockets })
}

/// Applies the stored policy. One that can't be read (a hand-edited rule that
/// does not parse, a damaged file) fails closed: nothing is allowed until it
/// reads again, never the policy from before the change.
fn reload(policy: &Policy, loaded: Result<(Preset, Vec<Rule>), super::PolicyStoreError>) {
    match loaded {
        Ok((preset, rules)) => policy.update(preset, &rules),
        Err(e) => {
            eprintln!("moat: the network policy can't be read, so this sandbox reaches nothing until it is fixed: {e}");
            policy.update(Preset::DenyAll, &[]);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Port {
    Config,
    Proxy,
    Transparent,
    Dns,
}

async fn accept_loop(listener: UnixListener, kind: Port, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match kind {
                Port::Config => {
                    let mut stream = stream;
                    let _ = stream.write_all(&shared.config).await;
                    let _ = stream.shutdown().await;
                }
                Port::Proxy => shared.proxy.serve(stream, &shared.sandbox).await,
                Port::Transparent => transparent(stream, &shared).await,
                Port::Dns => {
                    // Past the limit the stream is closed at once.
                    if let Ok(_slot) = Arc::clone(&shared.dns_streams).try_acquire_owned() {
                        let _ = shared.dns.serve_stream(stream).await;
                    }
                }
            }
        });
    }
}

/// Reads the [`TransparentHeader`] (bounded, with a deadline), then hands the
/// connection to the proxy with the name the guest's DNS gave that address.
async fn transparent(mut stream: UnixStream, shared: &Shared) {
    // The slot is taken before the header is read, so connections that never
    // name a destination count against the sandbox's limit too.
    let Some(slot) = shared.proxy.reserve(&shared.sandbox) else { return };
    let mut line = Vec::with_capacity(wire::MAX_HEADER);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut byte = [0u8; 1];
        while line.len() < wire::MAX_HEADER {
            if stream.read_exact(&mut byte).await.is_err() {
                return false;
            }
            line.push(byte[0]);
            if byte[0] == b'\n' {
                return true;
            }
        }
        false
    })
    .await;
    let Some(header) = matches!(read, Ok(true)).then(|| TransparentHeader::parse(&line)).flatten() else {
        return; // Not our agent speaking: close.
    };
    let dst = SocketAddr::from(header.dst);
    let hint = shared.fake.lookup_ip(*header.dst.ip());
    shared.proxy.serve_transparent_reserved(slot, stream, &shared.sandbox, dst, hint).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_netproxy::policy::Request;

    #[test]
    fn a_policy_that_cannot_be_read_fails_closed_and_recovers_when_fixed() {
        let extension = vec!["allow network api.githubcopilot.com --sandbox s".parse().unwrap()];
        let policy = Policy::extended(Preset::Balanced, extension, &[]);
        let allowed = |host: &str| policy.decide(&Request::new("s", host, 443)).is_allowed();
        assert!(allowed("registry.npmjs.org") && allowed("api.githubcopilot.com"));
        let corrupt = super::super::PolicyStoreError::Corrupt { id: 7, text: "allow network [".into() };
        reload(&policy, Err(corrupt));
        assert!(!allowed("registry.npmjs.org") && !allowed("api.githubcopilot.com"), "not the old policy");
        reload(&policy, Ok((Preset::Balanced, Vec::new())));
        assert!(allowed("registry.npmjs.org") && allowed("api.githubcopilot.com"));
    }
}
