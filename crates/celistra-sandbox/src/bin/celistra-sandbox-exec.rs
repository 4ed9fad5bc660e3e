//! A stand-alone sandbox launcher, for the crate's tests and for debugging a plan by hand. The
//! daemon uses its own binary (`celistrad __sandbox-exec …`) instead.

fn main() {
    celistra_sandbox::launcher_main()
}
