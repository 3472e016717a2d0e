//! Keyring files on disk: created with mode 0600 and never overwritten,
//! replaced atomically (a 0600 sibling, then a rename), and read straight
//! into a zeroizing buffer. A keyring that group or others can read is
//! refused, with the `chmod` that fixes it: anyone who can read it can
//! reveal every mask; so is one another user owns (they could swap it).

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Errors loading, creating or parsing a key file. All are configuration
/// errors (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file in question.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid veil keyring.
    #[error("key file {path} is not a valid veil keyring: {reason}")]
    Invalid {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it (never the key material).
        reason: String,
    },
    /// Group or others may read the file.
    #[error("key file {path} can be read by group or others (mode {mode:03o}); anyone who reads it can reveal every mask. Fix: chmod 600 {path}")]
    TooOpen {
        /// The file in question.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file belongs to another user, who could replace the keys.
    #[error("key file {path} is owned by uid {owner}, not by the user veil runs as (uid {running}) or root; whoever owns it can swap the keys. Fix: chown {running} {path}")]
    WrongOwner {
        /// The file in question.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user veil runs as.
        running: u32,
    },
    /// Refused to overwrite an existing key file.
    #[error("key file {0} already exists; refusing to overwrite a key (masks made with it would become unreadable)")]
    Exists(PathBuf),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The text of a key file, in a buffer zeroed on drop, read straight
/// into it (no intermediate buffer that would be freed unzeroed). The
/// mode and the owner are checked on the open file, so a file swapped
/// between the check and the read cannot slip through: refused when group
/// or others can read it, or when it belongs to a user other than the one
/// veil runs as (or root).
pub fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let metadata = file.metadata().map_err(io(path))?;
    #[cfg(unix)]
    check_access(path, &metadata)?;
    let expected = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    // One more byte than the file holds, so reading to the end never grows
    // (and reallocates) the buffer unless the file grew meanwhile.
    let mut bytes = Zeroizing::new(Vec::with_capacity(expected.saturating_add(1)));
    file.read_to_end(&mut bytes).map_err(io(path))?;
    // The bytes move into the String, no copy; refused, they are zeroed.
    String::from_utf8(std::mem::take(&mut *bytes))
        .map(Zeroizing::new)
        .map_err(|error| {
            drop(Zeroizing::new(error.into_bytes()));
            KeyFileError::Invalid {
                path: path.to_path_buf(),
                reason: "it is not UTF-8 text".into(),
            }
        })
}

/// Mode and owner checks of an open key file.
#[cfg(unix)]
fn check_access(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let running = unsafe { libc::geteuid() };
    let owner = metadata.uid();
    if owner != running && owner != 0 {
        return Err(KeyFileError::WrongOwner {
            path: path.to_path_buf(),
            owner,
            running,
        });
    }
    Ok(())
}

/// Creates `path` with mode 0600 (and its directory) and writes `bytes`.
/// Never overwrites an existing file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(path))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_path_buf())
        } else {
            io(path)(source)
        }
    })?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Replaces a key file atomically (write a 0600 sibling, then rename), so
/// a crash mid-write never leaves a half-written keyring.
pub fn replace(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let temporary = sibling(path, ".veil-tmp");
    let _ = std::fs::remove_file(&temporary);
    write_private_file(&temporary, text.as_bytes())?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_key_file_is_created_0600_never_overwritten_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.json");
        write_private_file(&path, b"one").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(matches!(
            write_private_file(&path, b"two"),
            Err(KeyFileError::Exists(_))
        ));
        replace(&path, "two").unwrap();
        let read = read_key_file(&path).unwrap();
        assert_eq!(read.as_str(), "two");
        assert_eq!(read.capacity(), 4, "read into one buffer that never grew");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_key_file_another_user_owns_is_refused_with_the_chown_that_fixes_it() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can give a file away
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        write_private_file(&path, b"{}").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();

        let error = read_key_file(&path).unwrap_err().to_string();

        assert!(error.contains("owned by uid 65534"), "{error}");
        assert!(
            error.contains(&format!("chown 0 {}", path.display())),
            "{error}"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_chmod_that_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        write_private_file(&path, b"{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let error = read_key_file(&path).unwrap_err().to_string();

        assert!(error.contains("mode 644"), "{error}");
        assert!(
            error.contains(&format!("chmod 600 {}", path.display())),
            "{error}"
        );
    }
}
