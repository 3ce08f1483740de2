//! The bisection's state file: every step judged so far, written atomically after each one,
//! so that a killed bisection resumes where it stopped when the same command runs again.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::search::{StepVerdict, Tally};
use crate::cache::write_atomic;
use crate::diff::Outcome;

/// Which part a tested kernel played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    GoodEnd,
    BadEnd,
    Step,
    /// The culprit's parent, built only to compare kernel images.
    Parent,
}

/// One kernel tested.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Debian package version or git revision.
    pub label: String,
    pub role: Role,
    /// `uname -r` or the revision's subject line.
    #[serde(default)]
    pub kernel: String,
    pub tally: Tally,
    pub verdict: StepVerdict,
    pub confidence: f64,
    pub boots: u32,
    pub seconds: f64,
    /// Why a step was skipped (no kernel, no boot, inconclusive runs).
    #[serde(default)]
    pub note: Option<String>,
    /// sha256 of the kernel image (git mode: identical builds are flagged).
    #[serde(default)]
    pub bzimage_sha256: Option<String>,
    /// Git mode: seconds building this revision's kernel (`None`: it came from the cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Identifies the bisection (candidates, program, signal, judge settings): a state file
    /// of another bisection is refused rather than mixed in.
    pub key: String,
    pub steps: Vec<StepRecord>,
    /// The good end's most common outcome, for `--bad-if differs`.
    #[serde(default)]
    pub reference: Option<Outcome>,
    /// Wall time spent over all sessions, seconds.
    #[serde(default)]
    pub elapsed_secs: f64,
    #[serde(skip)]
    path: PathBuf,
}

/// Makes this process the one bisection writing into `out` (its state and result) until
/// the lock is dropped; another one is refused, naming the holder's pid.
pub fn own_out(out: &Path) -> Result<crate::lock::Lock> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    crate::lock::Lock::try_take(&out.join(".lock"), "bisection output directory")
}

impl State {
    /// The state at `path`, or a new one. A state file of a different bisection is an error.
    pub fn open(path: &Path, key: &str) -> Result<State> {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let mut s: State = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is damaged; delete it to start the bisection over",
                    path.display()
                )
            })?;
            if s.key != key {
                bail!(
                    "{} belongs to another bisection (other candidates, program, predicate or settings); \
                     pass another --out or delete it to start over",
                    path.display()
                );
            }
            s.path = path.to_path_buf();
            return Ok(s);
        }
        Ok(State {
            key: key.to_string(),
            steps: Vec::new(),
            reference: None,
            elapsed_secs: 0.0,
            path: path.to_path_buf(),
        })
    }

    /// The final record of a kernel, if it was tested already.
    pub fn lookup(&self, label: &str) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|s| s.label == label)
    }

    pub fn push(&mut self, rec: StepRecord) -> Result<()> {
        self.steps.push(rec);
        self.save()
    }

    pub fn save(&self) -> Result<()> {
        write_atomic(&self.path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(label: &str, verdict: StepVerdict) -> StepRecord {
        StepRecord {
            label: label.into(),
            role: Role::Step,
            kernel: String::new(),
            tally: Tally {
                good: 2,
                ..Tally::default()
            },
            verdict,
            confidence: 0.99,
            boots: 1,
            seconds: 30.0,
            note: None,
            bzimage_sha256: None,
            build_secs: None,
        }
    }

    #[test]
    fn steps_survive_a_restart_and_other_bisections_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("state.json");
        let mut s = State::open(&path, "k1").unwrap();
        s.push(rec("6.12.95-1~bpo12+1", StepVerdict::Good)).unwrap();
        s.push(rec("7.2.6-1~bpo13+1", StepVerdict::Bad)).unwrap();
        let again = State::open(&path, "k1").unwrap();
        assert_eq!(again.steps.len(), 2);
        assert_eq!(
            again.lookup("7.2.6-1~bpo13+1").map(|r| r.verdict),
            Some(StepVerdict::Bad)
        );
        assert!(again.lookup("6.1.170-3").is_none());
        let err = State::open(&path, "k2").unwrap_err().to_string();
        assert!(
            err.contains("another bisection") && err.contains("--out"),
            "{err}"
        );
        std::fs::write(&path, "{").unwrap();
        let err = State::open(&path, "k1").unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn one_bisection_per_output_directory() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let first = own_out(&out).unwrap();
        let err = own_out(&out).unwrap_err().to_string();
        assert!(
            err.contains("bisection output directory")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        own_out(&out).unwrap();
    }
}
