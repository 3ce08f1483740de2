//! What a cache entry holds: every file with its size and sha256 (and every symlink with its
//! target), recorded when the entry is built and checked against the disk when it is used.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The list of an entry's contents, beside its manifest.
pub const CONTENTS: &str = "contents.txt";

/// One thing an entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    File { size: u64, sha256: String },
    Link { target: PathBuf },
}

/// Every file and symlink under an entry's directory, by path relative to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents(pub BTreeMap<PathBuf, Held>);

/// How thoroughly [`Contents::check`] looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every path is there, of its kind and size, each symlink with its target: a stat per
    /// file, cheap enough for every use (see `Entry::verify`).
    Sizes,
    /// And every file's content hashes to what was recorded.
    Hashes,
}

impl Contents {
    /// Records everything under `dir` except the files at its top that describe the entry
    /// (`skip`) and the directory `scratch` (relative) its users write into. Device nodes,
    /// fifos and sockets (a chroot's `/dev`) are not content.
    pub fn record(dir: &Path, skip: &[&str], scratch: Option<&Path>) -> Result<Contents> {
        let mut c = BTreeMap::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let here = dir.join(&rel);
            for e in fs::read_dir(&here).with_context(|| format!("read {}", here.display()))? {
                let e = e?;
                let r = rel.join(e.file_name());
                if rel.as_os_str().is_empty() && skip.iter().any(|s| e.file_name() == *s) {
                    continue;
                }
                let t = e.file_type()?;
                if t.is_dir() {
                    if Some(r.as_path()) != scratch {
                        todo.push(r);
                    }
                } else if t.is_symlink() {
                    let target = fs::read_link(e.path())?;
                    c.insert(r, Held::Link { target });
                } else if t.is_file() {
                    let size = e.metadata()?.len();
                    let sha256 = super::sha256_file(&e.path())?;
                    c.insert(r, Held::File { size, sha256 });
                }
            }
        }
        Ok(Contents(c))
    }

    /// The first difference between the record and `dir`, said for a person; `None` if
    /// everything recorded is there as recorded. Files added since are not looked for.
    pub fn check(&self, dir: &Path, depth: Depth) -> Option<String> {
        for (rel, held) in &self.0 {
            let p = dir.join(rel);
            let shown = rel.display();
            let Ok(meta) = fs::symlink_metadata(&p) else {
                return Some(format!("{shown} is missing"));
            };
            match held {
                Held::Link { target } => match fs::read_link(&p) {
                    Ok(t) if &t == target => {}
                    _ => return Some(format!("{shown} no longer links to {}", target.display())),
                },
                Held::File { size, sha256 } => {
                    if !meta.is_file() {
                        return Some(format!("{shown} is no longer a file"));
                    }
                    if meta.len() != *size {
                        return Some(format!("{shown} has {} bytes, not {size}", meta.len()));
                    }
                    if depth == Depth::Hashes
                        && super::sha256_file(&p).ok().as_ref() != Some(sha256)
                    {
                        return Some(format!("{shown} changed (its sha256 differs)"));
                    }
                }
            }
        }
        None
    }

    pub fn bytes(&self) -> u64 {
        self.0
            .values()
            .map(|h| match h {
                Held::File { size, .. } => *size,
                Held::Link { .. } => 0,
            })
            .sum()
    }

    /// One line per path: `F size sha256 path` or `L target path`, paths escaped (see
    /// `escape`) so that any name fits on a line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (rel, held) in &self.0 {
            match held {
                Held::File { size, sha256 } => {
                    s += &format!("F {size} {sha256} {}\n", escape(rel.as_os_str().as_bytes()))
                }
                Held::Link { target } => {
                    s += &format!(
                        "L {} {}\n",
                        escape(target.as_os_str().as_bytes()),
                        escape(rel.as_os_str().as_bytes())
                    )
                }
            }
        }
        s
    }

    pub fn parse(text: &str) -> Result<Contents> {
        let mut c = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            let bad = || anyhow::anyhow!("line {} is not a contents line: {line}", n + 1);
            match f.as_slice() {
                ["F", size, sha, path] => {
                    c.insert(
                        unescape(path).ok_or_else(bad)?,
                        Held::File {
                            size: size.parse().map_err(|_| bad())?,
                            sha256: sha.to_string(),
                        },
                    );
                }
                ["L", target, path] => {
                    c.insert(
                        unescape(path).ok_or_else(bad)?,
                        Held::Link {
                            target: unescape(target).ok_or_else(bad)?,
                        },
                    );
                }
                _ => bail!(bad()),
            }
        }
        Ok(Contents(c))
    }
}

/// Bytes outside printable ASCII, space and `%` become `%XX`.
fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_graphic() && c != b'%' {
            s.push(c as char);
        } else {
            s += &format!("%{c:02x}");
        }
    }
    s
}

fn unescape(s: &str) -> Option<PathBuf> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_round_trip_through_text_with_odd_names() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a b/%c")).unwrap();
        fs::write(d.path().join("a b/%c/x\ny"), b"data").unwrap();
        std::os::unix::fs::symlink("../a b", d.path().join("a b/%c/link")).unwrap();
        fs::write(d.path().join("manifest.json"), b"{}").unwrap();
        let c = Contents::record(d.path(), &["manifest.json"], None).unwrap();
        assert_eq!(c.0.len(), 2, "{c:?}");
        assert_eq!(Contents::parse(&c.to_text()).unwrap(), c);
        assert_eq!(c.check(d.path(), Depth::Hashes), None);
        assert_eq!(c.bytes(), 4);
    }

    #[test]
    fn a_change_in_size_or_content_or_a_missing_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("m")).unwrap();
        fs::write(d.path().join("m/dax.ko"), b"module").unwrap();
        fs::write(d.path().join("m/nd.ko"), b"module").unwrap();
        fs::create_dir_all(d.path().join("scratch")).unwrap();
        fs::write(d.path().join("scratch/build.o"), b"tmp").unwrap();
        let c = Contents::record(d.path(), &[], Some(Path::new("scratch"))).unwrap();
        fs::remove_file(d.path().join("scratch/build.o")).unwrap();
        assert_eq!(
            c.check(d.path(), Depth::Hashes),
            None,
            "scratch is not content"
        );
        fs::write(d.path().join("m/dax.ko"), b"modulE").unwrap();
        // Same size: only hashing sees it.
        assert_eq!(c.check(d.path(), Depth::Sizes), None);
        let why = c.check(d.path(), Depth::Hashes).unwrap();
        assert!(why.contains("m/dax.ko changed"), "{why}");
        fs::write(d.path().join("m/dax.ko"), b"mod").unwrap();
        let why = c.check(d.path(), Depth::Sizes).unwrap();
        assert!(why.contains("m/dax.ko has 3 bytes, not 6"), "{why}");
        fs::write(d.path().join("m/dax.ko"), b"module").unwrap();
        fs::remove_file(d.path().join("m/nd.ko")).unwrap();
        let why = c.check(d.path(), Depth::Sizes).unwrap();
        assert!(why.contains("m/nd.ko is missing"), "{why}");
    }
}
