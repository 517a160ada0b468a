//! [`SecretService`]: the freedesktop Secret Service (gnome-keyring, KWallet,
//! KeePassXC) as a [`Keyring`], spoken over D-Bus with zbus.
//!
//! Secrets cross the bus in a "plain" session: the session bus is a socket
//! only this user can reach, the same boundary as a 0600 key file.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_io::Timer;
use futures_lite::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;
use zeroize::Zeroizing;

use crate::keyring::{item_name, Keyring, KeyringError, KEYRING_SERVICE};
use crate::keystore::MasterKey;

const DEST: &str = "org.freedesktop.secrets";
const SERVICE_PATH: &str = "/org/freedesktop/secrets";
const SERVICE: &str = "org.freedesktop.Secret.Service";
const COLLECTION: &str = "org.freedesktop.Secret.Collection";
const ITEM: &str = "org.freedesktop.Secret.Item";
const SESSION: &str = "org.freedesktop.Secret.Session";
const PROMPT: &str = "org.freedesktop.Secret.Prompt";

/// How long the bus and the service may take to answer before they count
/// as unreachable (activating gnome-keyring takes well under a second).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// How long an unlock prompt waits for the user.
const PROMPT_WITHIN: Duration = Duration::from_secs(120);

/// The Secret Service on one D-Bus bus.
#[derive(Debug, Clone)]
pub struct SecretService {
    /// `None`: there is no session bus (`DBUS_SESSION_BUS_ADDRESS` unset).
    address: Option<String>,
}

impl SecretService {
    /// The Secret Service of this session's bus, `$DBUS_SESSION_BUS_ADDRESS`.
    pub fn session() -> Self {
        let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").ok().filter(|a| !a.is_empty());
        Self { address }
    }

    /// The Secret Service on the bus at `address` (`unix:path=…`).
    pub fn at(address: impl Into<String>) -> Self {
        Self { address: Some(address.into()) }
    }

    /// Deletes the items of `account`; returns whether there were any.
    pub fn delete(&self, account: &str) -> Result<bool, KeyringError> {
        let session = Session::open(self.address.as_deref())?;
        let items = session.unlocked_items(account)?;
        for item in &items {
            let prompt: OwnedObjectPath = session.call(item.as_str(), ITEM, "Delete", &(), "delete the item")?;
            session.prompt(prompt.as_str())?;
        }
        Ok(!items.is_empty())
    }
}

impl Keyring for SecretService {
    fn find(&self, account: &str) -> Result<Option<MasterKey>, KeyringError> {
        let session = Session::open(self.address.as_deref())?;
        let mut keys = Vec::new();
        for item in session.unlocked_items(account)? {
            let (_, _, value, _): (OwnedObjectPath, Vec<u8>, Vec<u8>, String) =
                session.call(item.as_str(), ITEM, "GetSecret", &(&session.path,), "read the item")?;
            let value = Zeroizing::new(value);
            let text = std::str::from_utf8(&value).unwrap_or_default();
            keys.push(MasterKey::from_hex(text).ok_or_else(|| KeyringError::BadSecret { item: item_name(account) })?);
        }
        let Some(first) = keys.first() else { return Ok(None) };
        if keys.iter().any(|k| k.to_hex() != first.to_hex()) {
            return Err(KeyringError::Ambiguous { item: item_name(account), count: keys.len() });
        }
        Ok(keys.into_iter().next())
    }

    fn store(&self, account: &str, label: &str, key: &MasterKey) -> Result<(), KeyringError> {
        let session = Session::open(self.address.as_deref())?;
        let collection: OwnedObjectPath =
            session.call(SERVICE_PATH, SERVICE, "ReadAlias", &("default",), "find the default keyring")?;
        if collection.as_str() == "/" {
            return Err(KeyringError::NoDefaultCollection);
        }
        session.unlock(std::slice::from_ref(&collection))?;
        let properties: HashMap<&str, Value> = HashMap::from([
            ("org.freedesktop.Secret.Item.Label", Value::from(label)),
            ("org.freedesktop.Secret.Item.Attributes", Value::from(attributes(account))),
        ]);
        let hex = key.to_hex();
        let secret = (&session.path, Vec::<u8>::new(), hex.as_bytes(), "text/plain");
        let (_, prompt): (OwnedObjectPath, OwnedObjectPath) = session.call(
            collection.as_str(),
            COLLECTION,
            "CreateItem",
            &(properties, secret, false),
            "create the item",
        )?;
        session.prompt(prompt.as_str())
    }

    fn describe(&self) -> String {
        match &self.address {
            Some(a) => format!("the Secret Service on {}", a.split(",guid=").next().unwrap_or(a)),
            None => "the Secret Service (no session bus)".to_string(),
        }
    }
}

fn attributes(account: &str) -> HashMap<&str, &str> {
    HashMap::from([("service", KEYRING_SERVICE), ("account", account)])
}

/// A connection with an open (plain) Secret Service session.
struct Session {
    conn: Connection,
    path: OwnedObjectPath,
}

impl Session {
    /// Connects and opens a session; every failure to get that far means
    /// no keyring is reachable.
    fn open(address: Option<&str>) -> Result<Self, KeyringError> {
        let address = address
            .ok_or_else(|| KeyringError::unreachable("DBUS_SESSION_BUS_ADDRESS is not set (no desktop session bus)"))?;
        let conn = match within(ANSWER_WITHIN, async { zbus::connection::Builder::address(address)?.build().await }) {
            Ok(Some(conn)) => conn,
            Ok(None) => return Err(timed_out(&format!("the session bus {address}"))),
            Err(e) => {
                let reason = format!("cannot connect to the session bus {address}");
                return Err(KeyringError::Unreachable { reason, source: Some(e.into()) });
            }
        };
        let body = ("plain", Value::from(""));
        let reply =
            within(ANSWER_WITHIN, conn.call_method(Some(DEST), SERVICE_PATH, Some(SERVICE), "OpenSession", &body));
        let opened: zbus::Result<(OwnedValue, OwnedObjectPath)> = match reply {
            Ok(Some(m)) => m.body().deserialize(),
            Ok(None) => return Err(timed_out("the Secret Service")),
            Err(e) => Err(e),
        };
        let path = opened
            .map_err(|e| {
                let reason = match &e {
                    zbus::Error::MethodError(name, _, _) if name.starts_with("org.freedesktop.DBus.Error.") => {
                        "no Secret Service (gnome-keyring, KWallet, KeePassXC) runs on the session bus".to_string()
                    }
                    _ => format!("the Secret Service on {address} did not open a session"),
                };
                KeyringError::Unreachable { reason, source: Some(e.into()) }
            })?
            .1;
        Ok(Self { conn, path })
    }

    fn call<B, R>(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
        action: &'static str,
    ) -> Result<R, KeyringError>
    where
        B: Serialize + DynamicType,
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        let failed = |e: zbus::Error| match &e {
            zbus::Error::MethodError(name, _, _) if name.as_str() == "org.freedesktop.Secret.Error.IsLocked" => {
                KeyringError::Locked
            }
            _ => KeyringError::Service { action, source: e.into() },
        };
        match within(ANSWER_WITHIN, self.conn.call_method(Some(DEST), path, Some(iface), method, body)) {
            Ok(Some(reply)) => reply.body().deserialize().map_err(failed),
            Ok(None) => Err(timed_out("the Secret Service")),
            Err(e) => Err(failed(e)),
        }
    }

    /// The items of `account`, unlocking them (which may prompt) if needed.
    fn unlocked_items(&self, account: &str) -> Result<Vec<OwnedObjectPath>, KeyringError> {
        let (mut unlocked, locked): (Vec<OwnedObjectPath>, Vec<OwnedObjectPath>) =
            self.call(SERVICE_PATH, SERVICE, "SearchItems", &(attributes(account),), "search for the item")?;
        if !locked.is_empty() {
            self.unlock(&locked)?;
            unlocked.extend(locked);
        }
        Ok(unlocked)
    }

    fn unlock(&self, objects: &[OwnedObjectPath]) -> Result<(), KeyringError> {
        let (_, prompt): (Vec<OwnedObjectPath>, OwnedObjectPath) =
            self.call(SERVICE_PATH, SERVICE, "Unlock", &(objects,), "unlock the keyring")?;
        self.prompt(prompt.as_str())
    }

    /// Shows the prompt at `prompt` (`/`: none needed) and waits for the
    /// user; a dismissed or unanswered prompt means the keyring stays locked.
    fn prompt(&self, prompt: &str) -> Result<(), KeyringError> {
        if prompt == "/" {
            return Ok(());
        }
        let failed = |e: zbus::Error| KeyringError::Service { action: "show its unlock prompt", source: e.into() };
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(PROMPT)
            .and_then(|r| r.member("Completed"))
            .and_then(|r| r.path(prompt))
            .map_err(failed)?
            .build();
        let conn = &self.conn;
        let answered = within(PROMPT_WITHIN, async {
            let mut signals = zbus::MessageStream::for_match_rule(rule, conn, Some(4)).await?;
            conn.call_method(Some(DEST), prompt, Some(PROMPT), "Prompt", &("",)).await?;
            while let Some(signal) = signals.next().await {
                if let Ok((dismissed, _)) = signal?.body().deserialize::<(bool, OwnedValue)>() {
                    return Ok(!dismissed);
                }
            }
            Ok(false)
        });
        match answered.map_err(failed)? {
            Some(true) => Ok(()),
            Some(false) => Err(KeyringError::Locked),
            None => {
                let _ = within(ANSWER_WITHIN, conn.call_method(Some(DEST), prompt, Some(PROMPT), "Dismiss", &()));
                Err(KeyringError::Locked)
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let close = self.conn.call_method(Some(DEST), self.path.as_str(), Some(SESSION), "Close", &());
        let _ = within(ANSWER_WITHIN, close);
    }
}

/// Runs `work` on this thread; `None` if it takes longer than `limit` (a
/// wedged bus or keyring must not hang `moat`).
fn within<T>(limit: Duration, work: impl Future<Output = zbus::Result<T>>) -> zbus::Result<Option<T>> {
    async_io::block_on(async { work.await.map(Some) }.or(async {
        Timer::after(limit).await;
        Ok(None)
    }))
}

fn timed_out(what: &str) -> KeyringError {
    KeyringError::unreachable(format!("{what} did not answer within {} s", ANSWER_WITHIN.as_secs()))
}
