//! Reading files that come from outside (manifests, saved plans): regular files only, and never
//! more than a cap, whatever the file claims to be.
//!
//! The size a file reports is not trusted: `/dev/zero` reports 0 bytes and never ends, and a
//! file can grow while it is read. So the read itself is bounded (the cap plus one byte, to tell
//! "exactly the cap" from "more"), and devices, sockets and (unless asked for) FIFOs are refused
//! before a byte is read: a FIFO would block until a writer comes, a device may never end.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not a regular file.
    #[error("it is {what}, not a regular file")]
    NotRegular {
        /// What it is ("a FIFO (named pipe)", "a character device").
        what: &'static str,
    },
    /// Longer than the cap.
    #[error("it is larger than {cap} bytes")]
    TooLarge {
        /// The cap, in bytes.
        cap: u64,
    },
}

/// Which files a read accepts besides regular ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Regular files only (manifests: a FIFO or a device is almost surely a mistake).
    RegularOnly,
    /// Regular files and FIFOs (`apply <(cat plan.json)`), still capped.
    RegularOrFifo,
}

/// What kind of non-regular file `ft` is; `None` for a regular file.
fn special_kind(ft: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        None
    } else if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        Some("a special file")
    }
}

/// Whether the last component of a path may be a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Follow it: the user named this path themselves.
    Follow,
    /// Refuse it (`ELOOP`): the path was found by walking a directory, where a link could
    /// lead anywhere (`/proc/self/environ`, a credentials file), so it is never opened.
    Refuse,
}

/// Reads the whole of `path` (following links), refusing anything but a regular file (and a
/// FIFO when `accept` says so) and anything longer than `cap` bytes.
pub fn read_capped(path: &Path, cap: u64, accept: Accept) -> Result<Vec<u8>, ReadError> {
    read_capped_with(path, cap, accept, Links::Follow)
}

/// [`read_capped`], with a say on whether a link in the last component is followed. With
/// [`Links::Refuse`] the file is opened `O_NOFOLLOW`, so a file swapped for a link between a
/// directory walk and this read is refused too.
pub fn read_capped_with(
    path: &Path,
    cap: u64,
    accept: Accept,
    links: Links,
) -> Result<Vec<u8>, ReadError> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;

    // Non-blocking, so that opening a FIFO with no writer returns at once and the type check
    // below refuses it; the flag changes nothing for a regular file.
    let mut flags = OFlags::NONBLOCK;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if let Some(what) = special_kind(ft) {
        let fifo_accepted =
            accept == Accept::RegularOrFifo && std::os::unix::fs::FileTypeExt::is_fifo(&ft);
        if !fifo_accepted {
            return Err(ReadError::NotRegular { what });
        }
        // Reading an accepted FIFO waits for its writer, as `cat` would.
        rustix::fs::fcntl_setfl(&file, OFlags::empty()).map_err(std::io::Error::from)?;
    }
    // The reported size only sizes the first allocation, never more than the cap allows.
    let mut bytes = Vec::with_capacity(meta.len().min(cap.saturating_add(1)) as usize);
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(
            read_capped(&path, 5, Accept::RegularOnly).unwrap(),
            b"12345"
        );
        assert!(matches!(
            read_capped(&path, 4, Accept::RegularOnly),
            Err(ReadError::TooLarge { cap: 4 })
        ));
    }

    #[test]
    fn a_link_is_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            read_capped_with(&link, 10, Accept::RegularOnly, Links::Follow).unwrap(),
            b"secret"
        );
        assert!(matches!(
            read_capped_with(&link, 10, Accept::RegularOnly, Links::Refuse),
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn refuses_devices_and_directories() {
        for (path, what) in [("/dev/zero", "a character device"), ("/", "a directory")] {
            match read_capped(Path::new(path), 10, Accept::RegularOrFifo) {
                Err(ReadError::NotRegular { what: found }) => assert_eq!(found, what),
                other => panic!("{path}: {other:?}"),
            }
        }
    }
}
