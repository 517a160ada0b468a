//! `--branch`: the agent commits on its own branch inside the VM; the user
//! reviews, applies, and `rm` refuses to lose work.

use std::path::Path;
use std::process::Command;

use crate::harness::{moat, stderr, stdout};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "User")
        .env("GIT_AUTHOR_EMAIL", "user@example.com")
        .env("GIT_COMMITTER_NAME", "User")
        .env("GIT_COMMITTER_EMAIL", "user@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_agent_commits_on_its_branch_and_the_user_reviews_and_applies() {
    let Some(m) = moat() else { return };
    let repo = m.workspace("repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "first"]);
    let host_objects_before = git(&repo, &["count-objects"]);

    m.ok(&["create", "--name", "feat", "-m", "1g", "--branch", "auto", "shell", repo.to_str().unwrap()]);
    let info = m.status("feat");
    let ws = info["workspace"].as_str().unwrap().to_string();
    assert!(ws.starts_with(&format!("{}/.moat/", repo.display())), "{ws}");
    assert_eq!(
        std::fs::read_to_string(repo.join(".gitignore")).ok(),
        None,
        "the user's .gitignore is not created or changed"
    );

    // Inside the VM: a normal git workflow as the agent user, in the checkpoint clone.
    // The clone's git configuration and hooks are read-only to the guest.
    let plant =
        m.run(&["exec", "feat", "sh", "-c", "printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > .git/hooks/post-checkout"]);
    assert!(!plant.status.success(), "the guest cannot write the clone's hooks");
    let out = m.run(&["exec", "feat", "git", "config", "user.name", "Agent"]);
    assert!(!out.status.success(), "nor its config");
    let script = "git config --global user.name Agent && git config --global user.email agent@example.com \
                  && echo 'from the agent' > feature.txt && mkdir -p .husky && printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > .husky/post-checkout \
                  && chmod +x .husky/post-checkout \
                  && f=$(printf 'name\\033]0;pwned\\007.txt') && printf 'clear\\033[2Jscreen\\n' > \"$f\" \
                  && git add feature.txt .husky \"$f\" && git commit -qm 'agent: add feature' && git log --oneline | wc -l";
    assert_eq!(m.sh("feat", script), "2\n");
    assert_eq!(git(&repo, &["count-objects"]), host_objects_before, "nothing was written into the host's .git");

    let diff = m.ok(&["diff", "feat"]);
    assert!(diff.contains("+from the agent"), "{diff}");
    let review = m.ok(&["review", "feat"]);
    assert!(review.contains(".husky/post-checkout"), "review reports the executable it added:\n{review}");
    // The agent's escape sequences (a file name that sets the terminal title, a
    // line that clears the screen) reach the terminal only as visible text.
    for (what, out) in [("diff", &diff), ("review", &review)] {
        assert!(!out.contains(['\u{1b}', '\u{7}', '\u{9b}']), "moat {what} passed a control sequence:\n{out:?}");
    }
    assert!(diff.contains("name\\033]0;pwned\\a.txt"), "moat diff shows the name, quoted:\n{diff}");
    assert!(diff.contains("clear\\x1b[2Jscreen"), "and the line, escaped:\n{diff}");

    // Work not yet applied: rm refuses and says what would be lost.
    let out = m.run(&["rm", "feat"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("agent: add feature"), "{}", stderr(&out));
    assert!(m.status("feat").is_object(), "the sandbox is still there");

    let out = m.cmd().current_dir(&repo).args(["apply", "feat"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("applied 1 commit"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(repo.join("feature.txt")).unwrap(), "from the agent\n");
    assert!(!Path::new("/tmp/pwned").exists(), "the agent's hook never ran on the host");

    // Applied work is on main now, so rm has nothing to lose.
    m.ok(&["rm", "feat"]);
    assert!(!Path::new(&ws).exists(), "rm removes the checkpoint clone");
    assert_eq!(std::fs::read_to_string(repo.join("feature.txt")).unwrap(), "from the agent\n");
}
