//! The pidfile: written atomically once the process serves, removed only while it names us.

use crate::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `pid` to `path` through a temporary file in the same directory, swapped into place, so
/// a reader never sees a partial pidfile, nor none at all.
pub(crate) fn write(path: &Path, pid: u32) -> Result<(), Error> {
    let fail = |source| Error::Pidfile {
        path: path.to_owned(),
        source,
    };
    let tmp = temporary(path, pid);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(format!("{pid}\n").as_bytes()))
        .and_then(|()| replace(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// Puts `tmp` in the place of `path`. A rename over an existing file makes ext4 allocate and
/// start writing the new file's blocks at once (its `auto_da_alloc` safeguard), which took about
/// half a millisecond of every restart's critical path here; exchanging the two names and
/// removing the old file does not. Where the exchange is not supported, or `path` does not exist
/// yet, a plain rename.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn replace(tmp: &Path, path: &Path) -> std::io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    // Only a file is swapped out: a directory in the way must stay an error, as with a rename.
    let a_file = std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir());
    if a_file && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE).is_ok() {
        // `tmp` names the previous pidfile now; the new one is in place whatever happens to it.
        if let Err(e) = std::fs::remove_file(tmp) {
            tracing::warn!(
                "cannot remove the previous pidfile, now {}: {e}",
                tmp.display()
            );
        }
        return Ok(());
    }
    std::fs::rename(tmp, path)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn replace(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp, path)
}

/// The pid the file names, if it can be read.
pub(crate) fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes the pidfile if it still names `pid` (a newer process may own it now).
pub(crate) fn remove_if_ours(path: &Path, pid: u32) {
    if read(path) == Some(pid) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove pidfile {}: {e}", path.display());
        }
    }
}

fn temporary(path: &Path, pid: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{pid}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = std::env::temp_dir().join(format!("uninterruptible-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.pid");
        write(&path, 42).unwrap();
        assert_eq!(read(&path), Some(42));
        remove_if_ours(&path, 43);
        assert!(path.exists());
        remove_if_ours(&path, 42);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(write(&dir.join("server.pid"), 1).is_err());
    }

    #[test]
    fn a_pidfile_is_replaced_in_place_and_a_directory_in_the_way_is_an_error() {
        let dir = std::env::temp_dir().join(format!("uninterruptible-pid2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.pid");
        write(&path, 41).unwrap();
        write(&path, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42\n");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["server.pid"], "the previous pidfile is removed");

        let in_the_way = dir.join("a-directory");
        std::fs::create_dir(&in_the_way).unwrap();
        assert!(write(&in_the_way, 43).is_err());
        assert!(in_the_way.is_dir(), "the directory stays where it was");
        assert!(
            !temporary(&in_the_way, 43).exists(),
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
