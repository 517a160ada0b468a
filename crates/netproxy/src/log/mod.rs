//! The connection log: one record per connection or request the proxy
//! handled, whatever the verdict.
//!
//! The proxy hands records to a [`ConnectionSink`]; it never blocks on one.
//! [`SqliteLog`] is the sink that stores them in a bounded SQLite file shared
//! by every sandbox's supervisor, fairly: each sandbox has its own share of
//! the rows and its own rate of records (see [`LogOptions`]), so one noisy
//! guest does not evict the others' records; [`LogReader`] reads that file (the CLI's
//! `moat log`, with [`Follow`] for `--follow`).

mod reader;
mod schema;
mod throttle;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fair;

use serde::{Deserialize, Serialize};

pub use reader::{Filter, Follow, LogReader, ReadError, POLL_LIMIT};
pub use schema::DbError;
pub use throttle::Rate;
pub use writer::{LogOptions, OpenError, SqliteLog};

/// What the proxy did with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogVerdict {
    /// Policy allowed it and it was forwarded.
    Allowed,
    /// Policy (or a protocol check) denied it.
    Denied,
    /// Allowed, but the upstream could not be reached or the exchange failed.
    Failed,
}

/// How the traffic crossed the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogMode {
    /// A plain-HTTP request forwarded by the proxy.
    Http,
    /// A CONNECT tunnel relayed byte for byte (TLS untouched).
    Tunnel,
    /// A CONNECT tunnel whose TLS the proxy terminated (credential injection).
    Intercept,
    /// A connection redirected transparently inside the guest.
    Transparent,
    /// A DNS question.
    Dns,
}

/// One logged connection or request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The sandbox it came from.
    pub sandbox: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// `CONNECT`, the HTTP method, or `DNS`.
    pub method: String,
    /// The host as the client named it (or the IP literal).
    pub host: String,
    /// The destination port (53 for DNS).
    pub port: u16,
    /// What happened.
    pub verdict: LogVerdict,
    /// How it crossed.
    pub mode: LogMode,
    /// The rule or preset that decided, as shown to users (e.g. `rule 'allow network **.github.com'`).
    pub rule: Option<String>,
    /// Bytes from the sandbox to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the sandbox.
    pub bytes_down: u64,
    /// How long it lasted, in milliseconds.
    pub duration_ms: u64,
    /// Anything else worth a look: why a protocol check failed, a placeholder
    /// sent to a host that doesn't own it, an upstream error.
    pub note: Option<String>,
    /// For an HTTP request the proxy read (plain, or inside intercepted
    /// TLS): its path, with query values replaced by `…` (they may carry
    /// keys). `None` for tunnels and DNS.
    #[serde(default)]
    pub path: Option<String>,
    /// For an HTTP request: the status the sandbox got (the service's, or
    /// the proxy's own 403/400/502).
    #[serde(default)]
    pub status: Option<u16>,
}

impl ConnectionRecord {
    /// A record about the log or the proxy itself (records dropped,
    /// connections refused): no method, host or bytes, only `note`.
    pub fn notice(
        sandbox: &str,
        started_ms: i64,
        mode: LogMode,
        verdict: LogVerdict,
        note: String,
    ) -> ConnectionRecord {
        ConnectionRecord {
            sandbox: sandbox.to_string(),
            started_ms,
            method: String::new(),
            host: String::new(),
            port: 0,
            verdict,
            mode,
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            note: Some(note),
            path: None,
            status: None,
        }
    }
}

/// Where the proxy sends its records. Implementations must not block: queue
/// and write elsewhere.
pub trait ConnectionSink: Send + Sync {
    /// Takes one record.
    fn record(&self, record: ConnectionRecord);
}
