//! `moat run shell .` on a real terminal: the first-use network question, a login
//! shell, resizes, Ctrl-C, exit code.

use std::io::Write;
use std::time::Duration;

use crate::harness::moat;
use crate::pty::{expect, set_size};

#[test]
fn run_shell_gives_an_interactive_login_shell_that_follows_the_terminal() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("term");
    let mut cmd = m.cmd();
    cmd.current_dir(&ws).args(["run", "--name", "term", "-m", "1g", "shell", "."]);
    let crate::pty::OnTerminal { mut child, mut master, mut seen } = crate::pty::spawn(cmd, 30, 100);

    // First use on a terminal: Moat asks which network preset to start from.
    expect(&mut master, &mut seen, "choice [1]: ");
    master.write_all(b"3\r").unwrap();
    expect(&mut master, &mut seen, "$ ");
    assert_eq!(m.ok(&["policy", "preset"]), "deny-all\n", "the answer was kept");
    master.write_all(b"echo size=$(stty size) tty=$(tty) user=$(id -un) in=$PWD\r").unwrap();
    expect(&mut master, &mut seen, &format!("size=30 100 tty=/dev/pts/1 user=agent in={}", ws.display()));

    // The host terminal is resized: SIGWINCH reaches moat, which resizes the guest's terminal.
    set_size(&master, 45, 132);
    std::thread::sleep(Duration::from_millis(300));
    master.write_all(b"echo resized=$(stty size)\r").unwrap();
    expect(&mut master, &mut seen, "resized=45 132");

    // Ctrl-C interrupts the foreground job and the shell lives on.
    master.write_all(b"sleep 60\r").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    master.write_all(&[0x03]).unwrap();
    master.write_all(b"echo after=interrupt\r").unwrap();
    expect(&mut master, &mut seen, "after=interrupt");

    // Login shells read /etc/sandbox-persistent.sh.
    master.write_all(b"echo 'export PERSIST=kept' | sudo tee /etc/sandbox-persistent.sh >/dev/null; bash -lc 'echo persist=$PERSIST'\r").unwrap();
    expect(&mut master, &mut seen, "persist=kept");

    master.write_all(b"exit 3\r").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "moat exits with the shell's code");
}
