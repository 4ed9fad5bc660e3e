//! Opening a link in the user's browser: the one process `celistrad ctl` starts (for `ctl
//! dashboard`), kept here so that every process the product creates comes from this crate.

use std::process::{Command, Stdio};

/// Starts `xdg-open URL` with no terminal streams and does not wait for it: the browser (or the
/// opener's error) is the user's to see, and `ctl` exits right after, so it is not reaped.
pub fn open_in_browser(url: &str) -> std::io::Result<()> {
    Command::new("xdg-open")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
}
