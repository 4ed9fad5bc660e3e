//! The state directory: its layout, its single-daemon lock, the machine secret and the machine id.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Home {
        Home { dir: dir.into() }
    }
    /// `auth.json` (0600): the machine secret.
    pub fn auth_file(&self) -> PathBuf {
        self.dir.join("auth.json")
    }
    /// `config.json`: the daemon's defaults, read at every spawn.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `agents.json` (0600): agent specs (environment values included) and their desired state.
    pub fn agents_file(&self) -> PathBuf {
        self.dir.join("agents.json")
    }
    /// `history.db` (0600): runs and output logs; never holds an environment value.
    pub fn history_file(&self) -> PathBuf {
        self.dir.join("history.db")
    }
    /// `celistrad.sock` (0600): the API over a Unix socket.
    pub fn socket_file(&self) -> PathBuf {
        self.dir.join("celistrad.sock")
    }
    /// `http.addr`: the bound HTTP address, for clients.
    pub fn addr_file(&self) -> PathBuf {
        self.dir.join("http.addr")
    }
    /// `celistrad.lock`: held (flock) by the running daemon; holds its pid.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("celistrad.lock")
    }
    /// `machine-id`: stable id of this daemon's state, for the fleet.
    pub fn machine_id_file(&self) -> PathBuf {
        self.dir.join("machine-id")
    }
    /// `machine-name`: the machine's name in a fleet (`--machine-name`, else the host name's).
    pub fn machine_name_file(&self) -> PathBuf {
        self.dir.join("machine-name")
    }

    /// Creates the directory (0700) if it does not exist.
    pub(crate) fn create(&self) -> Result<(), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                Error::io(
                    format!("cannot create state directory {}", self.dir.display()),
                    e,
                )
            })
    }

    /// Takes the single-daemon lock, failing with the running daemon's pid if another holds it.
    pub(crate) fn lock(&self) -> Result<File, Error> {
        let path = self.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::AlreadyRunning {
                home: self.dir.clone(),
                pid: text.trim().to_owned(),
            });
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        Ok(file)
    }

    /// Reads the machine secret, creating a 256-bit random one (0600) on first run. Refuses a secret
    /// file that others can read.
    pub(crate) fn load_or_create_secret(&self) -> Result<String, Error> {
        let path = self.auth_file();
        match fs::metadata(&path) {
            Ok(meta) => {
                refuse_readable_by_others(&path, &meta, "the machine secret")?;
                let text = fs::read_to_string(&path)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                let auth: AuthFile = celistra_core::json::parse(&text, &path.display().to_string())
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                if auth.secret.len() < 32 || !auth.secret.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::Invalid(format!(
                        "{}: `secret` must be at least 32 hex digits; delete the file to generate a new one",
                        path.display()
                    )));
                }
                Ok(auth.secret)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let secret = random_hex(32)?;
                let text = serde_json::to_string_pretty(&AuthFile {
                    secret: secret.clone(),
                })
                .expect("serialisable");
                write_new_private(&path, text.as_bytes())?;
                Ok(secret)
            }
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// The machine's name: `chosen` (`--machine-name`, which is kept for the next start), else the
    /// one kept in `machine-name`, else the host name's on first start (kept too).
    pub(crate) fn machine_name(&self, chosen: Option<&str>, host: &str) -> Result<String, Error> {
        let path = self.machine_name_file();
        let (name, keep) = match chosen {
            Some(name) => {
                celistra_core::names::validate_machine_name(name)
                    .map_err(|e| Error::Invalid(format!("--machine-name: {e}")))?;
                (name.to_owned(), true)
            }
            None => match fs::read_to_string(&path) {
                Ok(text) => {
                    let name = text.trim().to_owned();
                    celistra_core::names::validate_machine_name(&name).map_err(|e| {
                        Error::Invalid(format!(
                            "{}: {e}; fix it or start with --machine-name NAME",
                            path.display()
                        ))
                    })?;
                    (name, false)
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    (celistra_core::names::machine_name_from_host(host), true)
                }
                Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
            },
        };
        if keep {
            write_atomic_private(&path, format!("{name}\n").as_bytes())
                .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        }
        Ok(name)
    }

    /// Reads the machine id, creating one on first run.
    pub(crate) fn load_or_create_machine_id(&self) -> Result<String, Error> {
        let path = self.machine_id_file();
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            _ => {
                let id = format!("m-{}", random_hex(8)?);
                fs::write(&path, format!("{id}\n"))
                    .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
                Ok(id)
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AuthFile {
    secret: String,
}

/// A secret file must be readable by its owner only.
fn refuse_readable_by_others(path: &Path, meta: &fs::Metadata, what: &str) -> Result<(), Error> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Insecure(format!(
            "{} has mode {mode:04o}, so other users may read {what}; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// The trimmed text of a secret file (`what` names it in errors), refusing one others can read;
/// with `create`, a missing file is made (0600) with that text first.
pub(crate) fn read_private(
    path: &Path,
    what: &str,
    create: Option<&dyn Fn() -> Result<String, Error>>,
) -> Result<String, Error> {
    match fs::metadata(path) {
        Ok(meta) => {
            refuse_readable_by_others(path, &meta, what)?;
            let text = fs::read_to_string(path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(Error::Invalid(format!(
                    "{} is empty; put {what} in it or delete it",
                    path.display()
                )));
            }
            Ok(text.to_owned())
        }
        Err(e) if e.kind() == ErrorKind::NotFound && create.is_some() => {
            let text = create.expect("checked")()?;
            match write_new_private(path, format!("{text}\n").as_bytes()) {
                Ok(()) => Ok(text),
                // Another task made it first: use theirs.
                Err(_) if path.exists() => read_private(path, what, None),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(Error::io(
            format!("cannot read {what} from {}", path.display()),
            e,
        )),
    }
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        Error::io(
            "cannot read random bytes".into(),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_new_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// Replaces `path` atomically with `contents` (mode 0600): write a temporary file, fsync, rename,
/// fsync the directory. A crash leaves either the old or the new file, never a torn one.
pub(crate) fn write_atomic_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
