//! The sandbox launcher for this crate's own tests (which cannot reach the `celistrad` package's
//! binaries) and for debugging a plan by hand. An installed daemon uses `celistra-launch`, the
//! same launcher in the `celistrad` package.

fn main() {
    celistra_sandbox::launcher_main()
}
