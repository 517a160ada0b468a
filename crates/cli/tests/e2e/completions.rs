//! `moat completions SHELL`: a script the real shell loads and completes with.

use std::process::Command;

use crate::harness::moat_without_guest;

#[test]
fn bash_completes_subcommands_and_their_words_from_the_generated_script() {
    let m = moat_without_guest();
    let script = m.ok(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moat.bash");
    std::fs::write(&path, &script).unwrap();
    // Bash calls a completion function with the command, the word and the previous word.
    let complete = |words: &[&str]| {
        let array = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
        let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
        let probe = format!(
            "source '{}'; COMP_WORDS=({array}); COMP_CWORD={}; _moat moat '{cur}' '{prev}'; echo \"${{COMPREPLY[@]}}\"",
            path.display(),
            words.len() - 1
        );
        let out = Command::new("bash").args(["--norc", "-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(complete(&["moat", "pol"]), "policy");
    assert_eq!(complete(&["moat", "policy", "pr"]), "preset");
    assert_eq!(
        complete(&["moat", "policy", "allow", ""]).split(' ').filter(|w| !w.starts_with('-')).collect::<Vec<_>>(),
        ["network", "request"]
    );
    let top = complete(&["moat", ""]);
    assert!(top.contains("run") && top.contains("completions"), "{top}");
    assert!(!top.contains("__supervise"), "internal commands are not offered: {top}");
    for shell in ["zsh", "fish"] {
        assert!(m.ok(&["completions", shell]).contains("policy"), "{shell}");
    }
    let err = m.run(&["completions", "tcsh"]);
    assert!(!err.status.success());
}
