//! The content-addressed cache: kernels, guest images and the private apt state live under
//! one directory; an entry is complete only if its manifest's checksums still match.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where cached artifacts go: `--cache`, else `$DAXDIFF_CACHE`, else `$XDG_CACHE_HOME/daxdiff`.
pub fn default_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DAXDIFF_CACHE") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("daxdiff")
}

/// A stable key built from named parts: the same parts give the same key.
#[derive(Default)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    pub fn part(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// 16 hex digits: short enough for directory names, long enough not to collide here.
    pub fn finish(self) -> String {
        hex::encode(&self.hasher.finalize()[..8])
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What a finished cache entry holds: its files' checksums and free-form facts about it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub files: BTreeMap<String, String>,
    pub facts: BTreeMap<String, String>,
}

pub const MANIFEST: &str = "manifest.json";

/// One keyed entry directory in the cache.
pub struct Entry {
    pub dir: PathBuf,
    pub key: String,
}

impl Entry {
    pub fn new(root: &Path, kind: &str, label: &str, key: &str) -> Entry {
        Entry {
            dir: root.join(kind).join(format!("{label}-{key}")),
            key: key.to_string(),
        }
    }

    /// The manifest if the entry is complete and every listed file still has its checksum.
    /// A partial or corrupt entry yields `None` (and a note saying why), never a stale result.
    pub fn verify(&self) -> Option<Manifest> {
        let text = fs::read_to_string(self.dir.join(MANIFEST)).ok()?;
        let m: Manifest = serde_json::from_str(&text).ok()?;
        if m.key != self.key {
            return None;
        }
        for (rel, sum) in &m.files {
            match sha256_file(&self.dir.join(rel)) {
                Ok(s) if &s == sum => {}
                _ => {
                    eprintln!(
                        "cache: {} is damaged ({rel} changed); rebuilding it",
                        self.dir.display()
                    );
                    return None;
                }
            }
        }
        Some(m)
    }

    /// Builds the entry in a sibling temporary directory, writes the manifest last and renames
    /// the directory into place, so an interrupted build leaves nothing that looks complete.
    pub fn build(
        &self,
        build: impl FnOnce(&Path) -> Result<(Vec<String>, BTreeMap<String, String>)>,
    ) -> Result<Manifest> {
        let parent = self.dir.parent().expect("entry has a parent");
        fs::create_dir_all(parent)
            .with_context(|| format!("create cache dir {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(parent)
            .with_context(|| format!("create temporary dir in {}", parent.display()))?;
        let (files, facts) = build(tmp.path())?;
        let mut m = Manifest {
            key: self.key.clone(),
            files: BTreeMap::new(),
            facts,
        };
        for rel in files {
            let sum = sha256_file(&tmp.path().join(&rel))?;
            m.files.insert(rel, sum);
        }
        write_atomic(
            &tmp.path().join(MANIFEST),
            serde_json::to_string_pretty(&m)?.as_bytes(),
        )?;
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("remove stale cache entry {}", self.dir.display()))?;
        }
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &self.dir) {
            let _ = fs::remove_dir_all(&tmp);
            bail!("install cache entry {}: {e}", self.dir.display());
        }
        Ok(m)
    }
}

/// Writes a file so that readers see the old or the new content, never a torn one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("create temporary file in {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_sensitive_to_every_part() {
        let a = KeyBuilder::default()
            .part("kernel", "6.12.117")
            .part("recipe", "x")
            .finish();
        let b = KeyBuilder::default()
            .part("kernel", "6.12.117")
            .part("recipe", "x")
            .finish();
        let c = KeyBuilder::default()
            .part("kernel", "6.12.117")
            .part("recipe", "y")
            .finish();
        // Moving bytes between parts must change the key.
        let d = KeyBuilder::default()
            .part("kernel", "6.12.117r")
            .part("ecipe", "x")
            .finish();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn corrupt_or_partial_entries_are_not_used() {
        let root = tempfile::tempdir().unwrap();
        let e = Entry::new(root.path(), "guests", "g", "k1");
        assert!(e.verify().is_none(), "nothing built yet");
        e.build(|d| {
            fs::write(d.join("a"), b"hello")?;
            Ok((vec!["a".into()], BTreeMap::new()))
        })
        .unwrap();
        assert!(e.verify().is_some());
        // Corrupt the file: the entry is no longer valid.
        fs::write(e.dir.join("a"), b"hellO").unwrap();
        assert!(e.verify().is_none());
        // A failed build leaves no entry and no partial directory behind.
        let f = Entry::new(root.path(), "guests", "g", "k2");
        assert!(f.build(|_| anyhow::bail!("boom")).is_err());
        assert!(f.verify().is_none());
        let leftovers: Vec<_> = fs::read_dir(root.path().join("guests"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A manifest for another key does not count either.
        let g = Entry {
            dir: e.dir.clone(),
            key: "other".into(),
        };
        assert!(g.verify().is_none());
    }
}
