//! The pidfile: written atomically once the process serves, removed only while it names us.

use crate::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `pid` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a partial pidfile.
pub(crate) fn write(path: &Path, pid: u32) -> Result<(), Error> {
    let fail = |source| Error::Pidfile {
        path: path.to_owned(),
        source,
    };
    let tmp = temporary(path, pid);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(format!("{pid}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
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
}
