//! One process per data directory.
//!
//! Two brokers (or two copies of a service) writing the same files each believe they own them:
//! both hand out the same offsets to different records, and after a restart one side's
//! acknowledged data is gone. Every command that owns a data directory or a SQLite file therefore
//! holds a [`LockFile`] on it for as long as it runs.
//!
//! The lock is an exclusive advisory lock (`flock(2)` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::try_lock`) on a small file beside the data, so the kernel releases it when the
//! holder exits for any reason, SIGKILL included: a stale lock file never keeps anyone out. The
//! holder writes its pid into the file, so the process that is refused can say who holds it.
//! Locks are per open file, so a second lock in the *same* process is refused too.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another owner in this process) holds the lock.
    #[error("{} is in use by another process{}; stop it first, or use another directory", .path.display(), holder(*.pid))]
    InUse {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
    /// The lock file could not be created, read or written.
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An exclusive lock, held until this value is dropped (or the process ends).
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    // Kept open: closing the file releases the lock.
    _file: File,
}

impl LockFile {
    /// Takes the lock on `path` (created if missing; its directory must exist), or fails at once
    /// with [`Error::InUse`] naming the holder's pid. Never waits.
    pub fn acquire(path: impl Into<PathBuf>) -> Result<LockFile> {
        let path = path.into();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = read_pid(&mut file);
                return Err(Error::InUse { path, pid });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours now: say who we are, for the next one who is refused.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(LockFile { path, _file: file })
    }

    /// Takes the lock of a data directory: `<dir>/.lock`, as Kafka names its log directories'.
    pub fn for_dir(dir: &Path) -> Result<LockFile> {
        LockFile::acquire(dir.join(".lock"))
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
