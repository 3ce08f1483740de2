//! The dedup key of a report: its title with anything run-specific normalized away, so the
//! same bug seen in two runs (or on two kernels) has one signature and one crash directory.

use crate::normalize::{normalize_line, printable};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, normalized report key. Two reports with the same signature are the same bug.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Signature(String);

/// Why a string read back (from JSON, from a workdir) is not a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("a report signature cannot be empty")]
    Empty,
    #[error("a report signature is one line of printable text, got {0:?}")]
    NotOneLine(String),
}

/// Directory names stay well under common file-name limits (255 bytes) with room for a
/// suffix the caller may add.
const DIR_NAME_MAX: usize = 100;
const HASH_HEX_DIGITS: usize = 8;
/// The signature of a title with nothing left after normalization.
const UNTITLED: &str = "untitled";

impl Signature {
    /// The signature of a report title: numbers, addresses, offsets, task-name digits and
    /// whitespace runs normalized, control characters escaped (see [`crate::normalize_line`]).
    /// Every title gives a signature that [`Signature::try_from`] reads back; one left empty
    /// is `untitled`.
    pub fn from_title(title: &str) -> Signature {
        let text = normalize_line(title);
        if text.is_empty() {
            return Signature(UNTITLED.to_string());
        }
        Signature(text)
    }

    /// A signature that is `text` as it is (no normalization), for keys the harness makes
    /// itself (`mmap: ENODEV vs addr`): control characters escaped, as in titles, and an
    /// empty text `untitled`. Text that [`Signature::try_from`] accepts is kept unchanged.
    pub fn of_text(text: &str) -> Signature {
        if text.trim().is_empty() {
            return Signature(UNTITLED.to_string());
        }
        Signature(printable(text).into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A directory name for this signature (`crashes/<dir_name>`): only `[A-Za-z0-9._-]`,
    /// never starting with a dot, at most 100 bytes, ending in 8 hex digits of a hash of the
    /// whole signature so that signatures differing only in punctuation or beyond the length
    /// limit still get distinct directories.
    pub fn dir_name(&self) -> String {
        let mut name = String::with_capacity(self.0.len());
        for c in self.0.chars() {
            let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            };
            if !(c == '_' && name.ends_with('_')) {
                name.push(c);
            }
        }
        let trimmed = name.trim_matches(|c| c == '_' || c == '.' || c == '-');
        let keep = DIR_NAME_MAX - HASH_HEX_DIGITS - 1;
        let mut stem: String = trimmed.chars().take(keep).collect();
        if stem.is_empty() {
            stem.push_str("report");
        }
        let hash = fnv1a64(self.0.as_bytes()) >> 32;
        format!("{stem}-{hash:0width$x}", width = HASH_HEX_DIGITS)
    }
}

/// FNV-1a: tiny, and identical on every platform and Rust version, which a directory name
/// that must survive a restart of the controller needs.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Signature {
    type Error = SignatureError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.trim().is_empty() {
            return Err(SignatureError::Empty);
        }
        if value.chars().any(char::is_control) {
            return Err(SignatureError::NotOneLine(value));
        }
        Ok(Signature(value))
    }
}

impl From<Signature> for String {
    fn from(signature: Signature) -> String {
        signature.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_titles_do_not_split_a_bug() {
        assert_eq!(
            Signature::from_title("kernel BUG at mm/page_alloc.c:535"),
            Signature::from_title("kernel BUG at mm/page_alloc.c:489")
        );
        assert_ne!(
            Signature::from_title("WARNING in dax_insert_entry"),
            Signature::from_title("WARNING in dax_iomap_rw")
        );
        assert_eq!(
            Signature::from_title("WARNING in ext4_dax_fault").as_str(),
            "WARNING in ext4_dax_fault"
        );
    }

    #[test]
    fn dir_name_is_safe_bounded_and_distinct() {
        let sig = Signature::from_title("KASAN: slab-use-after-free Read in tls_encrypt_done");
        let dir = sig.dir_name();
        assert!(
            dir.starts_with("KASAN_slab-use-after-free_Read_in_tls_encrypt_done-"),
            "{dir}"
        );
        assert!(dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        assert_eq!(dir, sig.dir_name(), "stable across calls");

        let slash =
            Signature::from_title("kernel panic: VFS: Unable to mount root fs on /dev/../x");
        assert!(!slash.dir_name().contains('/'));
        assert!(!slash.dir_name().starts_with('.'));

        let long_a = Signature::from_title(&format!("WARNING in {}a", "x".repeat(300)));
        let long_b = Signature::from_title(&format!("WARNING in {}b", "x".repeat(300)));
        assert!(long_a.dir_name().len() <= DIR_NAME_MAX);
        assert_ne!(long_a.dir_name(), long_b.dir_name());

        let colon = Signature::from_title("possible deadlock in a:b");
        let space = Signature::from_title("possible deadlock in a b");
        assert_ne!(colon.dir_name(), space.dir_name());
    }

    #[test]
    fn dir_name_of_punctuation_only_is_still_a_name() {
        let sig = Signature::try_from("...".to_string()).unwrap();
        assert!(sig.dir_name().starts_with("report-"));
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let sig = Signature::from_title("INFO: task hung in memunmap_pages");
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(json, "\"INFO: task hung in memunmap_pages\"");
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(serde_json::from_str::<Signature>("\"\"").is_err());
        assert!(serde_json::from_str::<Signature>("\"a\\nb\"").is_err());
        assert_eq!(sig.to_string(), "INFO: task hung in memunmap_pages");
    }

    #[test]
    fn every_title_gives_a_signature_that_reads_back() {
        for title in [
            "Kernel panic - not syncing: \x1b",
            "kernel panic: \x1b[31mred\x1b[0m",
            "WARNING in f\u{85}g",
            "",
            "   \t ",
            "\x00",
        ] {
            let sig = Signature::from_title(title);
            assert!(!sig.as_str().chars().any(char::is_control), "{sig:?}");
            assert_eq!(
                Signature::try_from(sig.to_string()).as_ref(),
                Ok(&sig),
                "{title:?}"
            );
            let json = serde_json::to_string(&sig).unwrap();
            assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        }
    }

    #[test]
    fn text_made_by_the_harness_is_kept_and_only_escaped() {
        let kept = "call 3 mmap: ENODEV vs 0x10";
        assert_eq!(
            Signature::of_text(kept),
            Signature::try_from(kept.to_string()).unwrap()
        );
        let two_lines = Signature::of_text("teardown disable devdax: failed: busy\nline 2");
        assert_eq!(
            two_lines.as_str(),
            "teardown disable devdax: failed: busy\\nline 2"
        );
        assert_eq!(Signature::try_from(two_lines.to_string()), Ok(two_lines));
        assert_eq!(Signature::of_text(" ").as_str(), "untitled");
    }
}
