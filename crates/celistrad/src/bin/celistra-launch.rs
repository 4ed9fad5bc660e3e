//! The sandbox launcher as a binary of its own, installed next to `celistrad`: the first process
//! of each sandbox, which sets it up, runs the agent's command in it and stays as its init. It
//! starts in about half the time of `celistrad __sandbox-exec`, which the daemon uses when this
//! binary is missing, and as an init costs less memory.
//!
//! It is also the keeper (`celistra-launch __keeper DIR`): a long-lived process that needs none
//! of the daemon's code, and in this small binary carries none of the 1.4 MiB of tables the
//! daemon's relocates at start.

use std::process::ExitCode;

#[path = "../keeper_main.rs"]
mod keeper_main;

fn main() -> ExitCode {
    if keeper_main::is_keeper() {
        // Before any thread exists, as the daemon's binary does.
        celistra_sandbox::limit_heap_arenas();
        return keeper_main::run_keeper();
    }
    celistra_sandbox::launcher_main()
}
