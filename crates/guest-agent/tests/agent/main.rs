//! Exec server tests: a real [`Server`] in this process, real child processes, real
//! Unix sockets. No mocks.
//!
//! The server's reaper waits for *every* child of this process, so nothing in this
//! test binary may spawn processes any other way (e.g. `std::process::Command`).
//! Some tests switch users, so they expect to run as root.

mod harness;

mod exec;
mod protocol;
mod tty;
