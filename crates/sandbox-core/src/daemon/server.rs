//! The daemon: the HTTP/JSON API of `docs/api.md` / `docs/openapi.yaml` on a Unix socket.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::api::{ApiError, VersionInfo, API_VERSION};
use crate::manager::{Manager, ManagerError};
use crate::spec::CreateRequest;
use crate::templates::{ImportRequest, ProgramsRequest, SaveRequest};

/// Largest request body the daemon reads.
const MAX_BODY: usize = 64 * 1024;

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another daemon already serves this installation.
    #[error("a moat daemon is already running for {0}")]
    AlreadyRunning(PathBuf),
    /// The socket or lock could not be set up.
    #[error("cannot set up the daemon socket {0}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// Serves `manager` on its installation's socket until asked to stop (API or SIGTERM/SIGINT).
/// The process works in `/` from here on, with only absolute `PATH` entries
/// (see [`crate::host::process`]); call it while the process has one thread.
pub fn serve(manager: Manager) -> Result<(), ServeError> {
    let home = manager.home().clone();
    crate::host::enter_host_process().map_err(|e| ServeError::Io(PathBuf::from("/"), e))?;
    let sock = home.daemon_socket();
    let io = |e| ServeError::Io(sock.clone(), e);
    let lock = File::create(home.root().join("daemon.lock")).map_err(io)?;
    // A daemon being replaced lets go of the lock a moment after its socket is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    // SAFETY: `lock` is an open file kept alive until this function returns.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if std::time::Instant::now() > deadline {
            return Err(ServeError::AlreadyRunning(home.root().to_path_buf()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // We hold the lock, so any socket file left is from a dead daemon.
    let _ = std::fs::remove_file(&sock);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(io)?;
    let manager = Arc::new(manager);
    rt.block_on(async {
        let listener = UnixListener::bind(&sock).map_err(io)?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io)?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let manager = manager.clone();
                    let stop_tx = stop_tx.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(manager.clone(), stop_tx.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
                _ = stop_rx.changed() => break,
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        Ok::<(), ServeError>(())
    })?;
    let _ = std::fs::remove_file(&sock);
    // Running sandboxes keep running: their supervisors are independent processes.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    drop(lock);
    Ok(())
}

type Resp = Response<Full<Bytes>>;

async fn handle(
    manager: Arc<Manager>,
    stop: Arc<watch::Sender<bool>>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let started = std::time::Instant::now();
    let line = format!("{} {}", req.method(), req.uri().path());
    Ok(match route(manager, stop, req).await {
        Ok((status, body)) => json(status, body),
        Err(e) => {
            // Failures are worth a line in daemon.log (stderr); routine successes are not.
            eprintln!("{line} -> {} {} ({} ms)", e.status, e.error.message, started.elapsed().as_millis());
            json(e.status(), serde_json::to_value(&e).expect("serializing an error"))
        }
    })
}

fn json(status: StatusCode, body: serde_json::Value) -> Resp {
    let mut bytes = serde_json::to_vec_pretty(&body).expect("serializing a response");
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("a valid response")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(flatten)]
    req: CreateRequest,
    /// Absolute folder relative paths in `req` are resolved against.
    cwd: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    /// Absolute path of the file to write.
    file: PathBuf,
}

async fn route(
    manager: Arc<Manager>,
    stop: Arc<watch::Sender<bool>>,
    req: Request<Incoming>,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let ok = |v: serde_json::Value| Ok((StatusCode::OK, v));
    match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "version"]) => ok(serde_json::to_value(VersionInfo::current()).expect("version")),
        (&Method::POST, ["v1", "daemon", "stop"]) => {
            let _ = stop.send(true);
            ok(serde_json::json!({ "stopping": true }))
        }
        (&Method::GET, ["v1", "sandboxes"]) => ok(blocking(manager, |m| m.list()).await?),
        (&Method::POST, ["v1", "sandboxes"]) => {
            let body: CreateBody = read_json(req).await?;
            if !body.cwd.is_absolute() {
                return Err(ApiError::bad_request("`cwd` must be an absolute path"));
            }
            let v = blocking(manager, move |m| m.create(&body.req, &body.cwd)).await?;
            Ok((StatusCode::CREATED, v))
        }
        (&Method::GET, ["v1", "sandboxes", name]) => {
            let name = name.to_string();
            ok(blocking(manager, move |m| m.get(&name)).await?)
        }
        (&Method::DELETE, ["v1", "sandboxes", name]) => {
            let name = name.to_string();
            let force = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "force=true"));
            blocking(manager, move |m| m.remove(&name, force)).await?;
            ok(serde_json::json!({ "removed": segments[2] }))
        }
        (&Method::POST, ["v1", "sandboxes", name, action @ ("start" | "stop")]) => {
            let name = name.to_string();
            let start = *action == "start";
            ok(blocking(manager, move |m| if start { m.start(&name) } else { m.stop(&name) }).await?)
        }
        (&Method::GET, ["v1", "templates"]) => ok(blocking(manager, |m| m.list_templates()).await?),
        (&Method::POST, ["v1", "templates"]) => {
            let body: SaveRequest = read_json(req).await?;
            Ok((StatusCode::CREATED, blocking(manager, move |m| m.save_template(&body)).await?))
        }
        (&Method::POST, ["v1", "templates", "import"]) => {
            let body: ImportRequest = read_json(req).await?;
            Ok((StatusCode::CREATED, blocking(manager, move |m| m.import_template(&body)).await?))
        }
        (&Method::POST, ["v1", "templates", "programs"]) => {
            let body: ProgramsRequest = read_json(req).await?;
            Ok((StatusCode::CREATED, blocking(manager, move |m| m.programs_template(&body)).await?))
        }
        (&Method::GET, ["v1", "templates", name]) => {
            let name = name.to_string();
            ok(blocking(manager, move |m| m.template(&name)).await?)
        }
        (&Method::DELETE, ["v1", "templates", name]) => {
            let name = name.to_string();
            blocking(manager, move |m| m.remove_template(&name)).await?;
            ok(serde_json::json!({ "removed": segments[2] }))
        }
        (&Method::POST, ["v1", "templates", name, "export"]) => {
            let name = name.to_string();
            let body: ExportBody = read_json(req).await?;
            ok(blocking(manager, move |m| m.export_template(&name, &body.file)).await?)
        }
        (
            _,
            ["v1", "version"]
            | ["v1", "daemon", "stop"]
            | ["v1", "sandboxes"]
            | ["v1", "sandboxes", _]
            | ["v1", "sandboxes", _, "start" | "stop"]
            | ["v1", "templates"]
            | ["v1", "templates", _]
            | ["v1", "templates", _, "export"],
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no API route {method} {path}; see docs/api.md (API v{API_VERSION})"),
        )),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("request body over {MAX_BODY} bytes"))
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn blocking<T, F>(manager: Arc<Manager>, f: F) -> Result<serde_json::Value, ApiError>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&Manager) -> Result<T, ManagerError> + Send + 'static,
{
    let r = tokio::task::spawn_blocking(move || f(&manager))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let v = r.map_err(ApiError::from)?;
    Ok(serde_json::to_value(v).expect("serializing a response"))
}
