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
//!
//! The lock file follows the state's name, but a hard link gives one database two names, and
//! so two lock files. The holder therefore also locks the database file itself (`flock`, which
//! on Linux is independent of SQLite's own `fcntl` locks on it): the OS keys that lock by the
//! file, not the name, so a second writer through another name is refused too. A state that
//! does not exist yet has no file to lock; nobody can have linked it yet either.

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
    /// Another process holds the database file itself, through another name (a hard link):
    /// its lock file is beside that name, so the holder is not known here.
    #[error(
        "the state {state} is locked by another timctl that opened it under another name (a hard link to the same file)"
    )]
    #[diagnostic(
        code(timctl::state::locked),
        help(
            "two names of one database are one state; wait for the other run to finish (--lock-timeout 5m), and use one name for it"
        )
    )]
    LockedThroughAnotherName {
        /// The state database.
        state: PathBuf,
        /// How long timctl waited.
        waited: Duration,
    },
    /// The state's directory or the lock file is refused.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Path(#[from] StatePathError),
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
    /// The database file, locked too (when it existed), so that a hard link to it, which has
    /// a lock file of its own, cannot give it a second writer.
    database: Option<File>,
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

/// Why timctl refuses the path of a state (its directory, the database or the lock file).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StatePathError {
    /// An I/O error while looking at the path.
    #[error("cannot {doing} {path}")]
    #[diagnostic(code(timctl::state::path_io))]
    Io {
        /// What timctl was doing.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory could be changed by someone else than the user running timctl.
    #[error("refusing the state directory {}: {why}", path.display())]
    #[diagnostic(
        code(timctl::state::unsafe_directory),
        help(
            "another user could replace the state's files there; keep the state in a directory of your own that only you can write (chmod go-w), or one with the sticky bit like /tmp"
        )
    )]
    UnsafeDirectory {
        /// The directory, resolved.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The database or the lock file is a link or a special file.
    #[error("refusing {}: it is {what}, and timctl opens its state files only as regular files", path.display())]
    #[diagnostic(
        code(timctl::state::not_a_file),
        help(
            "timctl never follows a symbolic link for its state; point --state (TIMCTL_STATE) at the real file, or remove the link"
        )
    )]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is instead ("a symbolic link", "a directory").
        what: &'static str,
    },
}

/// Resolves `state` for writing: creates its directory (0700) when missing, refuses one that
/// another user could change ([`check_dir`]), and returns the directory canonicalized with the
/// file name kept (the file itself is never followed). Every spelling of one state (relative,
/// absolute, through a linked directory) resolves to the same path, so they share one lock;
/// and the result is absolute, so SQLite never reads it as a `file:` URI: a state path is
/// always a plain file name.
pub fn resolve_state_for_write(state: &Path) -> Result<PathBuf, StatePathError> {
    let (dir, name) = split_state(state)?;
    create_private_dir(dir).map_err(|source| StatePathError::Io {
        doing: "create the state directory",
        path: dir.to_owned(),
        source,
    })?;
    let resolved = canonical_dir(dir)?;
    check_dir(&resolved)?;
    Ok(resolved.join(name))
}

/// Resolves `state` for reading, as [`resolve_state_for_write`] does but creating and checking
/// nothing: `None` when its directory does not exist (then there is no state).
pub fn resolve_state_for_read(state: &Path) -> Result<Option<PathBuf>, StatePathError> {
    let (dir, name) = split_state(state)?;
    if !dir.exists() {
        return Ok(None);
    }
    Ok(Some(canonical_dir(dir)?.join(name)))
}

/// The directory of `state` ("." for a bare file name) and its file name.
fn split_state(state: &Path) -> Result<(&Path, &std::ffi::OsStr), StatePathError> {
    let Some(name) = state.file_name() else {
        return Err(StatePathError::NotAFile {
            path: state.to_owned(),
            what: "not a file name",
        });
    };
    let dir = match state.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn canonical_dir(dir: &Path) -> Result<PathBuf, StatePathError> {
    std::fs::canonicalize(dir).map_err(|source| StatePathError::Io {
        doing: "resolve the state directory",
        path: dir.to_owned(),
        source,
    })
}

/// Refuses a directory owned by another user (root aside) or writable by group or others
/// without the sticky bit: there, someone else could swap the state or its lock for a link.
/// A sticky world-writable directory such as `/tmp` is fine, since only a file's owner may
/// replace it.
pub fn check_dir(dir: &Path) -> Result<(), StatePathError> {
    use std::os::unix::fs::MetadataExt;

    let meta = std::fs::metadata(dir).map_err(|source| StatePathError::Io {
        doing: "inspect the state directory",
        path: dir.to_owned(),
        source,
    })?;
    let me = rustix::process::getuid().as_raw();
    let unsafe_dir = |why: String| StatePathError::UnsafeDirectory {
        path: dir.to_owned(),
        why,
    };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_dir(format!(
            "it belongs to user {}, not to you (user {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_dir(format!(
            "group or others may write to it (mode {:o}) and it has no sticky bit",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Looks at a state file without following a link: `None` when absent, its metadata when it
/// is a regular file, an error for a link or anything else.
pub fn check_file(path: &Path) -> Result<Option<std::fs::Metadata>, StatePathError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StatePathError::NotAFile {
            path: path.to_owned(),
            what: "a symbolic link",
        }),
        Ok(m) if m.is_dir() => Err(StatePathError::NotAFile {
            path: path.to_owned(),
            what: "a directory",
        }),
        Ok(m) if !m.is_file() => Err(StatePathError::NotAFile {
            path: path.to_owned(),
            what: "a special file (a FIFO, socket or device)",
        }),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StatePathError::Io {
            doing: "inspect",
            path: path.to_owned(),
            source,
        }),
    }
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

/// Opens (creating if needed, mode 0600) a regular file for reading and writing, never
/// through a symbolic link (`O_NOFOLLOW`: a link planted after [`check_file`] fails the open
/// rather than redirecting it) and never inherited by a child (`O_CLOEXEC`, which std sets on
/// every open; named here so that it stays).
pub(crate) fn open_private(path: &Path) -> std::io::Result<File> {
    use rustix::fs::OFlags;

    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        options.custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

impl StateLock {
    /// Takes the exclusive lock of the state at `state` for `operation`, waiting up to
    /// `timeout` (polling) while another process holds it. Creates the state's directory.
    ///
    /// The lock is keyed on the resolved state ([`resolve_state_for_write`]): two spellings of one state
    /// share one lock. A state directory another user could change, or a lock file that is a
    /// link or a special file, is refused.
    pub fn acquire(state: &Path, operation: &str, timeout: Duration) -> Result<Self, LockError> {
        let state = resolve_state_for_write(state)?;
        let state = state.as_path();
        let path = lock_path(state);
        check_file(&path)?;
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
        let database = lock_database_file(state, start, timeout)?;
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
            database,
            state: state.to_owned(),
            path,
            holder,
        })
    }

    /// The state database this lock is for, resolved ([`resolve_state_for_write`]).
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
        if let Some(database) = &self.database {
            let _ = database.unlock();
        }
        let _ = self.file.unlock();
    }
}

/// Locks the database file at `state` itself, when it exists, waiting until `timeout` from
/// `start` as the lock file does. The file is opened read-only and never through a link; a
/// state that is a link or a special file is left for the ledger to refuse by name.
fn lock_database_file(
    state: &Path,
    start: Instant,
    timeout: Duration,
) -> Result<Option<File>, LockError> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;

    if !matches!(check_file(state), Ok(Some(_))) {
        return Ok(None);
    }
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(state);
    let file = match opened {
        Ok(file) => file,
        // Gone since it was looked at: nothing to lock; the ledger creates it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LockError::Io {
                doing: "open the state to lock it",
                path: state.to_owned(),
                source,
            });
        }
    };
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(TryLockError::WouldBlock) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(LockError::LockedThroughAnotherName {
                        state: state.to_owned(),
                        waited,
                    });
                }
                std::thread::sleep(POLL.min(timeout - waited));
            }
            Err(TryLockError::Error(source)) => {
                return Err(LockError::Io {
                    doing: "lock",
                    path: state.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Reads who holds the lock; `None` when the file is empty or unreadable (the holder may be
/// between taking the lock and writing its name).
pub fn read_holder(lock_file: &Path) -> Option<LockHolder> {
    let mut text = String::new();
    // A holder's name is a few hundred bytes; read no more whatever the file has become.
    File::open(lock_file)
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}
