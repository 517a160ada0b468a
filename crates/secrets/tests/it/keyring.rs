//! The vault key in a real desktop keyring: gnome-keyring's Secret Service
//! on a private D-Bus session bus per test (the bus address is passed to
//! [`SecretService::at`], so nothing here touches the user's own session).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_secrets::{
    FileKeyStore, KeyError, Keyring, OpenError, Scope, SecretService, SystemKeyStore, ValueSource, Vault,
};
use moat_secrets::{KeyStore, Secret};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// A bus (without service activation) and a gnome-keyring on it, with a
/// home of their own; both are killed on drop.
struct DesktopKeyring {
    dir: tempfile::TempDir,
    address: String,
    bus: Child,
    keyring: Option<Child>,
}

/// A session bus config that activates nothing: a keyring is there only
/// while the test runs one.
const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=DIR</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#;

fn on_path(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(program).is_file())
}

impl DesktopKeyring {
    /// `None` (after a loud message) when gnome-keyring or dbus-daemon is
    /// missing; with `MOAT_REQUIRE_E2E=1` that fails the test instead.
    fn start() -> Option<Self> {
        let missing: Vec<_> = ["dbus-daemon", "gnome-keyring-daemon"].into_iter().filter(|p| !on_path(p)).collect();
        if !missing.is_empty() {
            let why = format!("{} not installed (apt-get install dbus-daemon gnome-keyring)", missing.join(" and "));
            assert!(std::env::var("MOAT_REQUIRE_E2E").as_deref() != Ok("1"), "MOAT_REQUIRE_E2E=1 but {why}");
            eprintln!("\n!!! SKIPPING desktop keyring test: {why}\n");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, BUS_CONFIG.replace("DIR", &dir.path().display().to_string())).unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()) // as root it can't raise its fd limit, and says so
            .spawn()
            .unwrap();
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap()).read_line(&mut address).unwrap();
        assert!(address.starts_with("unix:"), "dbus-daemon did not start: {address:?}");
        let mut this = Self { address: address.trim().to_string(), dir, bus, keyring: None };
        this.start_keyring();
        Some(this)
    }

    /// Starts gnome-keyring, its login keyring unlocked with a password on
    /// stdin, and waits until it answers on the bus.
    fn start_keyring(&mut self) {
        let home = self.dir.path().join("home");
        let runtime = self.dir.path().join("run");
        for d in [&home, &runtime] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        }
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        keyring.stdin.take().unwrap().write_all(b"test password").unwrap();
        self.keyring = Some(keyring);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.service().find("readiness probe") {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!("gnome-keyring never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn stop_keyring(&mut self) {
        if let Some(mut k) = self.keyring.take() {
            k.kill().unwrap();
            k.wait().unwrap();
        }
    }

    /// Locks the login keyring, as a screen lock or a new login would.
    fn lock(&self) {
        let conn = zbus::blocking::connection::Builder::address(self.address.as_str()).unwrap().build().unwrap();
        let login = zbus::zvariant::ObjectPath::try_from("/org/freedesktop/secrets/collection/login").unwrap();
        let service = "org.freedesktop.Secret.Service";
        conn.call_method(
            Some("org.freedesktop.secrets"),
            "/org/freedesktop/secrets",
            Some(service),
            "Lock",
            &(vec![login],),
        )
        .unwrap();
    }

    /// The labels of the items with attributes service=moat account=`account`.
    fn labels(&self, account: &str) -> Vec<String> {
        let conn = zbus::blocking::connection::Builder::address(self.address.as_str()).unwrap().build().unwrap();
        let (dest, service) = ("org.freedesktop.secrets", "org.freedesktop.Secret.Service");
        let attributes = std::collections::HashMap::from([("service", "moat"), ("account", account)]);
        let reply =
            conn.call_method(Some(dest), "/org/freedesktop/secrets", Some(service), "SearchItems", &(attributes,));
        let (items, _): (Vec<OwnedObjectPath>, Vec<OwnedObjectPath>) = reply.unwrap().body().deserialize().unwrap();
        let label = |item: &OwnedObjectPath| {
            let get = ("org.freedesktop.Secret.Item", "Label");
            let reply =
                conn.call_method(Some(dest), item.as_str(), Some("org.freedesktop.DBus.Properties"), "Get", &get);
            String::try_from(reply.unwrap().body().deserialize::<OwnedValue>().unwrap()).unwrap()
        };
        items.iter().map(label).collect()
    }

    fn service(&self) -> SecretService {
        SecretService::at(&self.address)
    }

    /// An installation's key store, keyring on this bus.
    fn keys(&self, secrets_dir: &Path) -> SystemKeyStore {
        SystemKeyStore::with_keyring(secrets_dir.join("vault"), secrets_dir.join("key"), Box::new(self.service()))
    }

    fn open(&self, secrets_dir: &Path) -> Result<Vault, OpenError> {
        Vault::open(secrets_dir.join("vault"), &self.keys(secrets_dir))
    }

    fn installation(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("secrets")
    }
}

impl Drop for DesktopKeyring {
    fn drop(&mut self) {
        self.stop_keyring();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn github(value: &str) -> ValueSource {
    ValueSource::Literal(Secret::new(value))
}

fn stored_github(vault: &Vault) -> String {
    vault.resolve("sb", "github").unwrap().expect("a github credential").expose().to_string()
}

#[test]
fn a_new_vault_keys_into_the_keyring_and_each_installation_has_its_own_item() {
    let Some(desktop) = DesktopKeyring::start() else { return };
    let one = desktop.installation("one");
    let vault = desktop.open(&one).unwrap();
    vault.set(&Scope::Global, "github", github("ghp_first")).unwrap();
    assert!(!one.join("key").exists(), "no key file next to a keyring");
    let keys = desktop.keys(&one);
    let reopened = Vault::open(one.join("vault"), &keys).unwrap();
    assert_eq!(stored_github(&reopened), "ghp_first");
    assert!(keys.location().starts_with("the Secret Service on unix:"), "{}", keys.location());
    assert_eq!(desktop.labels(&keys.account()), [format!("Moat credential vault key ({})", keys.account())]);
    assert_eq!(keys.account(), std::fs::canonicalize(&one).unwrap().join("vault").display().to_string());

    let two = desktop.installation("two");
    let other = desktop.open(&two).unwrap();
    assert_ne!(desktop.keys(&two).account(), keys.account());
    assert_eq!(desktop.labels(&desktop.keys(&two).account()).len(), 1, "an item of its own");
    assert_ne!(
        other.placeholder("github", "sb").unwrap(),
        reopened.placeholder("github", "sb").unwrap(),
        "another key"
    );
}

#[test]
fn a_deleted_item_or_a_gone_keyring_fails_clearly_and_makes_no_new_key() {
    let Some(mut desktop) = DesktopKeyring::start() else { return };
    let dir = desktop.installation("home");
    desktop.open(&dir).unwrap().set(&Scope::Global, "github", github("ghp_kept")).unwrap();
    let account = desktop.keys(&dir).account();

    desktop.stop_keyring();
    let err = desktop.open(&dir).unwrap_err();
    assert!(matches!(err, OpenError::Key(KeyError::KeyringUnreachable { .. })), "{err:?}");
    assert!(err.to_string().contains("run moat in your desktop session"), "{err}");
    let no_bus = SecretService::at(format!("unix:path={}", desktop.dir.path().join("no-bus").display()));
    let keys = SystemKeyStore::with_keyring(dir.join("vault"), dir.join("key"), Box::new(no_bus));
    let err = Vault::open(dir.join("vault"), &keys).unwrap_err();
    assert!(matches!(err, OpenError::Key(KeyError::KeyringUnreachable { .. })), "{err:?}");
    assert!(!dir.join("key").exists(), "no key file was made");

    desktop.start_keyring();
    assert_eq!(stored_github(&desktop.open(&dir).unwrap()), "ghp_kept", "the key survived the outage");
    assert!(desktop.service().delete(&account).unwrap());
    let err = desktop.open(&dir).unwrap_err();
    assert!(matches!(err, OpenError::Key(KeyError::KeyringItemMissing { .. })), "{err:?}");
    assert!(err.to_string().contains("gone from the desktop keyring"), "{err}");
    assert!(desktop.service().find(&account).unwrap().is_none(), "no new item");
    assert!(!dir.join("key").exists(), "no key file");
}

#[test]
fn a_key_file_installation_keeps_its_file_next_to_a_keyring() {
    let Some(desktop) = DesktopKeyring::start() else { return };
    let dir = desktop.installation("old");
    Vault::open(dir.join("vault"), &FileKeyStore::new(dir.join("key")))
        .unwrap()
        .set(&Scope::Global, "github", github("ghp_old"))
        .unwrap();
    let keys = desktop.keys(&dir);
    assert_eq!(stored_github(&Vault::open(dir.join("vault"), &keys).unwrap()), "ghp_old");
    assert!(keys.location().starts_with("key file "), "{}", keys.location());
    assert!(desktop.service().find(&keys.account()).unwrap().is_none(), "the key was not moved");
}

#[test]
fn without_a_keyring_on_the_bus_a_new_vault_gets_a_key_file() {
    let Some(mut desktop) = DesktopKeyring::start() else { return };
    desktop.stop_keyring();
    let dir = desktop.installation("headless");
    desktop.open(&dir).unwrap().set(&Scope::Global, "github", github("ghp_file")).unwrap();
    assert!(dir.join("key").exists());
    desktop.start_keyring();
    assert_eq!(stored_github(&desktop.open(&dir).unwrap()), "ghp_file", "the file stays in use");
    assert!(desktop.service().find(&desktop.keys(&dir).account()).unwrap().is_none());
}

#[test]
fn a_locked_keyring_that_cannot_prompt_fails_clearly_and_makes_no_key() {
    let Some(desktop) = DesktopKeyring::start() else { return };
    let dir = desktop.installation("keyed");
    desktop.open(&dir).unwrap().set(&Scope::Global, "github", github("ghp_locked")).unwrap();
    desktop.lock();
    let fresh = desktop.installation("fresh");
    for dir in [&dir, &fresh] {
        let err = desktop.open(dir).unwrap_err();
        assert!(matches!(err, OpenError::Key(KeyError::KeyringLocked { .. })), "{err:?}");
        assert!(err.to_string().contains("is locked: unlock it"), "{err}");
        assert!(!dir.join("key").exists());
    }
    assert!(!desktop.keys(&fresh).marker().exists());
}
