//! The real agent CLIs, unattended in their guests, doing work for a scripted
//! stand-in of their model API: a Python HTTPS server on the host's loopback
//! answers as `api.anthropic.com` / `api.openai.com` (mapped through
//! `$MOAT_HOME/hosts`, its test CA trusted through `upstream-ca.pem`). It
//! replies with a tool call that writes a file, then one that runs a command,
//! then a final answer. The proxy swaps the sandbox's placeholder for the real
//! key on the way; the guest never holds the real one.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::harness::{moat, stderr, stdout, Moat, StandIn};
use crate::injection::make_certs;

struct ModelApi {
    server: StandIn,
    port: u16,
}

impl ModelApi {
    fn start(certs: &Path, workspace: &Path) -> ModelApi {
        let args = [OsStr::new("leaf.pem"), OsStr::new("leaf.key"), workspace.as_os_str()];
        let server = StandIn::start("model_api.py", &args, certs);
        ModelApi { port: server.port("https"), server }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        self.server.requests()
    }
}

/// A Moat installation whose proxy reaches the stand-in as `host`, with the
/// real `key` of `service` in its vault; returns the stand-in and the workspace.
fn setup(m: &Moat, service: &str, host: &str, key: &str) -> (ModelApi, std::path::PathBuf) {
    let certs = m.workspace("certs");
    make_certs(&certs, &[host]);
    let ws = m.workspace("project");
    git(&ws, &["init", "-q"]);
    let api = ModelApi::start(&certs, &ws);
    std::fs::copy(certs.join("ca.pem"), m.home().join("upstream-ca.pem")).unwrap();
    std::fs::write(m.home().join("hosts"), format!("127.0.0.1 {host}\n")).unwrap();
    m.ok(&["policy", "preset", "balanced"]);
    // The stand-in listens on a loopback port: only a rule naming it opens that.
    m.ok(&["policy", "allow", "network", &format!("{host}:{}", api.port)]);
    m.ok(&["secret", "set", "-g", service, "-t", key]);
    (api, ws)
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// What the agent's two tool calls left in the workspace, seen from the host.
fn assert_work_done(ws: &Path, sandbox: &str) {
    let wrote = std::fs::read_to_string(ws.join("wrote.txt")).expect("the file the agent wrote");
    assert_eq!(wrote, "written by the agent through the stand-in\n");
    let ran = std::fs::read_to_string(ws.join("ran.txt")).expect("the command's output");
    assert_eq!(ran, format!("{sandbox}\nagent\n"), "ran in the guest (its hostname), as the sandbox user");
}

/// The real key is in no guest process's environment and nowhere on its
/// disks; the pattern is assembled inside the guest so no command line holds it.
fn assert_guest_never_held(m: &Moat, name: &str, chunk: &str) {
    let hunt = format!(
        "a={chunk}; a=$a$a$a$a; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c \"$a\"; \
         grep -rl \"$a\" / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | wc -l"
    );
    assert_eq!(m.ok(&["exec", "-u", "root", name, "sh", "-c", &hunt]), "0\n0\n");
}

#[test]
fn claude_code_works_unattended_against_its_api_with_the_key_swapped_in_by_the_proxy() {
    let Some(m) = moat() else { return };
    let chunk = "Wq5v";
    let real = format!("sk-ant-api03-{}", chunk.repeat(24));
    let (api, ws) = setup(&m, "anthropic", "api.anthropic.com", &real);
    let base = format!("ANTHROPIC_BASE_URL=https://api.anthropic.com:{}", api.port);
    let ws_arg = ws.to_str().unwrap();
    let out = m.run(&[
        "run",
        "--name",
        "cc",
        "-m",
        "2g",
        "-e",
        &base,
        "claude",
        ws_arg,
        "--",
        "-p",
        "Write wrote.txt, then record where you run in ran.txt.",
    ]);
    let requests = api.requests();
    let done = out.status.success() && ws.join("wrote.txt").exists();
    assert!(done, "claude failed ({}): {}\n{}\nrequests: {requests:#?}", out.status, stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("All done."), "{}", stdout(&out));
    assert_work_done(&ws, "cc");

    // Every model request carried the real key, put there by the proxy; the guest had the placeholder.
    let messages: Vec<_> =
        requests.iter().filter(|r| r["path"].as_str().unwrap_or("").starts_with("/v1/messages")).collect();
    assert!(messages.len() >= 3, "{requests:#?}");
    assert!(messages.iter().all(|r| r["x-api-key"] == real.as_str()), "{messages:#?}");
    assert!(
        messages.iter().any(|r| r["tools"].as_array().is_some_and(|t| t.contains(&"Bash".into()))),
        "tools were offered"
    );
    let placeholder = m.sh("cc", "printf %s \"$ANTHROPIC_API_KEY\"");
    assert!(placeholder.starts_with("sk-ant-api03-") && placeholder != real, "{placeholder}");
    assert_guest_never_held(&m, "cc", chunk);
}

#[test]
fn codex_works_unattended_against_its_api_with_the_key_swapped_in_by_the_proxy() {
    let Some(m) = moat() else { return };
    let chunk = "Pt8k";
    let real = format!("sk-proj-{}", chunk.repeat(30));
    let (api, ws) = setup(&m, "openai", "api.openai.com", &real);
    let base = format!("openai_base_url=\"https://api.openai.com:{}/v1\"", api.port);
    let ws_arg = ws.to_str().unwrap();
    let out = m.run(&[
        "run",
        "--name",
        "cx",
        "-m",
        "2g",
        "codex",
        ws_arg,
        "--",
        "-c",
        &base,
        "exec",
        "Write wrote.txt, then record where you run in ran.txt.",
    ]);
    let requests = api.requests();
    let done = out.status.success() && ws.join("wrote.txt").exists();
    assert!(done, "codex failed ({}): {}\n{}\nrequests: {requests:#?}", out.status, stdout(&out), stderr(&out));
    assert_work_done(&ws, "cx");

    let responses: Vec<_> = requests.iter().filter(|r| r["method"] == "POST" && r["path"] == "/v1/responses").collect();
    assert!(responses.len() >= 2, "{requests:#?}");
    let bearer = format!("Bearer {real}");
    assert!(responses.iter().all(|r| r["authorization"] == bearer.as_str()), "{responses:#?}");
    let placeholder = m.sh("cx", "printf %s \"$CODEX_API_KEY\"");
    assert!(placeholder.starts_with("sk-proj-") && placeholder != real, "{placeholder}");
    assert_guest_never_held(&m, "cx", chunk);
}

#[test]
fn gemini_copilot_and_opencode_run_unattended_and_reach_their_api_with_the_credential_swapped_in() {
    let Some(m) = moat() else { return };
    let hosts = ["generativelanguage.googleapis.com", "api.openai.com", "api.anthropic.com"];
    let certs = m.workspace("certs");
    make_certs(&certs, &hosts);
    let ws = m.workspace("project");
    git(&ws, &["init", "-q"]);
    let api = ModelApi::start(&certs, &ws);
    std::fs::copy(certs.join("ca.pem"), m.home().join("upstream-ca.pem")).unwrap();
    std::fs::write(m.home().join("hosts"), format!("127.0.0.1 {}\n", hosts.join(" "))).unwrap();
    m.ok(&["policy", "preset", "balanced"]);
    for host in hosts {
        m.ok(&["policy", "allow", "network", &format!("{host}:{}", api.port)]);
    }
    let google = format!("AIza{}", "Gg7".repeat(11) + "xy");
    let openai = format!("sk-proj-{}", "Oc3m".repeat(30));
    let anthropic = format!("sk-ant-api03-{}", "Ad4z".repeat(24));
    for (service, key) in [("google", &google), ("openai", &openai), ("anthropic", &anthropic)] {
        m.ok(&["secret", "set", "-g", service, "-t", key]);
    }
    let url = |host: &str| format!("https://{host}:{}", api.port);
    let ws_arg = ws.to_str().unwrap();
    let prompt = "Say that you are done.";

    // Gemini CLI, its API key auth pinned in the image, a base URL of the user's.
    let gemini_base = format!("GOOGLE_GEMINI_BASE_URL={}", url(hosts[0]));
    let out = m.run(&["run", "--name", "gm", "-m", "2g", "-e", &gemini_base, "gemini", ws_arg, "--", "-p", prompt]);
    assert!(stdout(&out).contains("All done."), "gemini: {}\n{}\n{:#?}", stdout(&out), stderr(&out), api.requests());
    let seen = api.requests();
    let to_gemini: Vec<_> =
        seen.iter().filter(|r| r["path"].as_str().unwrap_or("").contains("generateContent")).collect();
    assert!(!to_gemini.is_empty() && to_gemini.iter().all(|r| r["x-goog-api-key"] == google.as_str()), "{seen:#?}");
    m.ok(&["rm", "-f", "gm"]);

    // Copilot CLI with a model provider of the user's own (BYOK): the key comes from the
    // sandbox's OpenAI placeholder, which the proxy swaps.
    let byok = [
        format!("COPILOT_PROVIDER_BASE_URL={}/v1", url(hosts[1])),
        "COPILOT_PROVIDER_API_KEY_COMMAND=printenv OPENAI_API_KEY".to_string(),
        "COPILOT_MODEL=gpt-4o".to_string(),
    ];
    let mut args = vec!["run", "--name", "cp", "-m", "2g"];
    for e in &byok {
        args.extend(["-e", e.as_str()]);
    }
    args.extend(["copilot", ws_arg, "--", "-p", prompt]);
    let out = m.run(&args);
    assert!(stdout(&out).contains("All done."), "copilot: {}\n{}\n{:#?}", stdout(&out), stderr(&out), api.requests());
    let seen = api.requests();
    let chats: Vec<_> = seen.iter().filter(|r| r["path"] == "/v1/chat/completions").collect();
    let bearer = format!("Bearer {openai}");
    assert!(!chats.is_empty() && chats.iter().all(|r| r["authorization"] == bearer.as_str()), "{seen:#?}");
    m.ok(&["rm", "-f", "cp"]);

    // OpenCode with its Anthropic provider pointed at the stand-in.
    let config = format!(
        "OPENCODE_CONFIG_CONTENT={{\"provider\":{{\"anthropic\":{{\"options\":{{\"baseURL\":\"{}/v1\"}}}}}}}}",
        url(hosts[2])
    );
    let model = "anthropic/claude-sonnet-4-5";
    let out = m
        .run(&["run", "--name", "oc", "-m", "2g", "-e", &config, "opencode", ws_arg, "--", "run", "-m", model, prompt]);
    assert!(stdout(&out).contains("All done."), "opencode: {}\n{}\n{:#?}", stdout(&out), stderr(&out), api.requests());
    let seen = api.requests();
    let messages: Vec<_> =
        seen.iter().filter(|r| r["path"].as_str().unwrap_or("").starts_with("/v1/messages")).collect();
    assert!(!messages.is_empty() && messages.iter().all(|r| r["x-api-key"] == anthropic.as_str()), "{seen:#?}");
    let placeholder = m.sh("oc", "printf %s \"$ANTHROPIC_API_KEY\"");
    assert!(placeholder.starts_with("sk-ant-api03-") && placeholder != anthropic);
}
