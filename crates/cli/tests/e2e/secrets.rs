//! Credentials: the guest sees format-true placeholders, never the value.

use std::io::Write;
use std::process::Stdio;

use crate::harness::{moat, stderr};

#[test]
fn the_guest_gets_placeholders_and_never_the_real_credential() {
    let Some(m) = moat() else { return };
    let real_gh = format!("ghp_{}", "Q7x".repeat(12));
    let real_ant = format!("sk-ant-api03-{}", "Zr9".repeat(31));
    m.ok(&["secret", "set", "-g", "github", "-t", &real_gh]);
    // From stdin, as the docs recommend.
    let mut child = m.cmd().args(["secret", "set", "-g", "anthropic"]).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{real_ant}\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    let listing = m.ok(&["secret", "ls", "--json"]);
    assert!(listing.contains("github") && listing.contains("anthropic"), "{listing}");
    assert!(!listing.contains(&real_gh) && !listing.contains(&real_ant), "ls never prints values");

    let ws = m.workspace("cred");
    m.sandbox("cred", &ws, &[]);
    let env = m.sh("cred", "echo $GH_TOKEN; echo $ANTHROPIC_API_KEY");
    let lines: Vec<&str> = env.lines().collect();
    assert!(
        lines[0].starts_with("github_pat_") && lines[0].len() == 93,
        "GitHub placeholder has the fine-grained token format: {env}"
    );
    assert!(lines[1].starts_with("sk-ant-api03-"), "Anthropic placeholder keeps the format: {env}");
    assert_ne!(lines[0], real_gh);
    assert_ne!(lines[1], real_ant);

    // Nowhere in the guest: not in any process's environment, not on its disks. The
    // search patterns are assembled inside the guest so no command line carries them.
    let hunt = "a=Q7x; a=$a$a$a$a; b=Zr9; b=$b$b$b$b; \
                cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -e \"$a\" -e \"$b\"; \
                grep -rl -e \"$a\" -e \"$b\" / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | wc -l";
    let out = m.run(&["exec", "-u", "root", "cred", "sh", "-c", hunt]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n0\n", "{}", stderr(&out));

    // Nor in plain text anywhere in Moat's own folder on the host.
    let grep = std::process::Command::new("grep")
        .args(["-rl", "-e", &real_gh, "-e", &real_ant])
        .arg(m.home())
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "plaintext credential in {}", String::from_utf8_lossy(&grep.stdout));

    // Removing the credential removes the placeholder from new processes.
    m.ok(&["secret", "rm", "-g", "github"]);
    assert_eq!(m.sh("cred", "echo \"[$GH_TOKEN]\""), "[]\n");
}
