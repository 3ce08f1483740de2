//! Suppressions: differences between kernels that a human has judged intended, each with the
//! reason written down. Loaded from TOML; a bad entry is an error naming file:line.
//!
//! ```toml
//! [[suppress]]
//! reason = "why this difference is intended (required)"
//! signature = "io_uring_register$REGISTER_BUFFERS: EOPNOTSUPP vs *"  # glob, `*` = any text
//! call = "io_uring_register$REGISTER_BUFFERS"                         # exact call name
//! kernels = ["debian-6.12", "debian-7.3"]                             # only for this pair
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::compare::Difference;

#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    #[error("read suppressions {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Bad {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One judged, intended difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppression {
    pub reason: String,
    pub signature: Option<String>,
    pub call: Option<String>,
    /// Empty: any pair.
    pub kernels: Vec<String>,
    /// Where it was written, for messages (`file:line`).
    pub origin: String,
}

#[derive(Clone, Debug, Default)]
pub struct Suppressions {
    pub entries: Vec<Suppression>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    suppress: Vec<toml::Spanned<EntryForm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryForm {
    reason: String,
    signature: Option<String>,
    call: Option<String>,
    #[serde(default)]
    kernels: Vec<String>,
}

impl Suppressions {
    pub fn load(path: &Path) -> Result<Suppressions, SuppressionError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuppressionError::Read {
            path: path.into(),
            source,
        })?;
        Suppressions::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Suppressions, SuppressionError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let bad = |line: usize, message: String| SuppressionError::Bad {
            path: path.into(),
            line,
            message,
        };
        let file: FileForm = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(s.start)).unwrap_or(1);
            bad(line, e.message().to_string())
        })?;
        let mut entries = Vec::new();
        for spanned in file.suppress {
            let line = line_of(spanned.span().start);
            let e = spanned.into_inner();
            if e.reason.trim().is_empty() {
                return Err(bad(
                    line,
                    "`reason` is empty: write down why this difference is intended".into(),
                ));
            }
            if e.signature.is_none() && e.call.is_none() {
                return Err(bad(
                    line,
                    "an entry needs `signature` or `call`, or it would silence everything".into(),
                ));
            }
            if !(e.kernels.is_empty() || e.kernels.len() == 2) {
                return Err(bad(
                    line,
                    format!(
                        "`kernels` names the two kernels of a pair, got {}",
                        e.kernels.len()
                    ),
                ));
            }
            entries.push(Suppression {
                reason: e.reason,
                signature: e.signature,
                call: e.call,
                kernels: e.kernels,
                origin: format!("{}:{line}", path.display()),
            });
        }
        Ok(Suppressions { entries })
    }

    /// The first entry that silences this difference between these two kernels.
    pub fn matches(&self, d: &Difference, kernels: (&str, &str)) -> Option<&Suppression> {
        self.entries.iter().find(|s| {
            let pair = match s.kernels.as_slice() {
                [x, y] => (x == kernels.0 && y == kernels.1) || (x == kernels.1 && y == kernels.0),
                _ => true,
            };
            let call = s.call.as_deref().is_none_or(|c| d.call_name() == Some(c));
            let sig = s
                .signature
                .as_deref()
                .is_none_or(|p| glob(p, &d.signature_text()));
            pair && call && sig
        })
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Ret;

    fn uring(a: &str, b: Ret) -> Difference {
        Difference::Call {
            index: 3,
            name: "io_uring_register$REGISTER_BUFFERS".into(),
            a: Some(Ret::Errno(a.into())),
            b: Some(b),
        }
    }

    #[test]
    fn entries_match_on_signature_glob_call_and_pair() {
        let s = Suppressions::parse(
            "# intended\n[[suppress]]\nreason = \"6.15 allows pinning fsdax pages\"\nsignature = \"*: EOPNOTSUPP vs 0\"\ncall = \"io_uring_register$REGISTER_BUFFERS\"\nkernels = [\"debian-6.12\", \"debian-7.3\"]\n",
            Path::new("s.toml"),
        )
        .unwrap();
        assert_eq!(s.entries[0].origin, "s.toml:2");
        let d = uring("EOPNOTSUPP", Ret::Value(0));
        assert!(s.matches(&d, ("debian-6.12", "debian-7.3")).is_some());
        assert!(s.matches(&d, ("debian-7.3", "debian-6.12")).is_some());
        assert!(s.matches(&d, ("debian-6.12", "debian-6.12")).is_none());
        assert!(s
            .matches(
                &uring("EFAULT", Ret::Value(0)),
                ("debian-6.12", "debian-7.3")
            )
            .is_none());
    }

    #[test]
    fn bad_entries_name_file_and_line() {
        let e = Suppressions::parse("[[suppress]]\nreason = \"x\"\ncall = \"mmap\"\n\n[[suppress]]\nreason = \" \"\ncall = \"mmap\"\n", Path::new("s.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.toml:5: `reason` is empty: write down why this difference is intended"
        );
        let e =
            Suppressions::parse("[[suppress]]\nreason = \"x\"\n", Path::new("s.toml")).unwrap_err();
        assert!(e.to_string().starts_with("s.toml:1: an entry needs"), "{e}");
        let e = Suppressions::parse("[[suppress]]\ncall = \"mmap\"\n", Path::new("s.toml"))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("s.toml:1: missing field `reason`"),
            "{e}"
        );
        let e = Suppressions::parse(
            "[[suppress]]\nreason = \"r\"\ncall = \"mmap\"\nkernel = \"x\"\n",
            Path::new("s.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("s.toml:"), "{e}");
        assert!(e.to_string().contains("unknown field `kernel`"), "{e}");
    }

    #[test]
    fn the_shipped_file_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vm-images/suppressions.toml");
        let s = Suppressions::load(&p).unwrap();
        assert!(s.entries.iter().all(|e| !e.reason.trim().is_empty()));
    }

    #[test]
    fn glob_is_anchored() {
        assert!(glob("a*c", "abbc"));
        assert!(glob("*vs 0", "x: EOPNOTSUPP vs 0"));
        assert!(!glob("*vs 0", "x: EOPNOTSUPP vs 0 "));
        assert!(!glob("abc", "abcd"));
        assert!(glob("a*b*c", "a-b-c"));
    }
}
