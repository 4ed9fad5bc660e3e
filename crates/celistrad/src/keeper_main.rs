//! The keeper's entry point (`__keeper DIR`), shared by two binaries: the daemon starts
//! `celistra-keeper __keeper DIR` where that small binary is installed beside it, and
//! `celistrad __keeper DIR` where it is not.

use std::path::PathBuf;
use std::process::ExitCode;

/// Whether this process was started as a keeper (its first argument is the keeper's).
pub(crate) fn is_keeper() -> bool {
    std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == celistra_sandbox::keeper::KEEPER_ARG)
}

/// Serves the keeper of the directory named by the second argument until it ends.
#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the daemon waits for the keeper's line on stdout; stderr is keeper.log"
)]
pub(crate) fn run_keeper() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CELISTRA_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let Some(dir) = std::env::args_os().nth(2).map(PathBuf::from) else {
        eprintln!("usage: celistrad __keeper DIR (the daemon starts it)");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the keeper's runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(celistra_sandbox::keeper::serve(&dir, || {
        // The daemon waits for this line: the keeper listens.
        println!("listening");
    }));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
