//! Templates users make, in real guests: a sandbox's disk saved as a template
//! boots again with everything it changed (deletions included), survives an
//! export, `rm` and import, stacks when saved again, and programs brought
//! from the host run from their own layer.

use std::path::Path;
use std::time::Instant;

use crate::harness::{moat, stderr, stdout, Moat};

/// `moat run -t TEMPLATE --name NAME WS -- sh -c SCRIPT` (a small guest), its stdout.
fn run_from(m: &Moat, template: &str, name: &str, ws: &Path, script: &str) -> String {
    let ws = ws.to_str().unwrap();
    m.ok(&["run", "-t", template, "--name", name, "-m", "1g", "--cpus", "1", ws, "--", "sh", "-c", script])
}

/// What a template of the origin sandbox must show inside.
const CHECK: &str = "cat /opt/marker /home/agent/notes; test -e /etc/issue.net && echo present || echo deleted";

fn template(m: &Moat, name: &str) -> serde_json::Value {
    let list: serde_json::Value = serde_json::from_str(&m.ok(&["template", "ls", "--json"])).unwrap();
    list.as_array().unwrap().iter().find(|t| t["name"] == name).cloned().unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_saved_sandbox_boots_again_from_its_template_and_from_an_export_of_it() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("tpl");
    m.sandbox("origin", &ws, &[]);
    m.sh(
        "origin",
        "sudo sh -c 'echo kept > /opt/marker && rm /etc/issue.net' && echo mine > /home/agent/notes && sync",
    );

    let out = m.run(&["template", "save", "origin", "tpl"]);
    assert!(!out.status.success(), "a running sandbox's disk is not saved");
    assert!(stderr(&out).contains("`moat stop origin`"), "{}", stderr(&out));
    m.ok(&["stop", "origin"]);
    let t = Instant::now();
    let saved = m.ok(&["template", "save", "-d", "marker files", "origin", "tpl"]);
    eprintln!("template save: {:.1} s: {saved}", t.elapsed().as_secs_f64());
    assert!(saved.contains("saved origin's disk as template tpl"), "{saved}");

    assert_eq!(run_from(&m, "tpl", "copy", &ws, CHECK), "kept\nmine\ndeleted\n");
    let info = template(&m, "tpl");
    assert_eq!(
        (&info["agent"], &info["layers"], &info["source_sandbox"]),
        (&"shell".into(), &1.into(), &"origin".into())
    );
    assert_eq!(info["used_by"], serde_json::json!(["copy"]));
    let shipped = template(&m, "shell");
    assert_eq!((&shipped["builtin"], &shipped["built"]), (&true.into(), &true.into()));
    let table = m.ok(&["template", "ls"]);
    assert!(
        table.lines().any(|l| l.starts_with("tpl ") && l.contains(" built ") && l.ends_with("marker files")),
        "{table}"
    );
    let ls = m.ok(&["ls"]);
    assert!(ls.lines().any(|l| l.starts_with("copy") && l.contains("shell (tpl)")), "{ls}");

    let export = m.scratch.path().join("tpl.moat");
    let t = Instant::now();
    let exported = m.ok(&["template", "export", "tpl", export.to_str().unwrap()]);
    eprintln!("template export: {:.1} s: {exported}", t.elapsed().as_secs_f64());
    let refused = m.run(&["template", "rm", "tpl"]);
    assert!(stderr(&refused).contains("used by copy"), "{}", stderr(&refused));
    m.ok(&["rm", "-f", "copy"]);
    m.ok(&["template", "rm", "tpl"]);
    assert_eq!(template(&m, "tpl"), serde_json::Value::Null);
    let gone = m.run(&["run", "-t", "tpl", "--name", "nope", ws.to_str().unwrap(), "--", "true"]);
    assert!(stderr(&gone).contains("no template named \"tpl\""), "{}", stderr(&gone));

    let imported = m.ok(&["template", "import", export.to_str().unwrap()]);
    assert!(imported.contains("imported template tpl (1 layer over shell"), "{imported}");
    let again = run_from(&m, "tpl", "again", &ws, &format!("{CHECK}; sudo sh -c 'echo second > /opt/second'; sync"));
    assert_eq!(again, "kept\nmine\ndeleted\n");

    // Saved again, the new layer stacks on the first.
    m.ok(&["template", "save", "--stop", "again", "tpl2"]);
    assert_eq!((&template(&m, "tpl2")["layers"], &template(&m, "tpl2")["parent"]), (&2.into(), &"tpl".into()));
    let stacked = run_from(&m, "tpl2", "stacked", &ws, &format!("{CHECK}; cat /opt/second"));
    assert_eq!(stacked, "kept\nmine\ndeleted\nsecond\n");
}

#[test]
fn programs_brought_from_the_host_run_from_their_own_layer() {
    let Some(m) = moat() else { return };
    // Stand-in agents: the host's glibc `echo` and static `ldconfig`, under names of their own.
    let bin = m.workspace("bin");
    std::fs::copy("/usr/bin/echo", bin.join("moat-hello")).unwrap();
    std::fs::copy("/sbin/ldconfig", bin.join("moat-static")).unwrap();
    let script = bin.join("agent.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let refused = m.run(&["template", "programs", "bad", script.to_str().unwrap()]);
    assert!(stderr(&refused).contains("it is a script"), "{}", stderr(&refused));
    let unknown = m.run(&["template", "programs", "bad", bin.join("moat-hello").to_str().unwrap()]);
    assert!(stderr(&unknown).contains("--launch"), "{}", stderr(&unknown));

    let made = m.ok(&[
        "template",
        "programs",
        "--launch",
        "moat-hello ran-from-its-layer",
        "--batch",
        "--now",
        "hello",
        bin.join("moat-hello").to_str().unwrap(),
        bin.join("moat-static").to_str().unwrap(),
    ]);
    assert!(made.contains("starts `moat-hello ran-from-its-layer`"), "{made}");

    let ws = m.workspace("hello-ws");
    let w = ws.to_str().unwrap();
    let out = m.run(&["run", "-t", "hello", "--name", "hello", "-m", "1g", "--cpus", "1", w, "--", "--now"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ran-from-its-layer --now\n");
    let inside = m.sh("hello", "stat -c '%U:%G %a' /usr/local/bin/moat-hello; moat-static --version | head -1");
    assert!(inside.starts_with("root:root 755\nldconfig (Debian GLIBC"), "{inside}");
}
