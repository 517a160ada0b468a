//! Packages from the npm registry: fetched once into the cache, checked
//! against the sha512 integrity pinned in the recipe, unpacked into a tree.
//!
//! ```text
//! <cache>/downloads/npm/<scope>+<name>-<version>.tgz
//! ```
//!
//! The registry is `$MOAT_NPM_REGISTRY` (a mirror), else
//! `https://registry.npmjs.org`; which one served a tarball does not matter,
//! its hash does.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha512};

use super::cache::ImageCache;
use super::command::{self, ToolError};
use super::io::PathIoError;
use super::progress::Progress;

const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";

/// One pinned package: its tarball's `package/` folder is unpacked at `into`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpmPackage {
    /// Name, with its scope if it has one (`@openai/codex`).
    pub package: String,
    /// Exact version.
    pub version: String,
    /// The registry's `dist.integrity`: `sha512-<base64>`.
    pub integrity: String,
    /// Absolute folder in the image.
    pub into: String,
}

/// Fetching or unpacking a package failed.
#[derive(Debug, thiserror::Error)]
pub enum NpmError {
    /// The recipe names a package badly.
    #[error("npm package {package}: {reason}")]
    Recipe { package: String, reason: &'static str },
    /// The download's hash is not the pinned one.
    #[error("{url} does not match its pinned integrity (got sha512-{got}); the download is kept out of the cache")]
    Integrity { url: String, got: String },
    /// curl or tar failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

impl NpmPackage {
    /// Checks the fields a recipe gives; called when a recipe is parsed.
    pub fn validate(&self) -> Result<(), NpmError> {
        let bad = |reason| Err(NpmError::Recipe { package: self.package.clone(), reason });
        let name_ok = |s: &str| {
            !s.is_empty() && !s.starts_with('.') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        let (scope, name) = match self.package.strip_prefix('@').map(|s| s.split_once('/')) {
            Some(Some((scope, name))) => (Some(scope), name),
            Some(None) => return bad("a scoped name is @scope/name"),
            None => (None, self.package.as_str()),
        };
        if !scope.is_none_or(name_ok) || !name_ok(name) {
            return bad("not an npm package name");
        }
        if !name_ok(&self.version) {
            return bad("not an exact version");
        }
        if self.expected_sha512().is_none() {
            return bad("integrity must be sha512-<base64 of 64 bytes>");
        }
        let into = Path::new(&self.into);
        if !into.is_absolute() || into.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return bad("`into` must be an absolute folder without `..`");
        }
        Ok(())
    }

    fn expected_sha512(&self) -> Option<Vec<u8>> {
        let b64 = self.integrity.strip_prefix("sha512-")?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok().filter(|d| d.len() == 64)
    }

    /// The tarball's address in `registry`.
    pub fn tarball_url(&self, registry: &str) -> String {
        let base = self.package.rsplit('/').next().unwrap_or(&self.package);
        format!("{}/{}/-/{base}-{}.tgz", registry.trim_end_matches('/'), self.package, self.version)
    }

    fn file_name(&self) -> String {
        format!("{}-{}.tgz", self.package.trim_start_matches('@').replace('/', "+"), self.version)
    }
}

impl ImageCache {
    /// The package's tarball, downloaded first if the cache lacks it; a
    /// cached one is re-checked against the pinned hash.
    pub fn npm_tarball(&self, pkg: &NpmPackage, progress: &dyn Progress) -> Result<PathBuf, NpmError> {
        pkg.validate()?;
        let dir = self.root().join("downloads/npm");
        fs::create_dir_all(&dir).map_err(PathIoError::on("create", &dir))?;
        let path = dir.join(pkg.file_name());
        let registry = std::env::var("MOAT_NPM_REGISTRY").ok().filter(|r| !r.is_empty());
        let url = pkg.tarball_url(registry.as_deref().unwrap_or(DEFAULT_REGISTRY));
        if path.is_file() && sha512_of(&path)? == pkg.expected_sha512().unwrap_or_default() {
            return Ok(path);
        }
        progress.stage(&format!("npm {}@{}", pkg.package, pkg.version), &format!("downloading {url}"));
        let curl = command::find_tool("curl", "`apt-get install curl`")?;
        let partial = dir.join(format!(".{}.partial", pkg.file_name()));
        let log = dir.join("download.log");
        command::run_logged(
            Command::new(curl)
                .args([
                    "--fail",
                    "--location",
                    "--silent",
                    "--show-error",
                    "--retry",
                    "3",
                    "--proto",
                    "=https,http,file",
                ])
                .arg("--output")
                .arg(&partial)
                .arg(&url),
            "curl",
            &log,
            None,
        )?;
        let got = sha512_of(&partial)?;
        if got != pkg.expected_sha512().unwrap_or_default() {
            let _ = fs::remove_file(&partial);
            let got = base64::engine::general_purpose::STANDARD.encode(got);
            return Err(NpmError::Integrity { url, got });
        }
        fs::rename(&partial, &path).map_err(PathIoError::on("rename", &path))?;
        Ok(path)
    }
}

/// Unpacks `tarball`'s `package/` folder into `tree` + `into` (owned by the
/// caller, modes as packed).
pub fn unpack(tarball: &Path, tree: &Path, into: &str, log: &Path) -> Result<(), NpmError> {
    let dest = tree.join(into.trim_start_matches('/'));
    fs::create_dir_all(&dest).map_err(PathIoError::on("create", &dest))?;
    let tar = command::find_tool("tar", "`apt-get install tar`")?;
    command::run_logged(
        Command::new(tar)
            .arg("--extract")
            .arg("--gzip")
            .arg("--file")
            .arg(tarball)
            .arg("--directory")
            .arg(&dest)
            .args(["--strip-components=1", "--no-same-owner", "--no-overwrite-dir"]),
        "tar",
        log,
        None,
    )?;
    Ok(())
}

fn sha512_of(path: &Path) -> Result<Vec<u8>, PathIoError> {
    let mut file = File::open(path).map_err(PathIoError::on("open", path))?;
    let mut hash = Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf).map_err(PathIoError::on("read", path))? {
            0 => return Ok(hash.finalize().to_vec()),
            n => hash.update(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(package: &str, version: &str, into: &str) -> NpmPackage {
        let integrity = format!("sha512-{}", base64::engine::general_purpose::STANDARD.encode([7u8; 64]));
        NpmPackage { package: package.into(), version: version.into(), integrity, into: into.into() }
    }

    #[test]
    fn tarball_addresses_follow_the_registry_layout() {
        let scoped = pkg("@openai/codex", "0.171.0-linux-x64", "/opt/codex");
        assert_eq!(
            scoped.tarball_url("https://registry.npmjs.org/"),
            "https://registry.npmjs.org/@openai/codex/-/codex-0.171.0-linux-x64.tgz"
        );
        assert_eq!(scoped.file_name(), "openai+codex-0.171.0-linux-x64.tgz");
        let plain = pkg("npm", "10.9.9", "/usr/local/lib/node_modules/npm");
        assert_eq!(plain.tarball_url("http://127.0.0.1:4873"), "http://127.0.0.1:4873/npm/-/npm-10.9.9.tgz");
    }

    #[test]
    fn recipes_with_unsafe_fields_are_refused() {
        assert!(pkg("@openai/codex", "1.0.0", "/opt/x").validate().is_ok());
        for bad in [
            pkg("@openai", "1.0.0", "/opt/x"),
            pkg("../etc", "1.0.0", "/opt/x"),
            pkg("a b", "1.0.0", "/opt/x"),
            pkg("ok", "^1.0.0", "/opt/x"),
            pkg("ok", "1.0.0/../..", "/opt/x"),
            pkg("ok", "1.0.0", "opt/x"),
            pkg("ok", "1.0.0", "/opt/../../x"),
            NpmPackage { integrity: "sha1-abc".into(), ..pkg("ok", "1", "/x") },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_a_download_with_the_pinned_hash_enters_the_cache() {
        // A stand-in registry on the file system, fetched by the real curl.
        let tmp = tempfile::tempdir().unwrap();
        let registry = tmp.path().join("registry");
        fs::create_dir_all(registry.join("demo/-")).unwrap();
        fs::write(registry.join("demo/-/demo-1.0.0.tgz"), b"the real tarball").unwrap();
        let cache = ImageCache::open(tmp.path().join("cache")).unwrap();
        let url = format!("file://{}", registry.display());
        let silent = &super::super::progress::Silent;

        let tampered = pkg("demo", "1.0.0", "/opt/demo");
        let err = with_registry(&url, || cache.npm_tarball(&tampered, silent)).unwrap_err();
        assert!(matches!(err, NpmError::Integrity { .. }), "{err}");
        assert!(!cache.root().join("downloads/npm").join(tampered.file_name()).exists());

        let sha = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(b"the real tarball"));
        let pinned = NpmPackage { integrity: format!("sha512-{sha}"), ..tampered };
        let path = with_registry(&url, || cache.npm_tarball(&pinned, silent)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"the real tarball");
        // A cached file that was altered afterwards is fetched again.
        fs::write(&path, b"altered").unwrap();
        let again = with_registry(&url, || cache.npm_tarball(&pinned, silent)).unwrap();
        assert_eq!(fs::read(again).unwrap(), b"the real tarball");
    }

    fn with_registry<T>(url: &str, f: impl FnOnce() -> T) -> T {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("MOAT_NPM_REGISTRY", url);
        let out = f();
        std::env::remove_var("MOAT_NPM_REGISTRY");
        out
    }
}
