//! The sandbox launcher as a binary of its own, installed next to `celistrad`: what bubblewrap
//! runs inside each sandbox to confine itself and execute the agent's command. It starts in about
//! half the time of `celistrad __sandbox-exec`, which the daemon uses when this binary is missing.

fn main() {
    celistra_sandbox::launcher_main()
}
