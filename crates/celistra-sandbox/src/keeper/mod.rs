//! The keeper: one small process per state directory that is the parent of every agent, so that
//! agents outlive the daemon. The daemon spawns through it (`Keeper::spawn`), reads and writes the
//! agents' terminals itself through descriptors the keeper hands over, and learns from it how runs
//! end. When the daemon goes (an upgrade's re-exec, a crash, `daemon stop --keep-agents`), the
//! keeper reads the agents' output into a bounded buffer; the next daemon takes everything over.
//! The keeper never outlives its agents: with no live run and no daemon it leaves what it still
//! holds (exit statuses, unread output) in a file and ends. See ARCHITECTURE.md, "Process
//! ownership and cleanup".

mod client;
mod server;
pub(crate) mod wire;

use std::io::Write;
use std::path::Path;

pub use client::{AdoptedRun, Keeper, KeeperError, KeptChild, KeptOutput, SpawnedRun, keeper_dir};
pub use server::{KEPT_PER_RUN, serve};
pub use wire::{HeldRun, KeptExit, OutputStream};

/// The first argument that makes `celistra-keeper` (or the daemon's binary) a keeper:
/// `celistra-keeper __keeper DIR`.
pub const KEEPER_ARG: &str = "__keeper";

/// The keeper's socket in its directory (0600, in a 0700 directory).
const SOCKET_FILE: &str = "keeper.sock";

/// Held while a keeper lives: one keeper per directory.
const LOCK_FILE: &str = "keeper.lock";

/// What a keeper that ended with no daemon left for the next one.
const LEFTOVER_FILE: &str = "leftover";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes frames as `[u32 LE length][frame]…` into `path` (0600), atomically.
fn write_frames(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode_0600()
            .open(&partial)?;
        for frame in frames {
            let length = u32::try_from(frame.len()).map_err(std::io::Error::other)?;
            file.write_all(&length.to_le_bytes())?;
            file.write_all(frame)?;
        }
        file.sync_all()?;
    }
    std::fs::rename(&partial, path)
}

/// Reads what [`write_frames`] wrote; a torn last frame is left out.
fn read_frames(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)?;
    let mut frames = vec![];
    let mut at = 0;
    while let Some(length) = bytes.get(at..at + 4) {
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let Some(frame) = bytes.get(at + 4..at + 4 + length) else {
            break;
        };
        frames.push(frame.to_vec());
        at += 4 + length;
    }
    Ok(frames)
}

trait OwnerOnly {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
