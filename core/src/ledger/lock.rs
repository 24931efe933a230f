//! The state lock: one writer at a time (apply, `state rm`).
//!
//! It is an OS-level lock (`File::try_lock`, `flock` on Linux) on a lock file beside the
//! database, `<state>.lock`. The database file's own locks belong to SQLite, so the lock file is
//! separate. The operating system drops the lock when its holder exits for any reason,
//! including SIGKILL, so a crashed holder never leaves it stuck; the lock file itself stays
//! (deleting it would let two processes lock two different inodes of the same name).
//!
//! The holder writes who it is into the lock file; whoever is refused reads it to say who holds
//! the lock. That content is advisory: it is only trusted while the OS lock is held.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting `--lock-timeout` tries again.
const POLL: Duration = Duration::from_millis(100);

/// Who holds the lock, as written into the lock file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// The holder's host name.
    pub host: String,
    /// The holder's process ID.
    pub pid: u32,
    /// What it is doing (`apply`, `state rm`).
    pub operation: String,
    /// Since when.
    pub since: jiff::Timestamp,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {} on {}, since {})",
            self.operation,
            self.pid,
            self.host,
            self.since.strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    /// Another process holds it.
    #[error("the state {state} is locked by {}", holder.as_ref().map_or_else(|| "another timctl (holder unknown)".to_owned(), |h| h.to_string()))]
    #[diagnostic(
        code(timctl::state::locked),
        help(
            "wait for it to finish, or pass --lock-timeout 5m to wait; the lock frees itself when its holder exits, even after a crash"
        )
    )]
    Locked {
        /// The state database.
        state: PathBuf,
        /// Who holds it, when the lock file says.
        holder: Option<LockHolder>,
        /// How long timctl waited.
        waited: Duration,
    },
    /// An I/O error on the lock file or its directory.
    #[error("cannot {doing} {path}")]
    #[diagnostic(code(timctl::state::lock_io))]
    Io {
        /// What timctl was doing.
        doing: &'static str,
        /// The lock file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on one state, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    state: PathBuf,
    path: PathBuf,
    holder: LockHolder,
}

/// The lock file of the state database at `state`: `<state>.lock`.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates `dir` and its parents, private to the user (0700) where it creates them.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens (creating if needed, mode 0600) a file for reading and writing.
pub(crate) fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

impl StateLock {
    /// Takes the exclusive lock of the state at `state` for `operation`, waiting up to
    /// `timeout` (polling) while another process holds it. Creates the state's directory.
    pub fn acquire(state: &Path, operation: &str, timeout: Duration) -> Result<Self, LockError> {
        let path = lock_path(state);
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(|source| LockError::Io {
                doing: "create the state directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut file = open_private(&path).map_err(|source| LockError::Io {
            doing: "open the lock file",
            path: path.clone(),
            source,
        })?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(LockError::Locked {
                            state: state.to_owned(),
                            holder: read_holder(&path),
                            waited,
                        });
                    }
                    std::thread::sleep(POLL.min(timeout - waited));
                }
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Io {
                        doing: "lock",
                        path,
                        source,
                    });
                }
            }
        }
        let holder = LockHolder {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            operation: operation.to_owned(),
            since: jiff::Timestamp::now(),
        };
        let text = serde_json::to_string(&holder).expect("a LockHolder always serializes");
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(|source| LockError::Io {
            doing: "write the holder into the lock file",
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            file,
            state: state.to_owned(),
            path,
            holder,
        })
    }

    /// The state database this lock is for.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who holds it: this process.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Clear the holder first so nobody reads a stale name, then release. Closing the file
        // would release the lock anyway; unlocking explicitly says so.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Reads who holds the lock; `None` when the file is empty or unreadable (the holder may be
/// between taking the lock and writing its name).
pub fn read_holder(lock_file: &Path) -> Option<LockHolder> {
    let mut text = String::new();
    File::open(lock_file).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}
