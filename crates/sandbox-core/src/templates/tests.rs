//! Templates through the [`Manager`], with real state disks and no VM: what a
//! guest wrote is copied as bytes and never read as a file system.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use moat_images::{RecipeHash, TemplateDigests};

use super::*;
use crate::manager::{GuestImages, ImageProvider, Manager, ManagerError, SupervisorCommand};
use crate::paths::Home;
use crate::spec::CreateRequest;

/// Images of one generation of recipes (a Moat upgrade makes another); none
/// can boot here.
#[derive(Debug)]
struct Recipes(&'static str);

impl ImageProvider for Recipes {
    fn images(&self, _agent: &str) -> Result<GuestImages, Box<dyn std::error::Error + Send + Sync>> {
        Err("unit tests boot no guest".into())
    }

    fn digests(&self, agent: &str) -> Result<TemplateDigests, Box<dyn std::error::Error + Send + Sync>> {
        let base = RecipeHash::new(self.0).finish();
        let layer = (agent != "shell").then(|| RecipeHash::new(self.0).field("agent", agent).finish());
        Ok(TemplateDigests { base, layer, built: true })
    }
}

struct Installation {
    manager: Manager,
    _home: tempfile::TempDir,
    workspace: tempfile::TempDir,
}

fn installation(recipes: &'static str) -> Installation {
    let home = tempfile::tempdir().unwrap();
    let supervisor = SupervisorCommand { program: "/bin/false".into(), args: vec![] };
    let manager = Manager::open(Home::at(home.path().join("moat")), supervisor, Box::new(Recipes(recipes))).unwrap();
    Installation { manager, _home: home, workspace: tempfile::tempdir().unwrap() }
}

impl Installation {
    fn create(&self, name: &str, template: Option<&str>) -> String {
        let req = CreateRequest {
            name: Some(name.into()),
            agent: if template.is_some() { String::new() } else { "shell".into() },
            template: template.map(String::from),
            workspace: self.workspace.path().into(),
            disk: Some("1g".into()),
            memory: Some("256m".into()),
            ..Default::default()
        };
        self.manager.create(&req, Path::new("/")).unwrap().id
    }

    fn state_disk(&self, id: &str) -> std::path::PathBuf {
        self.manager.home().sandbox_dir(id).join("state.ext4")
    }

    fn save(&self, sandbox: &str, name: &str) -> Result<TemplateInfo, ManagerError> {
        let req = SaveRequest { sandbox: sandbox.into(), name: name.into(), ..Default::default() };
        self.manager.save_template(&req)
    }
}

/// Overwrites a state disk the way a hostile guest may: no file system at
/// all, bytes at scattered places, the rest holes.
fn scribble(disk: &Path) -> Vec<(u64, Vec<u8>)> {
    let f = File::create(disk).unwrap();
    f.set_len(1 << 30).unwrap();
    let writes: Vec<(u64, Vec<u8>)> = [0u64, 8192, 7 << 20, (1 << 30) - 4096]
        .iter()
        .enumerate()
        .map(|(i, &at)| (at, (0..4096u32).map(|b| (b * 31 + i as u32 * 7 + 1) as u8).collect()))
        .collect();
    for (at, data) in &writes {
        f.write_all_at(data, *at).unwrap();
    }
    writes
}

fn holds(file: &Path, writes: &[(u64, Vec<u8>)]) {
    let f = File::open(file).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 30, "{}", file.display());
    for (at, data) in writes {
        let mut got = vec![0u8; data.len()];
        f.read_exact_at(&mut got, *at).unwrap();
        assert!(got == *data, "{}: other bytes at {at}", file.display());
    }
    assert!(sparse::allocated(file) < 1 << 20, "{}: holes kept", file.display());
}

/// Invariant: the host never interprets a disk a guest wrote. A state disk
/// that holds no file system at all is saved, exported and imported all the
/// same, byte for byte, with its holes.
#[test]
fn a_disk_the_guest_wrote_is_only_copied() {
    let moat = installation("recipes-1");
    let id = moat.create("src", None);
    let writes = scribble(&moat.state_disk(&id));

    let saved = moat.save("src", "frozen").unwrap();
    assert_eq!((saved.agent.as_str(), saved.layers, saved.same_base), ("shell", 1, Some(true)));
    assert_eq!(saved.source_sandbox.as_deref(), Some("src"));
    let store = moat.manager.templates();
    let layer = store.dir("frozen").join(layer_file(0));
    holds(&layer, &writes);
    let disks = store.layer_disks(&store.get("frozen").unwrap());
    assert_eq!(disks[0].dir.as_deref(), Some(Path::new(SAVED_LAYER_DIR)));

    let export = moat.workspace.path().join("frozen.moat");
    let exported = moat.manager.export_template("frozen", &export).unwrap();
    assert!(exported.bytes < 1 << 20, "{} bytes: holes stay out of the export", exported.bytes);

    let other = installation("recipes-1");
    let req = ImportRequest { file: export.clone(), name: Some("thawed".into()), ..Default::default() };
    let imported = other.manager.import_template(&req).unwrap();
    assert_eq!((imported.name.as_str(), imported.same_base), ("thawed", Some(true)));
    holds(&other.manager.templates().dir("thawed").join(layer_file(0)), &writes);
    let again = other.manager.import_template(&req).unwrap_err().to_string();
    assert!(again.contains("a template named \"thawed\" exists"), "{again}");
    other.manager.import_template(&ImportRequest { force: true, ..req }).unwrap();
}

#[test]
fn a_sandbox_made_from_a_template_stacks_its_layer_on_the_template_s() {
    let moat = installation("recipes-1");
    let first = moat.create("first", None);
    scribble(&moat.state_disk(&first));
    moat.save("first", "base-tpl").unwrap();

    let second = moat.create("second", Some("base-tpl"));
    let spec = moat.manager.get("second").unwrap().spec;
    assert_eq!((spec.agent.as_str(), spec.template.as_deref()), ("shell", Some("base-tpl")));
    let writes = scribble(&moat.state_disk(&second));
    let chained = moat.save("second", "chained").unwrap();
    assert_eq!((chained.layers, chained.parent.as_deref()), (2, Some("base-tpl")));

    let store = moat.manager.templates();
    let inode = |t: &str, i| std::fs::metadata(store.dir(t).join(layer_file(i))).unwrap().ino();
    assert_eq!(inode("base-tpl", 0), inode("chained", 0), "the parent's layer is shared, not copied");
    holds(&store.dir("chained").join(layer_file(1)), &writes);

    // A template a sandbox boots from stays; the message names who uses it.
    let err = moat.manager.remove_template("base-tpl").unwrap_err().to_string();
    assert!(err.contains("used by second") && err.contains("moat rm second"), "{err}");
    let replace = SaveRequest { sandbox: "first".into(), name: "base-tpl".into(), force: true, ..Default::default() };
    let err = moat.manager.save_template(&replace).unwrap_err().to_string();
    assert!(err.contains("used by second"), "replacing it is refused too: {err}");
    moat.manager.remove("second", true).unwrap();
    moat.manager.remove_template("base-tpl").unwrap();
    // The chained template keeps its own link to the first layer.
    assert_eq!(std::fs::metadata(store.dir("chained").join(layer_file(0))).unwrap().len(), 1 << 30);
    assert_eq!(moat.manager.template("chained").unwrap().layers, 2);
}

#[test]
fn names_shipped_templates_and_missing_ones_are_refused_with_the_reason() {
    let moat = installation("recipes-1");
    moat.create("src", None);
    let refused = |r: Result<TemplateInfo, ManagerError>| r.unwrap_err().to_string();
    assert!(refused(moat.save("src", "Bad_Name")).contains("invalid template name"));
    assert!(refused(moat.save("src", "claude")).contains("a template Moat ships"));
    assert!(refused(moat.save("nope", "x")).contains("no sandbox named \"nope\""));
    let err = moat.manager.remove_template("shell").unwrap_err().to_string();
    assert!(err.contains("can't be removed"), "{err}");
    let err = moat.manager.export_template("missing", Path::new("/tmp/x.moat")).unwrap_err().to_string();
    assert!(err.contains("no template named \"missing\""), "{err}");
    let req = CreateRequest {
        template: Some("missing".into()),
        workspace: moat.workspace.path().into(),
        ..Default::default()
    };
    let err = moat.manager.create(&req, Path::new("/")).unwrap_err().to_string();
    assert!(err.contains("no template named \"missing\""), "{err}");
    moat.save("src", "mine").unwrap();
    let other_agent = CreateRequest { agent: "claude".into(), template: Some("mine".into()), ..req };
    let err = moat.manager.create(&other_agent, Path::new("/")).unwrap_err().to_string();
    assert!(err.contains("runs the shell agent, not claude"), "{err}");
    let listed: Vec<String> = moat.manager.list_templates().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(listed.first().map(String::as_str), Some("shell"));
    assert_eq!(listed.last().map(String::as_str), Some("mine"));
}

#[test]
fn an_import_made_over_other_images_is_refused_unless_asked_for() {
    let old = installation("recipes-1");
    old.create("src", None);
    scribble(&old.state_disk(&old.manager.get("src").unwrap().id));
    old.save("src", "old-tpl").unwrap();
    let export = old.workspace.path().join("old.moat");
    old.manager.export_template("old-tpl", &export).unwrap();

    let upgraded = installation("recipes-2");
    let req = ImportRequest { file: export, ..Default::default() };
    let err = upgraded.manager.import_template(&req).unwrap_err().to_string();
    assert!(err.contains("was made over shell's images") && err.contains("--other-base"), "{err}");
    assert!(!upgraded.manager.templates().exists("old-tpl"), "nothing was installed");
    let imported = upgraded.manager.import_template(&ImportRequest { other_base: true, ..req }).unwrap();
    assert_eq!(imported.same_base, Some(false), "ls says so");
}

#[test]
fn a_programs_template_installs_them_with_their_launch() {
    let moat = installation("recipes-1");
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("kiro-cli");
    std::fs::copy(std::env::current_exe().unwrap(), &program).unwrap();
    let req = ProgramsRequest { name: "kiro".into(), programs: vec![program.clone()], ..Default::default() };
    let made = moat.manager.programs_template(&req).unwrap();
    assert_eq!(made.agent, "shell");
    let launch = made.launch.unwrap();
    assert_eq!(launch.argv, ["kiro-cli", "chat", "--trust-all-tools"]);
    let store = moat.manager.templates();
    let disks = store.layer_disks(&store.get("kiro").unwrap());
    assert_eq!(disks[0].dir, None, "the programs' image is the layer from its root");

    let mut template = moat_images::Template::builtin("shell").unwrap();
    launch.apply(&mut template);
    assert_eq!(template.launch_argv(&["--no-interactive".into(), "hi".into()], false).unwrap()[..3], launch.argv);
    assert!(template.launch_argv(&[], false).is_err(), "without a terminal it needs its batch flag");
    // Over a template whose flags follow a subcommand, the user's argv is taken as given.
    let mut over_opencode = moat_images::Template::builtin("opencode").unwrap();
    launch.apply(&mut over_opencode);
    let argv = over_opencode.launch_argv(&["run".into()], true).unwrap();
    assert_eq!(argv, ["kiro-cli", "chat", "--trust-all-tools", "run"]);

    let script = dir.path().join("agent.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let bad = ProgramsRequest { name: "s".into(), programs: vec![script], ..Default::default() };
    let err = crate::daemon::error_chain(&moat.manager.programs_template(&bad).unwrap_err());
    assert!(err.contains("it is a script"), "{err}");
    std::fs::rename(&program, dir.path().join("my-agent")).unwrap();
    let unknown =
        ProgramsRequest { name: "m".into(), programs: vec![dir.path().join("my-agent")], ..Default::default() };
    let err = moat.manager.programs_template(&unknown).unwrap_err().to_string();
    assert!(err.contains("--launch"), "{err}");
}

#[test]
fn a_chain_stops_where_a_guest_could_no_longer_boot_it() {
    let moat = installation("recipes-1");
    moat.create("s0", None);
    let mut from = None;
    for i in 0..MAX_LAYERS {
        let name = format!("t{i}");
        moat.save(&format!("s{i}"), &name).unwrap();
        moat.create(&format!("s{}", i + 1), Some(&name));
        from = Some(name);
    }
    assert_eq!(moat.manager.template(from.as_deref().unwrap()).unwrap().layers, MAX_LAYERS);
    let err = moat.save(&format!("s{MAX_LAYERS}"), "one-too-many").unwrap_err().to_string();
    assert!(err.contains(&format!("{} layers of its own", MAX_LAYERS + 1)), "{err}");
    assert!(!moat.manager.templates().exists("one-too-many"));
}

#[test]
fn a_disk_whose_guest_was_killed_is_not_saved() {
    let moat = installation("recipes-1");
    let id = moat.create("killed", None);
    let run = crate::supervisor::RunDir::new(moat.manager.home().sandbox_dir(&id).join("run"));
    let mut status = run.read_status();
    status.error = Some("qemu exited (signal: 9 (SIGKILL))".into());
    run.write_status(&status).unwrap();
    let err = moat.save("killed", "half").unwrap_err().to_string();
    assert!(
        err.contains("did not shut down cleanly") && err.contains("moat start killed && moat stop killed"),
        "{err}"
    );
    // A clean stop writes a status without an error.
    status.error = None;
    run.write_status(&status).unwrap();
    moat.save("killed", "whole").unwrap();
}
