//! The lock refuses a second owner, names the first, and is free again once the first is gone.

use ferry_lockfile::{Error, LockFile};

#[test]
fn a_second_owner_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = LockFile::for_dir(dir.path()).unwrap();
    match LockFile::for_dir(dir.path()) {
        Err(Error::InUse { path, pid }) => {
            assert_eq!(path, first.path());
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    let message = LockFile::for_dir(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
}

#[test]
fn the_lock_is_free_again_after_the_holder_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = LockFile::for_dir(dir.path()).unwrap();
    drop(first);
    let again = LockFile::for_dir(dir.path()).unwrap();
    assert!(again.path().exists());
}

#[test]
fn a_missing_directory_is_an_io_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").join("x.lock");
    assert!(matches!(LockFile::acquire(missing), Err(Error::Io { .. })));
}
