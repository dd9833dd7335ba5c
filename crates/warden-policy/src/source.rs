//! Policy source: the `.cedar` files of a policy directory, in a canonical order, with the content
//! hash that names a policy version.
//!
//! This is the only place the crate touches the filesystem ([`load_dir`]), and only to read; everything
//! after it works on the in-memory [`PolicySource`], so the server can also build one from a request
//! body or the store. Limits keep a hostile or mistaken directory from exhausting memory.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Most policy files in one set.
pub const MAX_FILES: usize = 10_000;
/// Largest single policy file.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Largest policy set, all files together.
pub const MAX_TOTAL_BYTES: usize = 32 * 1024 * 1024;

/// One policy file: its name (relative to the policy directory) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFile {
    pub name: String,
    pub text: String,
}

/// A set of policy files, sorted by name. Its [`version`](PolicySource::version) is a content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    files: Vec<PolicyFile>,
}

/// A policy source could not be read or breaks a limit.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read policy directory `{path}`: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read policy file `{path}`: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file `{name}` is not valid UTF-8")]
    NotUtf8 { name: String },
    #[error("policy file `{name}` is {size} bytes; the limit is {MAX_FILE_BYTES}")]
    FileTooLarge { name: String, size: usize },
    #[error("the policy set is {size} bytes; the limit is {MAX_TOTAL_BYTES}")]
    TooLarge { size: usize },
    #[error("the policy set has {count} files; the limit is {MAX_FILES}")]
    TooManyFiles { count: usize },
    #[error("policy file `{name}` appears twice")]
    DuplicateFile { name: String },
    #[error("policy file name `{name}` must be a plain name ending in `.cedar`")]
    BadName { name: String },
}

impl PolicySource {
    /// Builds a source from in-memory files (name, text). Names must end in `.cedar` and contain no
    /// path separators; order does not matter (files are sorted by name).
    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Result<Self, SourceError> {
        let mut out: Vec<PolicyFile> = Vec::new();
        let mut total = 0usize;
        for (name, text) in files {
            if !name.ends_with(".cedar") || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
                return Err(SourceError::BadName {
                    name: name.escape_debug().to_string(),
                });
            }
            if text.len() > MAX_FILE_BYTES {
                return Err(SourceError::FileTooLarge {
                    name,
                    size: text.len(),
                });
            }
            total += text.len();
            if total > MAX_TOTAL_BYTES {
                return Err(SourceError::TooLarge { size: total });
            }
            out.push(PolicyFile { name, text });
            if out.len() > MAX_FILES {
                return Err(SourceError::TooManyFiles { count: out.len() });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(SourceError::DuplicateFile {
                name: w[0].name.clone(),
            });
        }
        Ok(Self { files: out })
    }

    /// A source of one file, for tests and tools.
    pub fn single(name: &str, text: &str) -> Result<Self, SourceError> {
        Self::from_files([(name.to_owned(), text.to_owned())])
    }

    pub fn files(&self) -> &[PolicyFile] {
        &self.files
    }

    /// The content hash of the set: SHA-256 over, for each file in name order, the name, a NUL, the
    /// length in decimal, a NUL, and the bytes; lowercase hex. Renaming, reordering or editing a file
    /// changes it; reading the same directory twice does not.
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(f.name.as_bytes());
            h.update([0]);
            h.update(f.text.len().to_string().as_bytes());
            h.update([0]);
            h.update(f.text.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Reads every `*.cedar` regular file directly in `dir` (not in subdirectories: `tests/` holds test
/// cases), sorted by name, within the size limits.
pub fn load_dir(dir: &Path) -> Result<PolicySource, SourceError> {
    let read_dir = |e| SourceError::ReadDir {
        path: dir.to_owned(),
        source: e,
    };
    let mut files = Vec::new();
    let mut total = 0usize;
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("cedar") {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| SourceError::ReadFile {
            path: path.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        if size > MAX_FILE_BYTES {
            return Err(SourceError::FileTooLarge { name, size });
        }
        total = total.saturating_add(size);
        if total > MAX_TOTAL_BYTES {
            return Err(SourceError::TooLarge { size: total });
        }
        if files.len() >= MAX_FILES {
            return Err(SourceError::TooManyFiles {
                count: files.len() + 1,
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| SourceError::ReadFile {
            path: path.clone(),
            source: e,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 { name: name.clone() })?;
        files.push((name, text));
    }
    PolicySource::from_files(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_a_content_hash_independent_of_order() {
        let a = PolicySource::from_files([
            ("b.cedar".to_owned(), "x".to_owned()),
            ("a.cedar".to_owned(), "y".to_owned()),
        ])
        .expect("ok");
        let b = PolicySource::from_files([
            ("a.cedar".to_owned(), "y".to_owned()),
            ("b.cedar".to_owned(), "x".to_owned()),
        ])
        .expect("ok");
        assert_eq!(a.version(), b.version());
        assert_eq!(a.version().len(), 64);
        assert_eq!(a.files()[0].name, "a.cedar");
        let c = PolicySource::from_files([
            ("a.cedar".to_owned(), "yx".to_owned()),
            ("b.cedar".to_owned(), "".to_owned()),
        ])
        .expect("ok");
        assert_ne!(a.version(), c.version());
    }

    /// `warden_ledger::policy::set_version` is the same hash (an auditor's offline check and the
    /// server's refusal to load an edited set rely on it): the two must never drift apart.
    #[test]
    fn version_equals_the_ledgers_content_hash() {
        for files in [
            vec![],
            vec![("a.cedar", "permit(principal, action, resource);")],
            vec![("b.cedar", "x"), ("a.cedar", "yé\n"), ("Z.cedar", "")],
        ] {
            let owned: Vec<(String, String)> = files
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect();
            let source = PolicySource::from_files(owned.clone()).expect("ok");
            let map: std::collections::BTreeMap<String, String> = owned.into_iter().collect();
            assert_eq!(source.version(), warden_ledger::policy::set_version(&map));
        }
    }

    #[test]
    fn names_and_limits() {
        assert!(matches!(
            PolicySource::single("../x.cedar", ""),
            Err(SourceError::BadName { .. })
        ));
        assert!(matches!(
            PolicySource::single("x.txt", ""),
            Err(SourceError::BadName { .. })
        ));
        let big = "a".repeat(MAX_FILE_BYTES + 1);
        assert!(matches!(
            PolicySource::single("x.cedar", &big),
            Err(SourceError::FileTooLarge { .. })
        ));
        let dup = PolicySource::from_files([
            ("a.cedar".to_owned(), String::new()),
            ("a.cedar".to_owned(), String::new()),
        ]);
        assert!(matches!(dup, Err(SourceError::DuplicateFile { .. })));
    }

    #[test]
    fn load_dir_reads_cedar_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b.cedar"), "// b").expect("write");
        std::fs::write(dir.path().join("a.cedar"), "// a").expect("write");
        std::fs::write(dir.path().join("notes.md"), "x").expect("write");
        std::fs::create_dir(dir.path().join("tests")).expect("mkdir");
        let src = load_dir(dir.path()).expect("load");
        let names: Vec<_> = src.files().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.cedar", "b.cedar"]);
        let e = load_dir(&dir.path().join("missing")).expect_err("missing");
        assert!(e.to_string().starts_with("cannot read policy directory"), "{e}");
    }
}
