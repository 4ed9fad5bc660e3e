//! The keeper as a binary of its own, installed next to `celistrad` (`celistra-keeper __keeper
//! DIR`): the long-lived parent of every agent needs none of the daemon's code, and in this small
//! binary carries none of the 1.4 MiB of tables the daemon's binary relocates at start. Where it
//! is missing, the daemon starts `celistrad __keeper DIR`, the same keeper.

use std::process::ExitCode;

#[path = "../keeper_main.rs"]
mod keeper_main;

#[allow(
    clippy::print_stderr,
    reason = "the binary owns its terminal: a usage error before logging starts"
)]
fn main() -> ExitCode {
    // Before any thread exists, as the daemon's binary does.
    celistra_sandbox::limit_heap_arenas();
    if !keeper_main::is_keeper() {
        eprintln!("usage: celistra-keeper __keeper DIR (the daemon starts it)");
        return ExitCode::from(2);
    }
    keeper_main::run_keeper()
}
