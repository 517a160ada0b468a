//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run AI coding agents in microVMs that can only touch your project.
#[derive(Debug, Parser)]
#[command(name = "moat", version, propagate_version = true, disable_help_subcommand = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sandbox if needed, start it, and attach to its agent.
    ///
    /// `moat run shell .` opens a login shell at the workspace;
    /// `moat run shell . -- make test` runs a command and exits with its code.
    /// `moat run NAME` attaches to an existing sandbox. `moat run -t TEMPLATE .`
    /// boots from a template you made (`moat template ls`): with -t, the first
    /// path is the workspace.
    ///
    /// On a terminal the agent runs in a session that outlives it: detach with
    /// Ctrl-P Ctrl-Q (or close the terminal) and come back with `moat attach NAME`.
    Run(RunArgs),
    /// Define a sandbox without starting it.
    Create(CreateArgs),
    /// Start sandboxes.
    Start {
        /// Sandbox names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop sandboxes (the guest powers off cleanly; its disk is kept).
    Stop {
        /// Sandbox names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command in a sandbox (starting it first if needed).
    Exec(ExecArgs),
    /// Return to the agent session of a sandbox (detach again with Ctrl-P Ctrl-Q).
    Attach {
        /// Sandbox name.
        name: String,
    },
    /// List sandboxes.
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove sandboxes: stop them and delete their disks and state (never your workspace).
    Rm {
        /// Remove even if stopping fails.
        #[arg(short, long)]
        force: bool,
        /// Remove every sandbox.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Sandbox names.
        names: Vec<String>,
    },
    /// Credentials the agent uses but never sees (the guest gets placeholders).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The network policy: what sandboxes may reach, and the log of what they tried.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Show a checkpoint sandbox's changes against its base, like `git diff`.
    Diff {
        /// Only the commits; leave out work not committed yet.
        #[arg(long)]
        committed: bool,
        /// Sandbox name.
        name: String,
    },
    /// The diff plus everything that deserves a human look before you trust it
    /// (hooks, git config, CI files, scripts, executables, untracked files…).
    Review {
        /// Sandbox name.
        name: String,
    },
    /// Bring a checkpoint sandbox's commits onto your current branch.
    Apply {
        /// Make one commit of them.
        #[arg(long)]
        squash: bool,
        /// Sandbox name.
        name: String,
    },
    /// Templates: the ones Moat ships, and ones you make from a sandbox's disk
    /// or from programs you bring; export them to a file and import them elsewhere.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Build or locate the guest images (kernel, root filesystem, agent initramfs).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Control the per-user daemon.
    Daemon {
        #[command(subcommand)]
        command: DaemonCommand,
    },
    /// Print client and daemon versions.
    Version,
    /// Print a shell completion script: `source <(moat completions bash)`,
    /// `moat completions zsh > "${fpath[1]}/_moat"`, `moat completions fish | source`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Internal: own one sandbox VM (started by the daemon).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The sandbox's run folder.
        run_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SandboxOpts {
    /// Sandbox name (default `<agent>-<workdir>`, or `<template>-<workdir>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Boot from a template you made (`moat template ls`); its agent is the
    /// template's, and the first path is the workspace.
    #[arg(short, long, value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Guest memory, e.g. `4g` (default: a quarter of the host's RAM, at least 1g,
    /// at most 8g; never more than the host has).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Size of the sandbox's state disk (sparse: only what the guest writes takes
    /// space), e.g. `20g` (default 16g; 1g to 1t).
    #[arg(long)]
    pub disk: Option<String>,
    /// vCPUs (default: host CPUs − 1).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Hypervisor backend: auto (QEMU; with KVM on CPUs with VMX/SVM), qemu, or vmm
    /// (moat-vmm, opt-in: no Linux guest has been seen booting on it yet).
    #[arg(long, env = "MOAT_BACKEND")]
    pub backend: Option<moat_sandbox_core::backend::BackendChoice>,
    /// Work on a new branch (`auto` picks a name) in a clone of the workspace's git
    /// repository under `.moat/`; review it with `moat diff|review`, bring it back with `moat apply`.
    #[arg(long, value_name = "NAME|auto")]
    pub branch: Option<String>,
    /// Like --branch, with the clone kept in Moat's folder instead of the repository's.
    #[arg(long)]
    pub clone: bool,
    /// A variable every process in the sandbox gets, kept with it: `K=V`, or `K` for
    /// its value here now. Values that look like credentials are refused (use
    /// `moat secret set`); so are the proxy variables Moat sets.
    #[arg(short, long = "env", value_name = "K=V|K")]
    pub env: Vec<String>,
    /// Variables from a file of `KEY=VALUE` lines (`#` comments, `export `, quotes);
    /// -e beats it, a later file beats an earlier one.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: SandboxOpts,
    /// Agent (shell, claude, codex, …) or the name of an existing sandbox; with
    /// -t, the workspace folder.
    #[arg(value_name = "AGENT|SANDBOX", required_unless_present = "template")]
    pub agent: Option<String>,
    /// Workspace folder, then extra folders to share (`PATH` or `PATH:ro`).
    pub paths: Vec<String>,
    /// Arguments for the agent; for `shell`, a command to run instead of a login shell.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: SandboxOpts,
    /// Print only the name.
    #[arg(short, long)]
    pub quiet: bool,
    /// Agent (shell, claude, codex, …); with -t, the workspace folder.
    #[arg(value_name = "AGENT|PATH")]
    pub agent: String,
    /// Workspace folder, then extra folders to share (`PATH` or `PATH:ro`).
    #[arg(required_unless_present = "template")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Start the command in the background and return.
    #[arg(short, long)]
    pub detach: bool,
    /// Set an environment variable (`K=V`, or `K` to pass the host's value).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory in the guest (default: the workspace).
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User in the guest (default: agent).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Sandbox name.
    pub name: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build whatever is missing from the cache and print the paths.
    Build {
        /// Templates to build (their base and layer); `shell` when none is named.
        templates: Vec<String>,
        /// Every template Moat ships.
        #[arg(long, conflicts_with = "templates")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List templates: Moat's own (and whether their images are built) and yours.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Freeze a stopped sandbox's disk (what it changed over its template) as a
    /// new template: `moat run -t NAME PATH` then starts from it.
    Save {
        /// Stop the sandbox first if it runs (its processes end).
        #[arg(long)]
        stop: bool,
        /// Replace a template of that name (none of your sandboxes may use it).
        #[arg(short, long)]
        force: bool,
        /// One line about it, for `moat template ls`.
        #[arg(short, long)]
        description: Option<String>,
        /// The sandbox.
        sandbox: String,
        /// The new template's name.
        name: String,
    },
    /// Remove templates you made (not while a sandbox boots from one).
    Rm {
        /// Template names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write a template you made to one compressed file (zstd tar): its
    /// layers and manifest, not the images Moat ships.
    Export {
        /// The template.
        name: String,
        /// The file to write (must not exist).
        file: PathBuf,
    },
    /// Add a template from an exported file (checked before anything is written).
    Import {
        /// Its name here (default: the exported name).
        #[arg(long)]
        name: Option<String>,
        /// Replace a template of that name (none of your sandboxes may use it).
        #[arg(short, long)]
        force: bool,
        /// Accept a template made over other images than this Moat's (another
        /// version): what its layers changed hides the newer files.
        #[arg(long)]
        other_base: bool,
        /// The exported file.
        file: PathBuf,
    },
    /// A template of programs you bring (x86-64 Linux, static or for glibc),
    /// installed in /usr/local/bin: for agents Moat can't install, such as
    /// `kiro-cli` and `docker-agent` (known: started unattended by default).
    #[command(alias = "byo")]
    Programs {
        /// How the agent starts, e.g. 'my-agent --yes' (split at spaces; default
        /// for kiro-cli and docker-agent).
        #[arg(long, value_name = "'PROGRAM ARGS…'")]
        launch: Option<String>,
        /// An argument that makes it run without a terminal (repeatable), e.g. --print.
        #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
        batch: Vec<String>,
        /// The template Moat ships to put them over.
        #[arg(long, default_value = "shell")]
        from: String,
        /// One line about it, for `moat template ls`.
        #[arg(short, long)]
        description: Option<String>,
        /// Replace a template of that name (none of your sandboxes may use it).
        #[arg(short, long)]
        force: bool,
        /// The new template's name.
        name: String,
        /// The programs (each lands as /usr/local/bin/<its file name>).
        #[arg(required = true)]
        programs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon in the background.
    Start,
    /// Stop the daemon (running sandboxes keep running).
    Stop,
    /// Say whether the daemon runs, and its version.
    Status,
    /// Run the daemon in the foreground.
    Run,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a credential: `set -g SERVICE` or `set SANDBOX SERVICE`; the value comes
    /// from -t, from --command (re-run on the host when older than --ttl), or from stdin.
    Set {
        /// For every sandbox.
        #[arg(short, long)]
        global: bool,
        /// The value (avoid: it lands in your shell history; stdin is safer).
        #[arg(short, long, conflicts_with = "command")]
        token: Option<String>,
        /// A host command that prints the value, e.g. `gh auth token`.
        #[arg(long)]
        command: Option<String>,
        /// How long a --command's output is reused, e.g. 30s, 15m, 1h.
        #[arg(long, default_value = "15m", requires = "command")]
        ttl: String,
        /// `SERVICE`, or `SANDBOX SERVICE`.
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
    },
    /// Define a service of your own: its hosts and the header the proxy sets on
    /// TLS requests to them (then store its value with `moat secret set`).
    SetCustom {
        /// The service's name (not a built-in one).
        name: String,
        /// Its hosts, comma-separated, exact names.
        #[arg(long, value_name = "HOST[,HOST…]", required = true)]
        host: String,
        /// The header and value template; `{}` is the credential.
        #[arg(long, default_value = "Authorization: Bearer {}")]
        header: String,
    },
    /// List stored credentials (names, scopes, sources — never values).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a credential: `rm -g SERVICE` or `rm SANDBOX SERVICE`.
    Rm {
        /// The global one.
        #[arg(short, long)]
        global: bool,
        /// `SERVICE`, or `SANDBOX SERVICE`.
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct RuleArgs {
    /// `network` (which hosts and addresses) or `request` (which methods and
    /// paths on a host, e.g. `deny request DELETE api.github.com/**`).
    #[arg(value_parser = ["network", "request"])]
    pub kind: String,
    /// network: comma-separated `example.com`, `*.example.com` (one label),
    /// `**.example.com` (any depth), `**`, `host:port`, `host:*`,
    /// `localhost:PORT`, IPs and CIDRs. request: METHODS (`GET,HEAD` or `*`)
    /// then comma-separated `HOST[:PORT][/PATH]`, where a path segment may be
    /// `*` (one) or `**` (any number).
    #[arg(required = true, num_args = 1..=2, value_name = "WHAT")]
    pub what: Vec<String>,
    /// For every sandbox (the default).
    #[arg(short, long, conflicts_with = "sandbox")]
    pub global: bool,
    /// Only for this sandbox.
    #[arg(long, value_name = "NAME")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Allow connections (deny rules still win).
    Allow(RuleArgs),
    /// Deny connections, whatever else allows them.
    Deny(RuleArgs),
    /// List the preset and the rules.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also list the preset's own rules.
        #[arg(short, long)]
        all: bool,
    },
    /// Remove rules: by id (`rm 3 4`) or as written (`rm allow network github.com`).
    Rm {
        /// Ids, or one rule's words.
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
        /// The rule's sandbox, when removing by words.
        #[arg(long, value_name = "NAME")]
        sandbox: Option<String>,
    },
    /// Show or choose the preset: allow-all, balanced or deny-all (user rules stay).
    Preset {
        /// The preset to use from now on.
        name: Option<String>,
    },
    /// Delete every user rule and choose the preset again.
    Reset {
        /// The preset (asked for on a terminal, else balanced).
        #[arg(long)]
        preset: Option<String>,
        /// Don't ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// The connection log: what sandboxes reached or were refused.
    Log {
        /// Only this sandbox.
        name: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// How many recent entries.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// Keep printing new entries.
        #[arg(short, long)]
        follow: bool,
        /// Only denied connections.
        #[arg(long)]
        denied: bool,
    },
}
