//! The private directory (mode 0700) that holds the handoff socket, and where it is made.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The private directory holding the handoff socket; removed with it when dropped (unless the
/// new process removed them first).
#[derive(Debug)]
pub(super) struct HandoffDir {
    dir: PathBuf,
    socket: PathBuf,
}

/// The prefix of every handoff directory's name.
pub(super) const DIR_PREFIX: &str = "uninterruptible-";
/// The handoff socket's name in its directory.
pub(super) const SOCKET_NAME: &str = "handoff.sock";
/// The longest path [`HandoffDir::create`] gives a handoff socket, below its base directory:
/// `/<prefix><pid>-<attempt>-<nanoseconds in hex>/handoff.sock`, each number at its longest.
pub(super) const LONGEST_BELOW_BASE: usize =
    1 + DIR_PREFIX.len() + 10 + 1 + 10 + 1 + 8 + 1 + SOCKET_NAME.len();

/// A directory this process can create entries in.
fn writable(dir: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    dir.is_dir() && access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
}

/// The directory to make handoff directories in: `tmp` (`$TMPDIR`), unless a handoff socket
/// there could be longer than a UNIX socket address holds, which would make every restart fail;
/// then the first short enough of `$XDG_RUNTIME_DIR` (private to the user) and `/tmp`.
pub(super) fn base_dir(tmp: &Path) -> PathBuf {
    let fits = |dir: &Path| {
        dir.as_os_str().len() + LONGEST_BELOW_BASE <= uninterruptible_grammar::MAX_SOCKET_PATH
    };
    // Only a directory this process can make the handoff directory in: an XDG_RUNTIME_DIR
    // kept from another user (`sudo -u`) or gone is passed over for /tmp.
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && writable(dir));
    [
        Some(tmp.to_path_buf()),
        runtime,
        Some(PathBuf::from("/tmp")),
    ]
    .into_iter()
    .flatten()
    .find(|dir| fits(dir))
    .unwrap_or_else(|| PathBuf::from("/tmp"))
}

impl HandoffDir {
    pub(super) fn create(base: &Path) -> io::Result<HandoffDir> {
        static ATTEMPT: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = ATTEMPT.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let dir = base.join(format!("{DIR_PREFIX}{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join(SOCKET_NAME);
                    return Ok(HandoffDir { dir, socket });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for HandoffDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => tracing::warn!(
                "cannot remove the handoff directory {}: {e}",
                self.dir.display()
            ),
            _ => {}
        }
    }
}

/// Removes a handoff socket and its directory, once the new process holds the listening
/// socket: if the old process is killed now, nothing is left in `$TMPDIR`. Only what looks like
/// ours is touched.
pub(super) fn remove_handoff_path(path: &Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let ours = dir
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(DIR_PREFIX));
        if ours {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn an_xdg_runtime_dir_that_cannot_be_used_is_passed_over() {
        let longest = uninterruptible_grammar::MAX_SOCKET_PATH - LONGEST_BELOW_BASE;
        let over = PathBuf::from(format!("/{}", "t".repeat(longest)));
        for unusable in ["/nonexistent/run/user/1000", "/proc/1"] {
            // SAFETY: the only test of this binary that sets XDG_RUNTIME_DIR.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", unusable) };
            assert_eq!(base_dir(&over), Path::new("/tmp"), "{unusable}");
        }
        unsafe { std::env::remove_var("XDG_RUNTIME_DIR") };
    }

    #[test]
    fn a_handoff_socket_always_fits_a_socket_address() {
        let short = Path::new("/var/tmp");
        assert_eq!(base_dir(short), short);
        // The longest base that fits, and one byte more.
        let longest = uninterruptible_grammar::MAX_SOCKET_PATH - LONGEST_BELOW_BASE;
        let fits = PathBuf::from(format!("/{}", "t".repeat(longest - 1)));
        assert_eq!(base_dir(&fits), fits);
        let over = PathBuf::from(format!("/{}", "t".repeat(longest)));
        let fallback = base_dir(&over);
        assert_ne!(fallback, over);
        assert!(
            fallback.as_os_str().len() <= longest,
            "{}",
            fallback.display()
        );

        // The longest name a handoff directory gets is within what was counted.
        let dir = HandoffDir::create(&std::env::temp_dir()).unwrap();
        let below = dir.socket().strip_prefix(std::env::temp_dir()).unwrap();
        assert!(below.as_os_str().len() < LONGEST_BELOW_BASE);
        let name = format!(
            "/{DIR_PREFIX}{}-{}-{:x}/{SOCKET_NAME}",
            u32::MAX,
            u32::MAX,
            999_999_999u32
        );
        assert_eq!(name.len(), LONGEST_BELOW_BASE);
    }
}
