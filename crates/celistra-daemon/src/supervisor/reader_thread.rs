//! The thread that reads agents' output: a runtime of its own, so that terminal clients and API
//! work on the main runtime never delay reading a PTY or pipe (a program blocks as soon as its
//! PTY buffer is full: slow reading would slow the agent).

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// Owns the thread; dropping it stops the thread's runtime and waits for it.
#[derive(Debug)]
pub(crate) struct ReaderThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReaderThread {
    pub(crate) fn start() -> std::io::Result<ReaderThread> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("output-reader".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(ReaderThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where output readers run, and the runtime their PTYs and pipes must be registered with
    /// (enter it while creating them).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
