//! The template operations of [`Manager`]: they take the same locks as the
//! sandbox lifecycle (a sandbox's name lock, then the store's lock), so a
//! template is never saved from a running disk, removed or replaced under a
//! sandbox that boots from it, or half written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::TemplateError;
use super::manifest::{check_name, layer_file, BaseDigests, Launch, Layer, LayerKind, Manifest, FORMAT, MAX_LAYERS};
use super::programs::{default_launch, read_program};
use super::store::{Staging, TemplateStore};
use super::{sparse, transfer};
use crate::backend::LayerDisk;
use crate::manager::{now, stop_run, Manager, ManagerError};
use crate::spec::CreateRequest;

/// A template as `moat template ls` shows it: one Moat ships, or one a user made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// Its name.
    pub name: String,
    /// Whether Moat ships it (built from a recipe) rather than a user made it.
    pub builtin: bool,
    /// One line about it.
    pub description: String,
    /// The shipped template whose agent it runs (its own name for one Moat ships).
    pub agent: String,
    /// Shipped: whether its images are in the cache. User: whether its agent's are.
    pub built: bool,
    /// User: bytes its files take on disk.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// User: its own layers.
    #[serde(default)]
    pub layers: usize,
    /// User: the template the source sandbox was made from.
    #[serde(default)]
    pub parent: Option<String>,
    /// User: the sandbox whose disk it holds.
    #[serde(default)]
    pub source_sandbox: Option<String>,
    /// User: seconds since the epoch.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// User: whether it was made over the images this Moat has for its agent
    /// (`false` after an upgrade changed them, or for an import from elsewhere).
    #[serde(default)]
    pub same_base: Option<bool>,
    /// User: how its agent starts when not as the shipped template says.
    #[serde(default)]
    pub launch: Option<Launch>,
    /// User: the sandboxes that boot from it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `moat template save SANDBOX NAME`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveRequest {
    /// The sandbox whose disk becomes the template's top layer.
    pub sandbox: String,
    /// The new template's name.
    pub name: String,
    /// One line about it.
    #[serde(default)]
    pub description: Option<String>,
    /// Stop the sandbox first if it runs.
    #[serde(default)]
    pub stop: bool,
    /// Replace a template of that name (no sandbox may use it).
    #[serde(default)]
    pub force: bool,
}

/// `moat template import FILE`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The export (absolute path).
    pub file: PathBuf,
    /// Its name here; the exported name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Replace a template of that name (no sandbox may use it).
    #[serde(default)]
    pub force: bool,
    /// Accept layers made over other images than this Moat's.
    #[serde(default)]
    pub other_base: bool,
}

/// `moat template programs NAME --program PATH…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramsRequest {
    /// The new template's name.
    pub name: String,
    /// Host executables (absolute paths), installed as `/usr/local/bin/<file name>`.
    pub programs: Vec<PathBuf>,
    /// How the agent starts; Moat's default for a program it knows when absent.
    #[serde(default)]
    pub launch: Option<Vec<String>>,
    /// Arguments of which any one runs it without a terminal.
    #[serde(default)]
    pub batch: Vec<String>,
    /// The shipped template it goes over (`shell` when absent).
    #[serde(default)]
    pub from: Option<String>,
    /// One line about it.
    #[serde(default)]
    pub description: Option<String>,
    /// Replace a template of that name (no sandbox may use it).
    #[serde(default)]
    pub force: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// The template.
    pub name: String,
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
}

impl Manager {
    /// Every template: Moat's own, then the users', by name.
    pub fn list_templates(&self) -> Result<Vec<TemplateInfo>, ManagerError> {
        let shipped = moat_images::builtin_names().into_iter().map(String::from);
        shipped.chain(self.templates().names()).map(|name| self.template(&name)).collect()
    }

    /// One template, shipped or user-made.
    pub fn template(&self, name: &str) -> Result<TemplateInfo, ManagerError> {
        if moat_images::builtin_names().contains(&name) {
            let template = moat_images::Template::builtin(name).map_err(|e| images_error(name, e.into()))?;
            return Ok(TemplateInfo {
                name: name.into(),
                builtin: true,
                description: template.spec.description,
                agent: name.into(),
                built: self.image_provider().digests(name).is_ok_and(|d| d.built),
                size_bytes: None,
                layers: 0,
                parent: None,
                source_sandbox: None,
                created_at: None,
                same_base: None,
                launch: None,
                used_by: Vec::new(),
            });
        }
        let store = self.templates();
        let m = store.get(name)?;
        let ours = self.image_provider().digests(&m.agent).ok();
        Ok(TemplateInfo {
            name: m.name.clone(),
            builtin: false,
            description: m.description.clone(),
            agent: m.agent.clone(),
            built: ours.is_some_and(|d| d.built),
            size_bytes: Some(store.allocated(name)),
            layers: m.layers.len(),
            parent: m.parent.clone(),
            source_sandbox: m.source_sandbox.clone(),
            created_at: Some(m.created_at),
            same_base: ours.map(|d| base_digests(&d) == m.base),
            launch: m.launch.clone(),
            used_by: self.template_users(name)?,
        })
    }

    /// Freezes a stopped sandbox's disk — its writable layer over its
    /// template — as a new template. The disk is copied as bytes (holes kept);
    /// nothing on the host reads what is in it.
    pub fn save_template(&self, req: &SaveRequest) -> Result<TemplateInfo, ManagerError> {
        check_name(&req.name).map_err(TemplateError::from)?;
        let guard = self.lock_name(&req.sandbox);
        let _held = guard.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.record(&req.sandbox)?;
        let run = self.run_dir(&record.id);
        if run.supervisor_alive() {
            if !req.stop {
                return Err(TemplateError::Running(req.sandbox.clone()).into());
            }
            stop_run(&req.sandbox, &run)?;
        }
        // A guest that powered off remounted its disk read-only: its journal is
        // clean. After a kill (or a failed start) it may not be.
        if let Some(why) = run.read_status().error {
            return Err(TemplateError::Unclean { sandbox: req.sandbox.clone(), why }.into());
        }
        let store = self.templates();
        let parent = match &record.spec.template {
            Some(t) => Some(store.get(t).map_err(|e| match e {
                TemplateError::NotFound(_) => {
                    TemplateError::ParentGone { sandbox: req.sandbox.clone(), template: t.clone() }
                }
                e => e,
            })?),
            None => None,
        };
        let base = match &parent {
            Some(p) => p.base.clone(),
            None => base_digests(&self.digests(&record.spec.agent)?),
        };
        let mut layers = parent.as_ref().map(|p| p.layers.clone()).unwrap_or_default();
        // The agent's own layer takes a device too.
        let room = MAX_LAYERS - usize::from(base.layer.is_some());
        if layers.len() >= room {
            return Err(TemplateError::TooManyLayers { layers: layers.len() + 1, max: room }.into());
        }
        let disk = self.home().sandbox_dir(&record.id).join("state.ext4");
        check_space(&store, sparse::allocated(&disk))?;
        let staging = store.staging()?;
        if let Some(p) = &parent {
            link_layers(&store.dir(&p.name), staging.path(), p.layers.len())?;
        }
        let file = staging.path().join(layer_file(layers.len()));
        let copied = sparse::copy_sparse(&disk, &file).map_err(TemplateError::io("copy the disk of", &disk))?;
        let created_at = now();
        layers.push(Layer { kind: LayerKind::Sandbox, source: req.sandbox.clone(), bytes: copied.size, created_at });
        let manifest = Manifest {
            format: FORMAT,
            name: req.name.clone(),
            description: req.description.clone().unwrap_or_default(),
            agent: record.spec.agent.clone(),
            base,
            launch: parent.as_ref().and_then(|p| p.launch.clone()),
            layers,
            parent: record.spec.template.clone(),
            created_at,
            source_sandbox: Some(req.sandbox.clone()),
        };
        self.install(staging, &manifest, req.force)?;
        self.template(&req.name)
    }

    /// Removes a user template no sandbox boots from.
    pub fn remove_template(&self, name: &str) -> Result<(), ManagerError> {
        refuse_shipped(name, "it can't be removed")?;
        let store = self.templates();
        let lock = store.lock()?;
        if !store.dir(name).is_dir() {
            return Err(TemplateError::NotFound(name.to_string()).into());
        }
        self.refuse_in_use(name)?;
        Ok(store.remove(&lock, name)?)
    }

    /// Writes template `name` to the new file `file` (absolute): its manifest
    /// and layers, zstd-compressed.
    pub fn export_template(&self, name: &str, file: &Path) -> Result<Exported, ManagerError> {
        refuse_shipped(name, "export a template of your own (`moat template save`)")?;
        let file = absolute(file)?;
        let store = self.templates();
        let _lock = store.lock()?;
        let manifest = store.get(name)?;
        let bytes = transfer::export(&manifest, &store.dir(name), &file)?;
        Ok(Exported { name: name.to_string(), file, bytes })
    }

    /// Imports an export: listed and checked first, then extracted into a
    /// fresh folder and moved into place.
    pub fn import_template(&self, req: &ImportRequest) -> Result<TemplateInfo, ManagerError> {
        let file = absolute(&req.file)?;
        let listing = transfer::list(&file)?;
        let name = req.name.clone().unwrap_or_else(|| listing.manifest.name.clone());
        check_name(&name).map_err(TemplateError::from)?;
        let theirs = &listing.manifest.base;
        let ours = base_digests(&self.digests(&listing.manifest.agent)?);
        if *theirs != ours && !req.other_base {
            let short = |d: &BaseDigests| {
                let layer = d.layer.as_deref().map(|l| format!(" + layer {}", &l[..16])).unwrap_or_default();
                format!("base {}{layer}", &d.rootfs[..16])
            };
            return Err(TemplateError::OtherBase {
                name,
                agent: listing.manifest.agent.clone(),
                theirs: short(theirs),
                ours: short(&ours),
            }
            .into());
        }
        let store = self.templates();
        check_space(&store, listing.data_bytes())?;
        let staging = store.staging()?;
        let extracted = transfer::extract(&file, staging.path())?;
        if extracted.manifest != listing.manifest {
            let source = std::io::Error::other("it changed while being read");
            return Err(TemplateError::Io { what: "import", path: file, source }.into());
        }
        let manifest = Manifest { name: name.clone(), ..extracted.manifest };
        self.install(staging, &manifest, req.force)?;
        self.template(&name)
    }

    /// A template of host programs over a shipped template (`shell` by default).
    pub fn programs_template(&self, req: &ProgramsRequest) -> Result<TemplateInfo, ManagerError> {
        check_name(&req.name).map_err(TemplateError::from)?;
        let from = req.from.clone().unwrap_or_else(|| "shell".into());
        moat_images::Template::builtin(&from).map_err(|e| images_error(&from, e.into()))?;
        let programs = req.programs.iter().map(|p| read_program(p)).collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = programs.iter().map(|p| p.name.clone()).collect();
        let launch = match req.launch.as_ref().filter(|argv| !argv.is_empty()) {
            Some(argv) => Launch { argv: argv.clone(), batch: req.batch.clone() },
            None => {
                let mut known = default_launch(&names).ok_or_else(|| TemplateError::NoLaunch(names.join(", ")))?;
                if !req.batch.is_empty() {
                    known.batch = req.batch.clone();
                }
                known
            }
        };
        let base = base_digests(&self.digests(&from)?);
        let store = self.templates();
        check_space(&store, programs.iter().map(|p| p.bytes.len() as u64).sum())?;
        let staging = store.staging()?;
        let image = staging.path().join(layer_file(0));
        let log = store.root().join(format!(".{}.build.log", req.name));
        moat_images::binary_layer(&programs, &image, &log).map_err(TemplateError::from)?;
        let _ = std::fs::remove_file(&log);
        let bytes = std::fs::metadata(&image).map(|m| m.len()).map_err(TemplateError::io("read", &image))?;
        let created_at = now();
        let manifest = Manifest {
            format: FORMAT,
            name: req.name.clone(),
            description: req.description.clone().unwrap_or_else(|| format!("{} over {from}", names.join(", "))),
            agent: from,
            base,
            launch: Some(launch),
            layers: vec![Layer { kind: LayerKind::Programs, source: names.join(" "), bytes, created_at }],
            parent: None,
            created_at,
            source_sandbox: None,
        };
        self.install(staging, &manifest, req.force)?;
        self.template(&req.name)
    }

    /// A create request with the agent of its template filled in (or checked).
    pub(crate) fn with_template_agent(&self, req: &CreateRequest) -> Result<CreateRequest, ManagerError> {
        let Some(name) = &req.template else { return Ok(req.clone()) };
        let m = self.templates().get(name)?;
        if !req.agent.is_empty() && req.agent != m.agent {
            return Err(
                TemplateError::OtherAgent { name: name.clone(), agent: m.agent, asked: req.agent.clone() }.into()
            );
        }
        Ok(CreateRequest { agent: m.agent, ..req.clone() })
    }

    /// The user layers sandbox `sandbox` boots with from its template.
    pub(crate) fn template_layers(&self, sandbox: &str, template: &str) -> Result<Vec<LayerDisk>, ManagerError> {
        let store = self.templates();
        let m = store.get(template).map_err(|e| match e {
            TemplateError::NotFound(_) => {
                TemplateError::ParentGone { sandbox: sandbox.to_string(), template: template.to_string() }
            }
            e => e,
        })?;
        Ok(store.layer_disks(&m))
    }

    fn install(&self, staging: Staging, manifest: &Manifest, replace: bool) -> Result<(), ManagerError> {
        manifest.check().map_err(|source| TemplateError::Manifest { name: manifest.name.clone(), source })?;
        let store = self.templates();
        let lock = store.lock()?;
        if replace && store.exists(&manifest.name) {
            self.refuse_in_use(&manifest.name)?;
        }
        Ok(store.install(&lock, staging, manifest, replace)?)
    }

    fn template_users(&self, name: &str) -> Result<Vec<String>, ManagerError> {
        let records = self.store().list()?;
        Ok(records.into_iter().filter(|r| r.spec.template.as_deref() == Some(name)).map(|r| r.spec.name).collect())
    }

    fn refuse_in_use(&self, name: &str) -> Result<(), ManagerError> {
        let sandboxes = self.template_users(name)?;
        if sandboxes.is_empty() {
            Ok(())
        } else {
            Err(TemplateError::InUse { name: name.to_string(), sandboxes }.into())
        }
    }

    fn digests(&self, agent: &str) -> Result<moat_images::TemplateDigests, TemplateError> {
        self.image_provider().digests(agent).map_err(|source| images_error(agent, source))
    }
}

fn images_error(agent: &str, source: Box<dyn std::error::Error + Send + Sync>) -> TemplateError {
    TemplateError::Images { agent: agent.to_string(), source }
}

fn base_digests(d: &moat_images::TemplateDigests) -> BaseDigests {
    BaseDigests { rootfs: d.base.hex(), layer: d.layer.map(|l| l.hex()) }
}

fn refuse_shipped(name: &str, what: &'static str) -> Result<(), TemplateError> {
    if moat_images::builtin_names().contains(&name) {
        return Err(TemplateError::Shipped { name: name.to_string(), what });
    }
    Ok(())
}

fn absolute(file: &Path) -> Result<PathBuf, TemplateError> {
    if file.is_absolute() {
        Ok(file.to_path_buf())
    } else {
        Err(TemplateError::io("use", file)(std::io::Error::other("the path must be absolute")))
    }
}

/// The parent's layer files, hard-linked (copied where a link can't be made).
fn link_layers(from: &Path, to: &Path, count: usize) -> Result<(), TemplateError> {
    for i in 0..count {
        let (src, dst) = (from.join(layer_file(i)), to.join(layer_file(i)));
        if std::fs::hard_link(&src, &dst).is_err() {
            sparse::copy_sparse(&src, &dst).map_err(TemplateError::io("copy", &src))?;
        }
    }
    Ok(())
}

/// Refuses when the store's filesystem has less than `need` plus 1 GiB free.
fn check_space(store: &TemplateStore, need: u64) -> Result<(), TemplateError> {
    const SPARE: u64 = 1 << 30;
    let dir = store.root().ancestors().find(|a| a.exists()).unwrap_or(Path::new("/")).to_path_buf();
    let st =
        nix::sys::statvfs::statvfs(&dir).map_err(|e| TemplateError::io("read the free space of", &dir)(e.into()))?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    if need.saturating_add(SPARE) > free {
        return Err(TemplateError::NoSpace { dir, need: need >> 20, free: free >> 20 });
    }
    Ok(())
}
