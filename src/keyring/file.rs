//! Keyring files on disk: created with mode 0600 and never overwritten,
//! replaced atomically (a 0600 sibling, then a rename), and read into a
//! zeroizing buffer. A keyring that group or others can read is refused,
//! with the `chmod` that fixes it: anyone who can read it can reveal every
//! mask.

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

/// The text of a key file, in a buffer zeroed on drop. Refused when group
/// or others can read the file.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(io(path))
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
        assert_eq!(read_key_file(&path).unwrap().as_str(), "two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
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
