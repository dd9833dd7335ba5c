//! Files that receive a secret the server shows once (a task token, a join token): created new, mode
//! 0600, before the request is sent, so that a path that cannot be written (it exists, its directory is
//! missing) fails the command before the server issues anything; filled and fsynced once the answer
//! arrives; removed again if the command fails before that.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use warden_core::Secret;

/// A new, still empty file for a secret. Dropped without [`NewSecretFile::write`], it is removed.
#[derive(Debug)]
pub struct NewSecretFile {
    path: PathBuf,
    file: Option<File>,
}

impl NewSecretFile {
    /// Creates `path` (never overwriting: an existing file is an error), mode 0600. `what` names the
    /// secret in errors, e.g. `task token`.
    pub fn create(path: &Path, what: &str) -> anyhow::Result<Self> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = match options.open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} already exists; refusing to overwrite it with the {what} (choose a new file)",
                path.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("creating {} for the {what}", path.display()));
            }
        };
        Ok(Self {
            path: path.to_owned(),
            file: Some(file),
        })
    }

    /// Writes the secret and a newline, and fsyncs the file.
    pub fn write(mut self, secret: &Secret<String>) -> anyhow::Result<PathBuf> {
        let Some(mut file) = self.file.take() else {
            bail!("{} was already written", self.path.display());
        };
        let result = file
            .write_all(secret.expose().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&self.path);
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for NewSecretFile {
    fn drop(&mut self) {
        // Still open: never written, so the command failed; leave nothing behind.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_new_with_mode_0600_and_removed_unless_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let f = NewSecretFile::create(&path, "task token").unwrap();
        assert!(path.exists());
        drop(f);
        assert!(!path.exists(), "an unwritten file is removed");

        let f = NewSecretFile::create(&path, "task token").unwrap();
        f.write(&Secret::new("wdn_secret".into())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "wdn_secret\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }

        let e = NewSecretFile::create(&path, "task token").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "wdn_secret\n",
            "an existing file is left alone"
        );
        let e = NewSecretFile::create(&dir.path().join("no/such/dir"), "task token").unwrap_err();
        assert!(format!("{e:#}").contains("creating"), "{e:#}");
    }
}
