//! [`Vault`]: the encrypted credential store, with scopes, value sources,
//! placeholders and reload-on-change.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::atomic::{self, WriteLock};
use crate::catalog::{self, CustomService, TokenFormat, CUSTOM_FORMAT};
use crate::command::{self, CommandError};
use crate::error::{LoadError, OpenError, ResolveError, UnknownService, WriteError};
use crate::format::{Sealer, StoredEntry, StoredSource, VaultData};
use crate::keystore::{create_private_dir, KeyStore};
use crate::placeholder::Placeholders;
use crate::secret::Secret;

/// Where a credential applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    Sandbox(String),
}

impl Scope {
    fn as_option(&self) -> Option<&str> {
        match self {
            Scope::Global => None,
            Scope::Sandbox(s) => Some(s),
        }
    }
}

/// A value to store.
#[derive(Debug, Clone)]
pub enum ValueSource {
    /// The value itself (from stdin or `-t TOKEN`).
    Literal(Secret),
    /// A host command printing the value, re-run once its output is older
    /// than `ttl` (at least [`VaultOptions::min_command_ttl`]).
    Command { cmd: String, ttl: Duration },
}

/// How a listed entry gets its value (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Literal,
    Command { cmd: String, ttl: Duration },
}

/// One row of [`Vault::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub service: String,
    pub scope: Scope,
    pub source: Source,
    pub updated_at: SystemTime,
}

/// Runs a piece of work that blocks its thread (see [`VaultOptions::blocking`]).
pub type Blocking = fn(&mut dyn FnMut());

/// Options for [`Vault::open_with`].
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// How long a value command may run before it's killed.
    pub command_timeout: Duration,
    /// The shortest time a command's output (or failure) is reused, whatever
    /// its TTL: with a TTL of 0, a burst of requests still runs the command
    /// at most once per this long. Concurrent callers share one run.
    pub min_command_ttl: Duration,
    /// Wraps every wait for a value command (running it, or waiting for
    /// another caller's run). An embedder calling [`Vault::resolve`] from an
    /// async event loop passes a way to step off it (tokio's
    /// `block_in_place`); the default runs the work in place.
    pub blocking: Blocking,
}

impl Default for VaultOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(10),
            min_command_ttl: Duration::from_secs(1),
            blocking: |work| work(),
        }
    }
}

/// A value command's state for one (scope, service).
enum Run {
    /// Being run by one caller (the number tells its run from a later one's).
    Running(u64),
    /// Its outcome and when it ended.
    Done(Result<Secret, CommandError>, Instant),
}

/// Value commands' outcomes and runs in progress.
#[derive(Default)]
struct Commands {
    runs: HashMap<(Scope, String), Run>,
    next_run: u64,
}

/// Identity of the file's current version: a rename changes the inode.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

struct Cached {
    stamp: Stamp,
    data: VaultData,
}

/// The credential vault. Cheap to query: every read checks the file's
/// inode/size/mtime and re-reads it only when it changed.
pub struct Vault {
    path: PathBuf,
    lock_path: PathBuf,
    key_location: String,
    sealer: Sealer,
    placeholders: Placeholders,
    options: VaultOptions,
    cache: Mutex<Cached>,
    commands: Mutex<Commands>,
    /// Signalled when a command run ends.
    ran: Condvar,
    issued: Mutex<HashMap<String, (String, String)>>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).field("key", &self.key_location).finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (or starts) the vault at `path`, with the key from `keys`
    /// (created on first use).
    pub fn open(path: impl Into<PathBuf>, keys: &dyn KeyStore) -> Result<Self, OpenError> {
        Self::open_with(path, keys, VaultOptions::default())
    }

    pub fn open_with(path: impl Into<PathBuf>, keys: &dyn KeyStore, options: VaultOptions) -> Result<Self, OpenError> {
        let path = path.into();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        create_private_dir(&dir).map_err(|source| OpenError::Dir { path: dir.clone(), source })?;
        let master = keys.load_or_create()?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let vault = Self {
            lock_path: dir.join(format!(".{name}.lock")),
            key_location: keys.location(),
            sealer: Sealer::new(&master),
            placeholders: Placeholders::new(&master),
            options,
            cache: Mutex::new(Cached { stamp: None, data: VaultData::default() }),
            commands: Mutex::new(Commands::default()),
            ran: Condvar::new(),
            issued: Mutex::new(HashMap::new()),
            path,
        };
        drop(vault.current()?);
        Ok(vault)
    }

    /// The vault file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the vault's key lives ("key file …", "the Secret Service on …").
    pub fn key_location(&self) -> &str {
        &self.key_location
    }

    /// Stores `source` for `service` in `scope`, replacing any previous one.
    pub fn set(&self, scope: &Scope, service: &str, source: ValueSource) -> Result<(), WriteError> {
        let updated_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let source = match source {
            ValueSource::Literal(value) => StoredSource::Literal { value },
            ValueSource::Command { cmd, ttl } => StoredSource::Command { cmd, ttl_secs: ttl.as_secs() },
        };
        let sandbox = scope.as_option().map(str::to_owned);
        self.modify(|data| {
            check_service(data, service)?;
            data.entries.retain(|e| !(e.service == service && e.sandbox == sandbox));
            data.entries.push(StoredEntry { service: service.into(), sandbox, source, updated_at });
            Ok(())
        })?;
        self.forget_command(scope, service);
        Ok(())
    }

    /// Removes the value for `service` in `scope`; returns whether there was one.
    pub fn rm(&self, scope: &Scope, service: &str) -> Result<bool, WriteError> {
        let sandbox = scope.as_option();
        let mut removed = false;
        self.modify(|data| {
            let before = data.entries.len();
            data.entries.retain(|e| !(e.service == service && e.sandbox.as_deref() == sandbox));
            removed = data.entries.len() != before;
            Ok(())
        })?;
        self.forget_command(scope, service);
        Ok(removed)
    }

    /// Adds (or replaces) a custom service.
    pub fn add_custom_service(&self, service: CustomService) -> Result<(), WriteError> {
        if catalog::service(&service.id).is_some() {
            return Err(WriteError::BuiltinName(service.id));
        }
        self.modify(|data| {
            data.custom_services.retain(|c| c.id != service.id);
            data.custom_services.push(service.clone());
            Ok(())
        })
    }

    /// Custom services stored in the vault.
    pub fn custom_services(&self) -> Result<Vec<CustomService>, LoadError> {
        Ok(self.current()?.data.custom_services.clone())
    }

    /// The credential for `service` in `sandbox`: the sandbox's own value
    /// wins over the global one. `None` if neither is set.
    pub fn resolve(&self, sandbox: &str, service: &str) -> Result<Option<Secret>, ResolveError> {
        let (scope, source) = {
            let cached = self.current()?;
            check_service(&cached.data, service)?;
            let find = |sb: Option<&str>| {
                cached.data.entries.iter().find(|e| e.service == service && e.sandbox.as_deref() == sb)
            };
            match find(Some(sandbox))
                .map(|e| (Scope::Sandbox(sandbox.into()), e))
                .or_else(|| find(None).map(|e| (Scope::Global, e)))
            {
                None => return Ok(None),
                Some((scope, e)) => (scope, e.source.clone()),
            }
        };
        match source {
            StoredSource::Literal { value } => Ok(Some(value)),
            StoredSource::Command { cmd, ttl_secs } => {
                self.run_cached(scope, service, &cmd, Duration::from_secs(ttl_secs)).map(Some)
            }
        }
    }

    /// Every stored entry, without values.
    pub fn list(&self) -> Result<Vec<Entry>, LoadError> {
        let cached = self.current()?;
        Ok(cached
            .data
            .entries
            .iter()
            .map(|e| Entry {
                service: e.service.clone(),
                scope: e.sandbox.clone().map_or(Scope::Global, Scope::Sandbox),
                source: match &e.source {
                    StoredSource::Literal { .. } => Source::Literal,
                    StoredSource::Command { cmd, ttl_secs } => {
                        Source::Command { cmd: cmd.clone(), ttl: Duration::from_secs(*ttl_secs) }
                    }
                },
                updated_at: UNIX_EPOCH + Duration::from_secs(e.updated_at),
            })
            .collect())
    }

    /// The placeholder the guest of `sandbox` sees for `service`, in the
    /// service's own token format. See [`crate::placeholder`] for the scheme.
    pub fn placeholder(&self, service: &str, sandbox: &str) -> Result<String, UnknownService> {
        let format = {
            let cached = self.current().ok();
            let empty = VaultData::default();
            let data = cached.as_ref().map_or(&empty, |c| &c.data);
            check_service(data, service)?;
            placeholder_format(service)
        };
        let value = self.placeholders.make(service, sandbox, &format);
        self.lock_issued().insert(value.clone(), (service.into(), sandbox.into()));
        Ok(value)
    }

    /// If `value` is a placeholder of this installation, its service and
    /// sandbox. Sandboxes are known from earlier [`Vault::placeholder`] calls
    /// in this process and from per-sandbox entries; [`Vault::is_placeholder_for`]
    /// needs neither.
    pub fn is_placeholder(&self, value: &str) -> Option<(String, String)> {
        if let Some(hit) = self.lock_issued().get(value) {
            return Some(hit.clone());
        }
        let service = self.placeholder_service(value)?;
        let cached = self.current().ok()?;
        let sandbox = cached
            .data
            .entries
            .iter()
            .filter_map(|e| e.sandbox.as_deref())
            .find(|sb| self.placeholders.make(&service, sb, &placeholder_format(&service)) == value)?;
        Some((service, sandbox.to_owned()))
    }

    /// If `value` is `sandbox`'s placeholder for some service, that service.
    pub fn is_placeholder_for(&self, value: &str, sandbox: &str) -> Option<String> {
        let service = self.placeholder_service(value)?;
        (self.placeholders.make(&service, sandbox, &placeholder_format(&service)) == value).then_some(service)
    }

    /// Whether `value` has the shape of a real `service` credential (and is
    /// not one of our placeholders): the proxy strips such guest-supplied values.
    pub fn looks_like_real_credential(&self, service: &str, value: &str) -> bool {
        let Some(s) = catalog::service(service) else {
            return false;
        };
        s.formats.iter().any(|f| f.matches(value)) && self.placeholder_service(value).is_none()
    }

    /// The service whose placeholder format `value` has and whose check it passes.
    fn placeholder_service(&self, value: &str) -> Option<String> {
        let builtin = catalog::SERVICES.iter().map(|s| (s.id.to_owned(), s.formats[0]));
        let custom = self
            .current()
            .ok()
            .map(|c| c.data.custom_services.iter().map(|c| c.id.clone()).collect::<Vec<_>>())
            .unwrap_or_default();
        builtin
            .chain(custom.into_iter().map(|id| (id, CUSTOM_FORMAT)))
            .find(|(_, f)| self.placeholders.is_ours(value, f))
            .map(|(id, _)| id)
    }

    /// The command's output if it is fresh, else the outcome of one run of
    /// it shared by every concurrent caller (inside [`VaultOptions::blocking`]).
    /// A failure is kept for [`VaultOptions::min_command_ttl`], so a broken
    /// command is not re-run for every request either.
    fn run_cached(&self, scope: Scope, service: &str, cmd: &str, ttl: Duration) -> Result<Secret, ResolveError> {
        let key = (scope, service.to_owned());
        let ttl = ttl.max(self.options.min_command_ttl);
        if let Some(Run::Done(Ok(value), at)) = self.lock_commands().runs.get(&key) {
            if at.elapsed() < ttl {
                return Ok(value.clone());
            }
        }
        let mut outcome = None;
        (self.options.blocking)(&mut || outcome = Some(self.run_shared(&key, cmd, ttl)));
        outcome
            .unwrap_or_else(|| self.run_shared(&key, cmd, ttl))
            .map_err(|source| ResolveError::Command { service: service.into(), source })
    }

    /// Waits for a run in progress or makes one; blocks.
    fn run_shared(&self, key: &(Scope, String), cmd: &str, ttl: Duration) -> Result<Secret, CommandError> {
        let min_ttl = self.options.min_command_ttl;
        // A run never takes much longer than its timeout; past that, whoever
        // waits runs the command itself.
        let patience = self.options.command_timeout + Duration::from_secs(1);
        let mut commands = self.lock_commands();
        let started = Instant::now();
        loop {
            match commands.runs.get(key) {
                Some(Run::Done(Ok(value), at)) if at.elapsed() < ttl => return Ok(value.clone()),
                Some(Run::Done(Err(e), at)) if at.elapsed() < min_ttl => return Err(e.again()),
                Some(Run::Running(_)) if started.elapsed() < patience => {
                    commands = self.ran.wait_timeout(commands, patience).unwrap_or_else(|p| p.into_inner()).0;
                }
                _ => break,
            }
        }
        let run = commands.next_run;
        commands.next_run += 1;
        commands.runs.insert(key.clone(), Run::Running(run));
        drop(commands);
        let outcome = command::run(cmd, self.options.command_timeout);
        let mut commands = self.lock_commands();
        // Unless the entry was changed or removed meanwhile (`set`, `rm`).
        if matches!(commands.runs.get(key), Some(Run::Running(r)) if *r == run) {
            let kept = match &outcome {
                Ok(value) => Ok(value.clone()),
                Err(e) => Err(e.again()),
            };
            commands.runs.insert(key.clone(), Run::Done(kept, Instant::now()));
        }
        self.ran.notify_all();
        outcome
    }

    fn forget_command(&self, scope: &Scope, service: &str) {
        self.lock_commands().runs.remove(&(scope.clone(), service.to_owned()));
        self.ran.notify_all();
    }

    fn lock_commands(&self) -> MutexGuard<'_, Commands> {
        self.commands.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_issued(&self) -> MutexGuard<'_, HashMap<String, (String, String)>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached contents, re-read first if the file changed on disk.
    fn current(&self) -> Result<MutexGuard<'_, Cached>, LoadError> {
        let mut cached = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = self.stamp()?;
        if stamp != cached.stamp {
            cached.data = self.read()?;
            cached.stamp = stamp;
        }
        Ok(cached)
    }

    fn stamp(&self) -> Result<Stamp, LoadError> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoadError::Read { path: self.path.clone(), source }),
        }
    }

    fn read(&self) -> Result<VaultData, LoadError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VaultData::default()),
            Err(source) => return Err(LoadError::Read { path: self.path.clone(), source }),
        };
        Ok(self.sealer.open(&bytes, self.path.clone(), || self.key_location.clone())?)
    }

    /// Read-modify-write under the writers' lock. A file that can't be
    /// decoded aborts the change and is left untouched.
    fn modify(&self, change: impl FnOnce(&mut VaultData) -> Result<(), WriteError>) -> Result<(), WriteError> {
        let _lock = WriteLock::acquire(&self.lock_path)
            .map_err(|source| WriteError::Lock { path: self.lock_path.clone(), source })?;
        atomic::remove_stale_temps(&self.path);
        let mut data = self.read()?;
        change(&mut data)?;
        let bytes = self.sealer.seal(&data);
        atomic::replace(&self.path, &bytes).map_err(|source| WriteError::Write { path: self.path.clone(), source })?;
        let mut cached = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cached.stamp = self.stamp()?;
        cached.data = data;
        Ok(())
    }
}

fn check_service(data: &VaultData, service: &str) -> Result<(), UnknownService> {
    if catalog::service(service).is_some() || data.custom_services.iter().any(|c| c.id == service) {
        return Ok(());
    }
    let mut known: Vec<String> = catalog::known_ids().into_iter().map(String::from).collect();
    known.extend(data.custom_services.iter().map(|c| c.id.clone()));
    Err(UnknownService { name: service.into(), known: known.join(", ") })
}

fn placeholder_format(service: &str) -> TokenFormat {
    catalog::service(service).map_or(CUSTOM_FORMAT, |s| s.formats[0])
}
