//! The sandbox launcher as a binary of its own, installed next to `celistrad`: the first process
//! of each sandbox, which sets it up, runs the agent's command in it and stays as its init. It
//! starts in about half the time of `celistrad __sandbox-exec`, which the daemon uses when this
//! binary is missing, and as an init costs less memory.

fn main() {
    celistra_sandbox::launcher_main()
}
