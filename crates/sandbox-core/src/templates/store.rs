//! Moat's own template store: `$MOAT_HOME/templates/<name>/` holding
//! `manifest.json` and `layer-<i>.ext4` for each user layer, lowest first.
//!
//! A template is assembled in a fresh `.new-*` folder beside the others and
//! renamed into place under the store's lock, so a template that exists is
//! always whole; a replaced or removed one is renamed to `.trash-*` first.
//! A template stacked on another holds hard links to its parent's layer
//! files, so removing the parent takes nothing from it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use super::error::TemplateError;
use super::manifest::{layer_file, Manifest};
use super::sparse;
use crate::backend::LayerDisk;
use crate::paths::Home;

/// The template store of one installation.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
}

/// A held lock on the store: installs and removals take it.
#[derive(Debug)]
pub struct StoreLock {
    _held: Flock<File>,
}

impl TemplateStore {
    /// `$MOAT_HOME/templates`.
    pub fn new(home: &Home) -> TemplateStore {
        TemplateStore { root: home.root().join("templates") }
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of template `name` (whether or not it exists).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether template `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.dir(name).join("manifest.json").is_file()
    }

    /// The manifest of template `name`.
    pub fn get(&self, name: &str) -> Result<Manifest, TemplateError> {
        let path = self.dir(name).join("manifest.json");
        if super::manifest::check_name(name).is_err() || !path.is_file() {
            return Err(TemplateError::NotFound(name.to_string()));
        }
        let bytes = read_bounded(&path)?;
        let manifest =
            Manifest::parse(&bytes).map_err(|source| TemplateError::Manifest { name: name.to_string(), source })?;
        if manifest.name != name {
            let why = format!("it names itself {:?}", manifest.name);
            let source = super::manifest::ManifestError::Field { field: "name", why };
            return Err(TemplateError::Manifest { name: name.to_string(), source });
        }
        Ok(manifest)
    }

    /// Names of the stored templates, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|n| !n.starts_with('.') && self.dir(n).is_dir());
        names.sort();
        names
    }

    /// The layer disks of `manifest`'s template, lowest first.
    pub fn layer_disks(&self, manifest: &Manifest) -> Vec<LayerDisk> {
        let dir = self.dir(&manifest.name);
        manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerDisk { path: dir.join(layer_file(i)), dir: l.dir().map(PathBuf::from) })
            .collect()
    }

    /// Bytes template `name` takes on disk (layers shared with another
    /// template through hard links are counted in both).
    pub fn allocated(&self, name: &str) -> u64 {
        let dir = self.dir(name);
        fs::read_dir(&dir).map(|d| d.flatten().map(|e| sparse::allocated(&e.path())).sum()).unwrap_or(0)
    }

    /// Takes the store's lock (waiting for another holder).
    pub fn lock(&self) -> Result<StoreLock, TemplateError> {
        fs::create_dir_all(&self.root).map_err(TemplateError::io("create", &self.root))?;
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(TemplateError::io("open", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|held| StoreLock { _held: held })
            .map_err(|(_, e)| TemplateError::Io { what: "lock", path, source: e.into() })
    }

    /// A fresh folder to assemble a template in, removed unless installed.
    pub fn staging(&self) -> Result<Staging, TemplateError> {
        fs::create_dir_all(&self.root).map_err(TemplateError::io("create", &self.root))?;
        let dir = self.root.join(format!(".new-{}", random_suffix()));
        fs::create_dir(&dir).map_err(TemplateError::io("create", &dir))?;
        Ok(Staging { dir: Some(dir) })
    }

    /// Moves an assembled template into place as `manifest.name`, writing its
    /// manifest; an existing template of that name is replaced only with
    /// `replace`. The caller holds the lock and has checked that no sandbox
    /// uses a template it replaces.
    pub fn install(
        &self,
        lock: &StoreLock,
        mut staging: Staging,
        manifest: &Manifest,
        replace: bool,
    ) -> Result<(), TemplateError> {
        let dir = staging.dir.clone().expect("a staging folder");
        let path = dir.join("manifest.json");
        fs::write(&path, manifest.encode()).map_err(TemplateError::io("write", &path))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(TemplateError::io("sync", &dir))?;
        let target = self.dir(&manifest.name);
        if target.exists() {
            if !replace {
                return Err(TemplateError::Exists(manifest.name.clone()));
            }
            self.remove(lock, &manifest.name)?;
        }
        fs::rename(&dir, &target).map_err(TemplateError::io("move into place", &target))?;
        staging.dir = None;
        Ok(())
    }

    /// Removes template `name`. The caller holds the lock and has checked that
    /// no sandbox uses it.
    pub fn remove(&self, _lock: &StoreLock, name: &str) -> Result<(), TemplateError> {
        let dir = self.dir(name);
        if !dir.is_dir() {
            return Err(TemplateError::NotFound(name.to_string()));
        }
        // Aside first: a crash leaves only a `.trash-*` folder, never half a template.
        let trash = self.root.join(format!(".trash-{}", random_suffix()));
        fs::rename(&dir, &trash).map_err(TemplateError::io("move aside", &dir))?;
        let _ = fs::remove_dir_all(&trash);
        Ok(())
    }

    /// Clears what a crash left: removals half done, and staging folders no
    /// one has touched for a day.
    pub fn clear_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        let stale = |p: &Path| {
            let modified = fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            modified.elapsed().unwrap_or_default() > Duration::from_secs(24 * 3600)
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".trash-") || (name.starts_with(".new-") && stale(&e.path())) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A folder a template is assembled in; removed on drop unless installed.
#[derive(Debug)]
pub struct Staging {
    dir: Option<PathBuf>,
}

impl Staging {
    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.as_deref().expect("a staging folder")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Reads a manifest file, refusing one too large to be a manifest.
fn read_bounded(path: &Path) -> Result<Vec<u8>, TemplateError> {
    use std::io::Read;
    let limit = super::manifest::MAX_MANIFEST_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes)).map_err(TemplateError::io("read", path))?;
    Ok(bytes)
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
