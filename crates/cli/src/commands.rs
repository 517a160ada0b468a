//! One function per subcommand.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use moat_sandbox_core::agent::{ExecRequest, WinSize};
use moat_sandbox_core::daemon::{self, ClientError, DaemonClient, DaemonCommand};
use moat_sandbox_core::env::{self, Env};
use moat_sandbox_core::images::{CachedImages, Template};
use moat_sandbox_core::manager::{Manager, SandboxInfo, SupervisorCommand};
use moat_sandbox_core::paths::Home;
use moat_sandbox_core::session;
use moat_sandbox_core::spec::{self, CreateRequest, SandboxSpec};
use moat_sandbox_core::supervisor::{self, Phase};

use crate::args::{Command, CreateArgs, DaemonCommand as DaemonCmd, ExecArgs, ImageCommand, RunArgs, SandboxOpts};
use crate::attach::{attach, attach_detachable, is_interactive, parse_env, terminal_size, Attached};

pub fn dispatch(cmd: Command) -> Result<i32> {
    let home = Home::from_env();
    match cmd {
        Command::Supervise { run_dir } => Ok(supervisor::supervise_process(&run_dir)),
        Command::Daemon { command } => daemon_cmd(&home, command),
        Command::Completions { shell } => {
            let mut cli = <crate::args::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli, "moat", &mut script);
            // The internal `__supervise` is hidden from help; keep it out of the offered words too.
            let script = String::from_utf8_lossy(&script).replace(" __supervise\"", "\"");
            print!("{script}");
            Ok(0)
        }
        Command::Version => {
            println!("moat {}", env!("CARGO_PKG_VERSION"));
            match DaemonClient::new(home.daemon_socket()).version() {
                Ok(v) => println!("daemon {} (API v{}, pid {})", v.version, v.api, v.pid),
                Err(_) => println!("daemon not running"),
            }
            Ok(0)
        }
        Command::Image { command: ImageCommand::Build { mut templates, all } } => {
            if all {
                templates = moat_sandbox_core::images::builtin_names().into_iter().map(String::from).collect();
            } else if templates.is_empty() {
                templates.push("shell".into());
            }
            let provider = CachedImages::from_env()?;
            for template in &templates {
                let images = provider.ensure(template)?;
                println!("template {template}:");
                println!("  kernel     {}", images.kernel.display());
                println!("  base       {}", images.rootfs.display());
                for layer in &images.layers {
                    println!("  layer      {}", layer.display());
                }
                println!("  initramfs  {}", images.initramfs.display());
            }
            Ok(0)
        }
        Command::Ls { json, quiet } => {
            let list = client(&home)?.list()?;
            // Whether each running sandbox's agent session runs (asked of its guest).
            let sessions: Vec<Option<bool>> = list
                .iter()
                .map(|s| {
                    (s.status.phase == Phase::Running && !quiet)
                        .then(|| session::is_running(&s.vsock_socket).ok())
                        .flatten()
                })
                .collect();
            print_list(&list, &sessions, json, quiet);
            Ok(0)
        }
        Command::Create(a) => create(&home, a),
        Command::Start { names } => each(&names, |n| client(&home)?.start(n).map(drop).map_err(Into::into)),
        Command::Stop { names } => each(&names, |n| client(&home)?.stop(n).map(drop).map_err(Into::into)),
        Command::Rm { force, all, names } => rm(&home, force, all, names),
        Command::Exec(a) => exec(&home, a),
        Command::Attach { name } => attach_cmd(&home, &name),
        Command::Run(a) => run(&home, a),
        Command::Secret { command } => crate::secret::run(&home, command),
        Command::Template { command } => crate::template::run(&home, command),
        Command::Policy { command } => crate::policy::run(&home, command),
        // `committed: true` is `moat diff --committed` once args.rs has the flag.
        Command::Diff { name, committed } => checkpoint_cmd(&home, &name, Review::Diff { committed }),
        Command::Review { name } => checkpoint_cmd(&home, &name, Review::Full),
        Command::Apply { name, squash } => checkpoint_cmd(&home, &name, Review::Apply { squash }),
    }
}

/// A client for this installation's daemon, started on first use.
pub(crate) fn client(home: &Home) -> Result<DaemonClient> {
    let program = std::env::current_exe().context("cannot find the moat executable")?;
    let start = DaemonCommand { program, args: vec!["daemon".into(), "run".into()] };
    Ok(daemon::connect_or_start(home, &start)?)
}

fn daemon_cmd(home: &Home, cmd: DaemonCmd) -> Result<i32> {
    let c = DaemonClient::new(home.daemon_socket());
    match cmd {
        DaemonCmd::Run => {
            let images = CachedImages::from_env()?;
            let manager = Manager::open(home.clone(), SupervisorCommand::current_exe()?, Box::new(images))?;
            daemon::serve(manager)?;
        }
        DaemonCmd::Start => {
            let v = match c.version() {
                Ok(v) => v,
                Err(_) => {
                    let program = std::env::current_exe()?;
                    daemon::start_daemon(home, &DaemonCommand { program, args: vec!["daemon".into(), "run".into()] })?
                }
            };
            println!("moat daemon running (pid {}, socket {})", v.pid, home.daemon_socket().display());
        }
        DaemonCmd::Stop => match c.stop_daemon() {
            Ok(()) => {
                // Wait until the socket is gone so a following `start` doesn't race the old daemon.
                for _ in 0..200 {
                    if c.version().is_err() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                println!("moat daemon stopped (sandboxes keep running)");
            }
            Err(ClientError::Unreachable(..)) => println!("moat daemon is not running"),
            Err(e) => return Err(e.into()),
        },
        DaemonCmd::Status => match c.version() {
            Ok(v) => println!(
                "running: moat {} (API v{}, pid {}), socket {}",
                v.version,
                v.api,
                v.pid,
                home.daemon_socket().display()
            ),
            Err(_) => {
                println!("not running");
                return Ok(1);
            }
        },
    }
    Ok(0)
}

pub(crate) fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = 0;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("moat: error: {n}: {}", crate::chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { crate::MOAT_FAILED })
}

/// The request for `moat run|create [AGENT] PATH…`: with `-t`, the agent is
/// the template's (asked of the daemon) and every word is a path.
fn create_request(
    c: &DaemonClient,
    agent: Option<&str>,
    paths: &[String],
    opts: &SandboxOpts,
    env: Option<Env>,
) -> Result<CreateRequest> {
    let (agent, template, paths) = match &opts.template {
        None => (agent.unwrap_or_default().to_string(), None, paths.to_vec()),
        Some(t) => {
            let paths: Vec<String> = agent.map(String::from).into_iter().chain(paths.iter().cloned()).collect();
            let info = c.template(t)?;
            // `-t claude` is `moat run claude`.
            (info.agent, (!info.builtin).then(|| t.clone()), paths)
        }
    };
    let mut paths = paths.iter();
    Ok(CreateRequest {
        name: opts.name.clone(),
        agent,
        template,
        workspace: PathBuf::from(paths.next().map(String::as_str).unwrap_or(".")),
        mounts: paths.cloned().collect(),
        cpus: opts.cpus,
        memory: opts.memory.clone(),
        disk: opts.disk.clone(),
        backend: opts.backend,
        branch: opts.branch.clone(),
        clone: opts.clone,
        owner: Some(moat_sandbox_core::owner::ShareOwner::invoking()),
        env: env.unwrap_or_default(),
    })
}

/// What `moat run` starts in `spec`'s sandbox: its agent's template, started
/// the way its user template says when that says otherwise.
fn launch_template(c: &DaemonClient, spec: &SandboxSpec) -> Result<Template> {
    let mut template = Template::builtin(&spec.agent)?;
    if let Some(name) = &spec.template {
        if let Some(launch) = c.template(name)?.launch {
            launch.apply(&mut template);
            template.name = name.clone();
        }
    }
    Ok(template)
}

/// The variables `-e` and `--env-file` ask for; `None` when neither is given.
fn requested_env(opts: &SandboxOpts) -> Result<Option<Env>> {
    if opts.env.is_empty() && opts.env_file.is_empty() {
        return Ok(None);
    }
    Ok(Some(env::collect(&opts.env_file, &opts.env, |name| std::env::var_os(name))?))
}

/// A sandbox's variables are set when it is created: `-e`/`--env-file` on one
/// that exists must ask for the ones it has.
fn refuse_another_env(spec: &SandboxSpec, requested: &Env) -> Result<()> {
    let changes = env::Changes::between(&spec.env, requested);
    if changes.is_empty() {
        return Ok(());
    }
    bail!(
        "sandbox {name:?} exists with other variables ({changes}); they are set when a sandbox is created: to \
         change them, remove it (`moat rm {name}`, which deletes its disk) and create it again, or give one \
         command its own with `moat exec -e`",
        name = spec.name
    )
}

fn create(home: &Home, a: CreateArgs) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let c = client(home)?;
    let req = create_request(&c, Some(&a.agent), &a.paths, &a.opts, requested_env(&a.opts)?)?;
    // Validate here first: the user gets the message without a round trip, and nothing is half-made.
    req.resolve(&cwd, spec::HostSize::detect())?;
    crate::policy::ensure_preset_chosen(home)?;
    let info = c.create(&req, &cwd)?;
    if a.quiet {
        println!("{}", info.spec.name);
    } else {
        println!("created sandbox {} ({} at {})", info.spec.name, info.spec.agent, info.spec.workspace.display());
    }
    Ok(0)
}

fn rm(home: &Home, force: bool, all: bool, names: Vec<String>) -> Result<i32> {
    let c = client(home)?;
    let names = if all { c.list()?.into_iter().map(|s| s.spec.name).collect() } else { names };
    if names.is_empty() && !all {
        bail!("name the sandboxes to remove, or use --all");
    }
    each(&names, |n| match c.remove(n, force) {
        Err(ClientError::Api(e)) if force && e.error.code == "not_found" => Ok(()),
        r => r.map_err(Into::into),
    })
}

/// Makes sure the guest images exist, building them here so progress shows on this terminal.
fn ensure_images(agent: &str) -> Result<()> {
    CachedImages::from_env()?.ensure(agent)?;
    Ok(())
}

/// Starts `name` if it isn't running and returns it running.
fn running(c: &DaemonClient, name: &str) -> Result<SandboxInfo> {
    let info = c.get(name)?;
    if info.status.phase == Phase::Running {
        return Ok(info);
    }
    ensure_images(&info.spec.agent)?;
    Ok(c.start(name)?)
}

fn exec(home: &Home, a: ExecArgs) -> Result<i32> {
    let c = client(home)?;
    let info = running(&c, &a.name)?;
    let mut argv = a.command.clone();
    if a.detach {
        // A new session outlives the exec connection (the agent ends the process group when we leave).
        let mut wrapped =
            vec!["sh".into(), "-c".into(), "setsid \"$@\" </dev/null >/dev/null 2>&1 &".into(), "sh".into()];
        wrapped.append(&mut argv);
        argv = wrapped;
    }
    let mut env = sandbox_env(home, &info, &Template::builtin(&info.spec.agent)?)?;
    env.extend(parse_env(&a.env)?);
    let req = ExecRequest {
        argv,
        env,
        cwd: Some(a.workdir.clone().unwrap_or_else(|| info.spec.workspace.to_string_lossy().into_owned())),
        user: a.user.clone(),
        tty: a.tty.then_some(moat_sandbox_core::agent::WinSize { rows: 24, cols: 80 }),
        stdin: false,
    };
    let status = attach(&info.vsock_socket, req, a.interactive && !a.detach)?;
    Ok(status.shell_code())
}

fn run(home: &Home, a: RunArgs) -> Result<i32> {
    let c = client(home)?;
    let cwd = std::env::current_dir()?;
    let interactive = is_interactive();
    let env = requested_env(&a.opts)?;
    // `moat run NAME` attaches to an existing sandbox.
    let existing = match &a.agent {
        Some(word) if a.opts.template.is_none() && a.paths.is_empty() && !spec::AGENTS.contains(&word.as_str()) => {
            Some(word.clone())
        }
        _ => None,
    };
    let name = match existing {
        Some(n) => n,
        None => {
            let req = create_request(&c, a.agent.as_deref(), &a.paths, &a.opts, env.clone())?;
            let spec = req.resolve(&cwd, spec::HostSize::detect())?;
            match c.get(&spec.name) {
                Ok(found)
                    if found.spec.checkpoint_repo.as_ref().unwrap_or(&found.spec.workspace) != &spec.workspace =>
                {
                    bail!(
                        "sandbox {:?} already exists for {}; pick another --name or remove it with `moat rm {}`",
                        spec.name,
                        found.spec.workspace.display(),
                        spec.name
                    )
                }
                Ok(found) if found.spec.template != spec.template => {
                    let from = |t: &Option<String>| match t {
                        Some(t) => format!("template {t}"),
                        None => format!("{}'s own images", found.spec.agent),
                    };
                    bail!(
                        "sandbox {:?} already exists, made from {}, not {}; pick another --name or remove it with \
                         `moat rm {}`",
                        spec.name,
                        from(&found.spec.template),
                        from(&spec.template),
                        spec.name
                    )
                }
                Ok(_) => spec.name,
                Err(ClientError::Api(e)) if e.error.code == "not_found" => {
                    // Refuse before anything is created or built.
                    launch_template(&c, &spec)?.launch_argv(&a.args, interactive)?;
                    crate::policy::ensure_preset_chosen(home)?;
                    ensure_images(&spec.agent)?;
                    c.create(&req, &cwd)?.spec.name
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    if let Some(env) = &env {
        refuse_another_env(&c.get(&name)?.spec, env)?;
    }
    let info = running(&c, &name)?;
    for note in backend_note(&info).into_iter().chain(repository_note(&info)) {
        eprintln!("moat: {note}");
    }
    let template = launch_template(&c, &info.spec)?;
    let argv = template.launch_argv(&a.args, interactive)?;
    let env = sandbox_env(home, &info, &template)?;
    if let Some(note) = credential_note(&template, &env) {
        eprintln!("moat: {note}");
    }
    let cwd = info.spec.workspace.to_string_lossy().into_owned();
    if !interactive {
        let req = ExecRequest { argv, env, cwd: Some(cwd), user: None, tty: None, stdin: true };
        return Ok(attach(&info.vsock_socket, req, true)?.shell_code());
    }
    // On a terminal: in the session that outlives this process.
    if !a.args.is_empty() && session::is_running(&info.vsock_socket)? {
        eprintln!("moat: {name} already runs its agent; attaching to it (the arguments are not used)");
    }
    let size = terminal_size().unwrap_or(WinSize { rows: 24, cols: 80 });
    let req = session::start(&argv, &env, &cwd, size);
    attach_session(&info, req)
}

/// Says so when none of the services the agent reads credentials for has one
/// for this sandbox (it would start, then fail at its first request).
fn credential_note(template: &Template, env: &[(String, String)]) -> Option<String> {
    let services = &template.spec.credentials.services;
    let has = |id: &String| {
        moat_secrets::catalog::service(id).is_some_and(|s| s.env_vars.iter().any(|v| env.iter().any(|(k, _)| k == v)))
    };
    if services.is_empty() || services.iter().any(has) || template.spec.launch.replace_with_args {
        return None;
    }
    Some(format!(
        "no credential for {} yet: store one with `moat secret set -g {}` (the sandbox gets a placeholder; \
         the proxy adds the real one)",
        template.name,
        services.join("` or `moat secret set -g ")
    ))
}

/// `moat attach NAME`: back into the running agent session.
fn attach_cmd(home: &Home, name: &str) -> Result<i32> {
    let c = client(home)?;
    let info = c.get(name)?;
    if info.status.phase != Phase::Running || !session::is_running(&info.vsock_socket)? {
        bail!("{name} runs no agent session; start one with `moat run {name}`");
    }
    if !is_interactive() {
        bail!("attaching needs a terminal");
    }
    attach_session(&info, session::attach(terminal_size().unwrap_or(WinSize { rows: 24, cols: 80 })))
}

fn attach_session(info: &SandboxInfo, req: ExecRequest) -> Result<i32> {
    match attach_detachable(&info.vsock_socket, req, true, true)? {
        Attached::Detached => {
            let name = &info.spec.name;
            eprintln!("\r\nmoat: detached; {name} runs on (`moat attach {name}` returns to it)");
            Ok(0)
        }
        Attached::Exited(status) => {
            Ok(session::take_exit_code(&info.vsock_socket).ok().flatten().unwrap_or(status.shell_code()))
        }
    }
}

/// A live workspace that is no git repository may not become one inside the
/// sandbox (the user's git would later trust what the guest wrote): say so
/// before the agent finds out from `git init`.
fn repository_note(info: &SandboxInfo) -> Option<String> {
    let live = info.spec.checkpoint_repo.is_none();
    let no_repo = std::fs::symlink_metadata(info.spec.workspace.join(".git")).is_err();
    (live && no_repo).then(|| {
        format!(
            "{} is not a git repository, and the sandbox may not make it one (your own git would run what it \
             wrote); run `git init` there first if the agent needs one",
            info.spec.workspace.display()
        )
    })
}

fn backend_note(info: &SandboxInfo) -> Option<String> {
    emulated(info).then(|| {
        "running under QEMU software emulation (TCG): this host has no usable hardware virtualization, and \
         emulation is a weaker boundary than KVM"
            .to_string()
    })
}

fn print_list(list: &[SandboxInfo], sessions: &[Option<bool>], json: bool, quiet: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&list_json(list, sessions)).expect("serializing"));
        return;
    }
    if quiet {
        for s in list {
            println!("{}", s.spec.name);
        }
        return;
    }
    let rows: Vec<[String; 6]> = list
        .iter()
        .zip(sessions)
        .map(|(s, session)| {
            let status = serde_json::to_value(s.status.phase)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            [
                s.spec.name.clone(),
                match &s.spec.template {
                    Some(t) => format!("{} ({t})", s.spec.agent),
                    None => s.spec.agent.clone(),
                },
                status,
                match s.status.backend {
                    Some(b) if emulated(s) => format!("{b} (emulated)"),
                    Some(b) => b.to_string(),
                    None => String::new(),
                },
                if *session == Some(true) { "attachable" } else { "-" }.to_string(),
                s.spec.workspace.display().to_string(),
            ]
        })
        .collect();
    let header = ["SANDBOX", "AGENT", "STATUS", "BACKEND", "SESSION", "WORKSPACE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    if list.iter().any(emulated) {
        eprintln!("moat: {TCG_NOTE}");
    }
}

/// What software emulation means for the boundary, said wherever a sandbox runs under it.
const TCG_NOTE: &str = "an emulated sandbox runs under QEMU's software emulation (TCG), a weaker boundary \
                        than hardware virtualization (KVM): a guest meets far more host code on its way out";

/// Whether `info` runs under software emulation (TCG).
fn emulated(info: &SandboxInfo) -> bool {
    info.status.backend.is_some_and(|b| b.accel == moat_sandbox_core::backend::Accel::Tcg)
}

/// `ls --json`: the API's sandboxes, with the names of their variables
/// (`env_keys`) instead of the values.
fn list_json(list: &[SandboxInfo], sessions: &[Option<bool>]) -> serde_json::Value {
    let entry = |(s, session): (&SandboxInfo, &Option<bool>)| {
        let mut v = serde_json::to_value(s).expect("serializing");
        if let Some(fields) = v.as_object_mut() {
            fields.remove("env");
            fields.insert("env_keys".into(), s.spec.env.keys().map(String::as_str).collect());
            // true: an agent session runs (`moat attach`); null: not running or unknown.
            fields.insert("session".into(), serde_json::to_value(session).expect("serializing"));
            // true: it runs under software emulation (TCG), a weaker boundary than KVM; null: not running.
            let emulated = s.status.backend.map(|_| emulated(s));
            fields.insert("emulated".into(), serde_json::to_value(emulated).expect("serializing"));
        }
        v
    };
    list.iter().zip(sessions).map(entry).collect()
}

/// `Diff` shows everything against the base, working tree included, or with
/// `committed` only the commits.
enum Review {
    Diff { committed: bool },
    Full,
    Apply { squash: bool },
}

/// `diff`, `review`, `apply`: git on the host, through moat-worktree's guarded runner.
fn checkpoint_cmd(home: &Home, name: &str, what: Review) -> Result<i32> {
    let info = client(home)?.get(name)?;
    let Some(mut c) = moat_sandbox_core::checkpoint::open(&info.spec)? else {
        bail!("sandbox {name:?} has no review checkpoint; create one with `moat create --branch auto …`");
    };
    c.sync()?;
    match what {
        Review::Diff { committed: true } => {
            let color = std::io::stdout().is_terminal();
            let mut out = Output::open()?;
            let mut diff = c.diff_stream()?;
            crate::render::stream_escaped(&mut diff, color, |text| out.write(text))?;
            drop(diff);
            out.close()?;
        }
        Review::Diff { committed: false } => {
            let changes = c.changes()?;
            page(&crate::render::changes(&changes, std::io::stdout().is_terminal()))?;
        }
        Review::Full => {
            let review = c.review()?;
            let mut text = crate::render::changes(&c.changes()?, std::io::stdout().is_terminal());
            if review.is_empty() {
                text.push_str("\nmoat review: nothing beyond the diff needs a look.\n");
            } else {
                text.push_str(&format!(
                    "\nmoat review: {} thing(s) deserve a human look before you trust this work:\n",
                    review.findings.len()
                ));
                for f in &review.findings {
                    text.push_str(&format!("  - {}\n", moat_text::escape_str(&f.to_string())));
                }
            }
            page(&text)?;
        }
        Review::Apply { squash } => {
            let applied = c.apply(squash)?;
            let how = if applied.fast_forward {
                "fast-forward"
            } else if squash {
                "squashed"
            } else {
                "cherry-picked"
            };
            println!(
                "applied {} commit(s) from {} ({how}); your branch is now at {}",
                applied.commits,
                moat_text::escape_str(c.branch()),
                applied.head
            );
            if applied.lfs_objects > 0 {
                println!("copied {} Git LFS object(s) into your repository (SHA-256 checked)", applied.lfs_objects);
            }
            if !applied.lfs_pointers.is_empty() {
                let paths = moat_text::escape_str(&applied.lfs_pointers.join(", "));
                println!("left as LFS pointers (run `git lfs checkout`): {paths}");
            }
            for path in &applied.submodules {
                println!("submodule {} moved to its new commit", moat_text::escape_str(path));
            }
        }
    }
    Ok(0)
}

/// Shows `text` (already escaped) through the user's pager when stdout is a terminal.
fn page(text: &str) -> Result<()> {
    let mut out = Output::open()?;
    out.write(text);
    out.close()
}

/// The user's pager when stdout is a terminal, else stdout.
struct Output {
    pager: Option<std::process::Child>,
}

impl Output {
    fn open() -> Result<Output> {
        let pager = if std::io::stdout().is_terminal() { moat_worktree::pager_command() } else { None };
        let pager = match pager {
            Some(mut cmd) => {
                Some(cmd.stdin(std::process::Stdio::piped()).spawn().context("could not start the pager")?)
            }
            None => None,
        };
        Ok(Output { pager })
    }

    /// Writes `text`; `false` once the reader has gone (the user quit the pager).
    fn write(&mut self, text: &str) -> bool {
        use std::io::Write;
        match self.pager.as_mut().and_then(|p| p.stdin.as_mut()) {
            Some(stdin) => stdin.write_all(text.as_bytes()).is_ok(),
            None => std::io::stdout().lock().write_all(text.as_bytes()).is_ok(),
        }
    }

    fn close(mut self) -> Result<()> {
        if let Some(mut pager) = self.pager.take() {
            drop(pager.stdin.take());
            pager.wait()?;
        }
        Ok(())
    }
}

/// The environment of every process the user starts in the sandbox: the
/// template's, the sandbox's own variables (set at create), then the
/// credential placeholders. `exec -e` goes after.
fn sandbox_env(home: &Home, info: &SandboxInfo, template: &Template) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = template.spec.env.clone().into_iter().collect();
    vars.extend(info.spec.env.clone());
    let vault = moat_sandbox_core::credentials::open_vault(home)?;
    vars.extend(moat_sandbox_core::credentials::placeholder_env(&vault, &info.spec.name)?);
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_credential_is_named_with_the_command_that_stores_it() {
        let claude = Template::builtin("claude").unwrap();
        let note = credential_note(&claude, &[]).unwrap();
        assert!(note.contains("no credential for claude") && note.contains("`moat secret set -g anthropic`"), "{note}");
        assert!(credential_note(&claude, &[("ANTHROPIC_API_KEY".into(), "sk-ant-x".into())]).is_none());
        let opencode = Template::builtin("opencode").unwrap();
        assert!(credential_note(&opencode, &[]).unwrap().contains("`moat secret set -g openai`"));
        assert!(credential_note(&opencode, &[("OPENAI_API_KEY".into(), "sk-x".into())]).is_none(), "any one will do");
        assert!(credential_note(&Template::builtin("shell").unwrap(), &[]).is_none());
    }
}
