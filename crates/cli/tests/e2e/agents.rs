//! The agents themselves: each template boots its real CLI from its own layer,
//! starts it in its unattended mode, and keeps it running in a session that
//! outlives the user's terminal.

use std::time::{Duration, Instant};

use moat_sandbox_core::images::Template;
use moat_sandbox_core::spec::AGENTS;

use crate::harness::{moat, stderr, Moat};

/// Every `--flag` of the template's launch argv.
fn unattended_flags(t: &Template) -> Vec<&str> {
    t.spec.launch.argv.iter().filter(|a| a.starts_with('-')).map(String::as_str).collect()
}

#[test]
fn every_agent_cli_runs_from_its_layer_and_starts_in_its_unattended_mode() {
    let Some(m) = moat() else { return };
    m.ok(&["policy", "preset", "deny-all"]);
    // Credentials, so that no agent stops at a login screen (nothing leaves the host: deny-all).
    for (service, key) in [
        ("anthropic", format!("sk-ant-api03-{}", "Aa1".repeat(30))),
        ("openai", format!("sk-proj-{}", "Oo2".repeat(30))),
        ("github", format!("github_pat_{}", "Gg3".repeat(27) + "x")),
        ("google", format!("AIza{}", "Ee4".repeat(11) + "yz")),
    ] {
        m.ok(&["secret", "set", "-g", service, "-t", &key]);
    }
    for agent in AGENTS.iter().filter(|a| **a != "shell") {
        let t = Template::builtin(agent).unwrap();
        let ws = m.workspace(agent);
        let ws = ws.to_str().unwrap();
        let out = m.ok(&["run", "--name", agent, "-m", "2g", "--cpus", "1", agent, ws, "--", "--version"]);
        // The version the template pins (npm versions may carry a platform suffix).
        let pinned = t.spec.npm[0].version.split('-').next().unwrap();
        assert!(out.contains(pinned), "{agent} --version: {out:?}, pinned {pinned}");
        // The flags Moat starts it with are the installed CLI's own (read from its help).
        // (Some print their help on stderr.)
        let help = m.ok(&["exec", agent, "--", "sh", "-c", &format!("{agent} --help 2>&1")]);
        for flag in unattended_flags(&t) {
            assert!(help.contains(flag), "{agent} --help has no {flag}:\n{help}");
        }
        // Started on a terminal, the agent's own process carries those flags.
        let mut cmd = m.cmd();
        cmd.args(["run", "--name", agent, agent, ws]);
        let mut term = crate::pty::spawn(cmd, 30, 100);
        let line = wait_for(&m, agent, |l| l.contains(agent) && unattended_flags(&t).iter().all(|f| l.contains(f)));
        assert!(!line.starts_with("tmux") && !line.contains("moat-session"), "the agent itself: {line}");
        // It goes straight to work: its own ready screen, no first-run question before it.
        let screen = first_screen(&m, agent);
        for question in FIRST_RUN_QUESTIONS {
            assert!(!screen.contains(question), "{agent} asks {question:?}:\n{screen}");
        }
        term.child.kill().unwrap();
        term.child.wait().unwrap();
        m.ok(&["rm", "-f", agent]);
    }
}

#[test]
fn an_interactive_agent_without_a_terminal_is_refused_before_anything_is_made() {
    let Some(m) = moat() else { return };
    m.ok(&["policy", "preset", "balanced"]);
    let ws = m.workspace("noterm");
    let out = m.run(&["run", "--name", "noterm", "claude", ws.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("claude is interactive and this is not a terminal"), "{err}");
    assert!(err.contains("moat run claude PATH -- -p"), "the error says how to run it without one: {err}");
    assert_eq!(m.ok(&["ls", "-q"]), "", "nothing was created");
}

/// What agents ask on a first run when nothing answered for them.
const FIRST_RUN_QUESTIONS: &[&str] = &[
    "Confirm folder trust",
    "Do you trust",
    "trust the files",
    "Select Theme",
    "Choose the text style",
    "How would you like to authenticate",
    "Sign in with ChatGPT",
    "Select login method",
];

/// The agent's screen once it shows what it shows when ready (a first-run
/// question instead also ends the wait); Copilot shows nothing more while it
/// tries to reach GitHub, so for it the screen after 60 s.
fn first_screen(m: &Moat, agent: &str) -> String {
    let ready = match agent {
        "claude" => "bypass permissions on",
        "codex" => "Ask Codex to do anything",
        "gemini" => "YOLO",
        "opencode" => "Ask anything",
        _ => "",
    };
    let deadline = Instant::now() + if ready.is_empty() { Duration::from_secs(60) } else { Duration::from_secs(180) };
    loop {
        let out = m.run(&["exec", agent, "--", "tmux", "-L", "moat", "capture-pane", "-p", "-t", "agent"]);
        let screen = crate::harness::stdout(&out);
        let asked = FIRST_RUN_QUESTIONS.iter().any(|q| screen.contains(q));
        if asked || (!ready.is_empty() && screen.contains(ready)) {
            return screen;
        }
        if Instant::now() > deadline {
            assert!(ready.is_empty(), "{agent} never showed {ready:?}:\n{screen}");
            return screen;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The guest's process list.
fn guest_processes(m: &Moat, name: &str) -> String {
    m.ok(&["exec", name, "--", "ps", "-eo", "args"])
}

/// Waits (up to 120 s, while the sandbox is made and boots) until a guest
/// process's command line starts with `prefix`.
fn wait_for_process(m: &Moat, name: &str, prefix: &str) -> String {
    wait_for(m, name, |l| l.starts_with(prefix))
}

/// Waits (up to 120 s) until a guest process's command line (not a tmux or
/// session wrapper's) satisfies `wanted`.
fn wait_for(m: &Moat, name: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = m.run(&["exec", name, "--", "ps", "-eo", "args"]);
        let ps = crate::harness::stdout(&out);
        let agent = |l: &&str| !l.starts_with("tmux") && !l.starts_with("sh -c") && wanted(l);
        if let Some(line) = ps.lines().find(agent) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no such process in the guest:\n{ps}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_agent_runs_unattended_in_a_session_that_outlives_the_terminal() {
    let Some(m) = moat() else { return };
    m.ok(&["policy", "preset", "balanced"]);
    let ws = m.workspace("sess");
    let mut cmd = m.cmd();
    cmd.current_dir(&ws).args(["run", "--name", "sess", "-m", "2g", "claude", "."]);
    let mut term = crate::pty::spawn(cmd, 30, 100);

    // The real CLI runs, with its unattended flag, as the sandbox user.
    let line = wait_for_process(&m, "sess", "claude ");
    assert!(line.contains("--dangerously-skip-permissions"), "{line}");
    let ps = m.ok(&["exec", "sess", "--", "ps", "-o", "user=", "-C", "claude"]);
    assert_eq!(ps.trim(), "agent", "it runs as the sandbox user");
    let listed: serde_json::Value = serde_json::from_str(&m.ok(&["ls", "--json"])).unwrap();
    assert_eq!(listed[0]["session"], true, "{listed}");

    // The terminal goes away (the CLI is killed): the agent runs on.
    term.child.kill().unwrap();
    term.child.wait().unwrap();
    drop(term);
    std::thread::sleep(Duration::from_secs(2));
    assert!(guest_processes(&m, "sess").lines().any(|l| l.starts_with("claude --dangerously-skip-permissions")));
    assert!(m.ok(&["ls"]).lines().any(|l| l.starts_with("sess ") && l.contains("attachable")), "{}", m.ok(&["ls"]));

    // `moat attach` returns to it: the screen is drawn again; Ctrl-P Ctrl-Q leaves it running.
    let mut cmd = m.cmd();
    cmd.args(["attach", "sess"]);
    let mut again = crate::pty::spawn(cmd, 30, 100);
    // Straight at work, in bypass mode: no theme, login, trust or consent screen in between.
    again.expect("bypass permissions on");
    std::thread::sleep(Duration::from_secs(1));
    again.send(&[0x10, 0x11]);
    again.expect("moat: detached; sess runs on");
    let status = again.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(guest_processes(&m, "sess").lines().any(|l| l.starts_with("claude --dangerously-skip-permissions")));

    // Without a session, attach says what to do.
    m.ok(&["exec", "sess", "--", "tmux", "-L", "moat", "kill-server"]);
    let out = m.run(&["attach", "sess"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sess runs no agent session; start one with `moat run sess`"), "{}", stderr(&out));
}
