//! A sandbox's own variables (`-e`, `--env-file`): in every process it runs,
//! kept with it, and never a credential.

use crate::harness::{moat, stderr, stdout};

#[test]
fn variables_reach_every_process_survive_a_restart_and_credentials_are_refused() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("vars");
    let ws_arg = ws.to_str().unwrap();

    // A credential-looking value is refused before anything is made, from -e or a file,
    // on `create` and on `run`, and the message never repeats it.
    let key = format!("sk-ant-api03-{}", "Zr9".repeat(31));
    let out = m.run(&["create", "--name", "leaky", "shell", ws_arg, "-e", &format!("FOO={key}")]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("FOO looks like an Anthropic API key"), "{}", stderr(&out));
    assert!(stderr(&out).contains("moat secret set -g anthropic"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&key), "the value is never echoed");
    let leaky_file = m.scratch.path().join("leaky.env");
    std::fs::write(&leaky_file, format!("OK=1\nTOKEN=ghp_{}\n", "a1B2".repeat(9))).unwrap();
    let out = m.run(&["create", "--name", "leaky", "shell", ws_arg, "--env-file", leaky_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("leaky.env:2: TOKEN looks like a GitHub token"), "{}", stderr(&out));
    let out = m
        .cmd()
        .current_dir(&ws)
        .args(["run", "--name", "leaky", "shell", ".", "-e", "AWS=AKIAIOSFODNN7EXAMPLE"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("AWS looks like an AWS access key id"), "{}", stderr(&out));
    assert_eq!(m.ok(&["ls", "-q"]), "", "nothing was created");
    let folders = std::fs::read_dir(m.home().join("sandboxes")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(folders, 0, "no sandbox folder was made");

    // The file, then -e (which wins), and -e KEY from this process's environment.
    let file = m.scratch.path().join("dev.env");
    std::fs::write(&file, "# settings\nexport GREETING=\"hello from a file\"\nWINNER=file\nCOLOR=#fff # comment\n")
        .unwrap();
    let file_arg = file.to_str().unwrap();
    let create = ["create", "--name", "vars", "-m", "1g", "--cpus", "1", "shell", ws_arg, "--env-file", file_arg];
    let out = m
        .cmd()
        .env("FROM_HOST", "host value")
        .args(create)
        .args(["-e", "WINNER=flag", "-e", "FROM_HOST", "-e", "FOO_TOKEN=not a credential"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    m.ok(&["start", "vars"]);

    let show = "echo \"$GREETING|$WINNER|$COLOR|$FROM_HOST|$FOO_TOKEN\"";
    let expected = "hello from a file|flag|#fff|host value|not a credential\n";
    assert_eq!(m.sh("vars", show), expected, "moat exec");
    assert_eq!(m.ok(&["exec", "-u", "root", "vars", "sh", "-c", show]), expected, "another user too");
    assert_eq!(m.ok(&["exec", "-e", "WINNER=exec", "vars", "sh", "-c", "echo $WINNER"]), "exec\n", "exec -e wins");
    let out = m.run(&["run", "vars", "--", "sh", "-c", show]);
    assert_eq!(stdout(&out), expected, "moat run: {}", stderr(&out));
    // Moat's own variables are still Moat's.
    assert_eq!(m.sh("vars", "echo $HTTPS_PROXY"), "http://gateway.moat.internal:3128\n");

    // `ls --json` names the variables and shows no value.
    let list = m.ok(&["ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(listed[0]["env_keys"], serde_json::json!(["COLOR", "FOO_TOKEN", "FROM_HOST", "GREETING", "WINNER"]));
    assert!(!list.contains("hello from a file") && listed[0].get("env").is_none(), "{list}");

    // Kept with the sandbox: across a stop, a start and a new daemon.
    m.ok(&["stop", "vars"]);
    m.ok(&["daemon", "stop"]);
    m.ok(&["start", "vars"]);
    assert_eq!(m.sh("vars", show), expected, "after a restart");

    // The variables are set at create: asking for others on the running sandbox is
    // refused, saying which and what to do; asking for the same ones is fine.
    let out = m.run(&["run", "vars", "-e", "WINNER=other", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("WINNER would change"), "{}", stderr(&out));
    assert!(stderr(&out).contains("moat rm vars"), "{}", stderr(&out));
    assert_eq!(m.sh("vars", "echo $WINNER"), "flag\n", "unchanged");
    let same = m
        .cmd()
        .env("FROM_HOST", "host value")
        .args(["run", "vars", "--env-file", file_arg, "-e", "WINNER=flag", "-e", "FROM_HOST"])
        .args(["-e", "FOO_TOKEN=not a credential", "--", "sh", "-c", "echo $GREETING"])
        .output()
        .unwrap();
    assert_eq!(stdout(&same), "hello from a file\n", "{}", stderr(&same));
}
