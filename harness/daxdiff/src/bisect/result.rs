//! A finished bisection as people, scripts and the report see it, the same for both modes and
//! both kinds: `result.json` in `--out`, `bisect.json`/`bisect.txt` in a finding's directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::git::GitBisected;
use super::search::Kind;
use super::state::{Role, StepRecord};
use super::versions::{Bisected, Candidate};
use crate::cache::write_atomic;
use crate::repro::state::{BisectNote, Triage};

/// The result in a bisection's `--out` directory.
pub const RESULT_FILE: &str = "result.json";
/// A finding's bisection, beside its `triage.json`.
pub const FINDING_JSON: &str = "bisect.json";
pub const FINDING_TEXT: &str = "bisect.txt";

/// What was bisected over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Debian kernel packages.
    Versions,
    /// Commits of a git tree, each built.
    Git,
}

/// A kernel the result names: a Debian package version with its `uname -r`, or a commit with
/// its subject line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub label: String,
    pub title: String,
}

impl Point {
    /// The label as people write it (commits abbreviated as git does, to 12 digits).
    pub fn short(&self) -> &str {
        short_label(&self.label)
    }
}

pub fn short_label(label: &str) -> &str {
    let is_commit = label.len() == 40 && label.chars().all(|c| c.is_ascii_hexdigit());
    if is_commit {
        &label[..12]
    } else {
        label
    }
}

/// `41 s`, `14 min 12 s`, `1 h 02 min`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bisection {
    /// `regression`: where the behaviour starts; `fix`: where it stops.
    pub kind: Kind,
    pub mode: Mode,
    /// What makes a run bad, in words.
    pub signal: String,
    /// The program run: the `--prog` file, or the finding's `prog.txt`.
    #[serde(default)]
    pub program: String,
    /// The finding's signature, when the reproducer came from `--finding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// Git mode: the repository bisected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The ends: the good one does not show the behaviour, the bad one does (for a fix the
    /// bad end is the older one).
    pub good: Point,
    pub bad: Point,
    /// The first kernel like the new end: the first bad one of a regression, the first fixed
    /// one of a fix. `None` when skipped kernels hide it (`could_be` lists them).
    pub first_new: Option<Point>,
    /// The last kernel like the old end: last good (regression), last broken (fix).
    pub last_old: Option<Point>,
    pub could_be: Vec<Point>,
    /// Git mode: the culprit's kernel image is byte-identical to its parent's.
    pub identical_to_parent: Option<bool>,
    /// The chance that every verdict the result rests on is right.
    pub confidence: f64,
    /// Kernels judged between the ends.
    pub steps: usize,
    /// Runs of the reproducer, guests booted and kernels built, over all kernels.
    pub runs: u32,
    pub boots: u32,
    pub builds: u32,
    pub build_secs: f64,
    /// Wall time over all sessions (a resumed bisection adds up).
    pub seconds: f64,
    /// Every kernel tested, in order.
    pub records: Vec<StepRecord>,
    /// Version mode: the kernels it walked, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

/// What the reproducer was, for the result.
pub struct About {
    pub kind: Kind,
    pub signal: String,
    pub program: String,
    pub finding: Option<String>,
    pub seconds: f64,
}

fn end(records: &[StepRecord], role: Role) -> Point {
    records
        .iter()
        .find(|r| r.role == role)
        .map(|r| Point {
            label: r.label.clone(),
            title: r.kernel.clone(),
        })
        .unwrap_or(Point {
            label: String::new(),
            title: String::new(),
        })
}

impl Bisection {
    fn new(about: About, mode: Mode, records: Vec<StepRecord>) -> Bisection {
        Bisection {
            kind: about.kind,
            mode,
            signal: about.signal,
            program: about.program,
            finding: about.finding,
            repo: None,
            good: end(&records, Role::GoodEnd),
            bad: end(&records, Role::BadEnd),
            first_new: None,
            last_old: None,
            could_be: vec![],
            identical_to_parent: None,
            confidence: 0.0,
            steps: records.iter().filter(|s| s.role == Role::Step).count(),
            runs: records.iter().map(|s| s.tally.total()).sum(),
            boots: records.iter().map(|s| s.boots).sum(),
            builds: records.iter().filter(|s| s.build_secs.is_some()).count() as u32,
            // A fold, not sum(): the empty f64 sum is -0.0, which JSON would show.
            build_secs: records
                .iter()
                .filter_map(|s| s.build_secs)
                .fold(0.0, |a, b| a + b),
            seconds: about.seconds,
            records,
            candidates: vec![],
        }
    }

    pub fn of_versions(about: About, r: &Bisected, cands: &[Candidate]) -> Bisection {
        let point = |v: &str| {
            let c = cands.iter().find(|c| c.version == v);
            Point {
                label: v.to_string(),
                title: c.map(|c| c.release.clone()).unwrap_or_default(),
            }
        };
        Bisection {
            first_new: r.first_new.as_deref().map(point),
            last_old: Some(point(&r.last_old)),
            could_be: r.could_be.iter().map(|v| point(v)).collect(),
            confidence: r.confidence,
            candidates: cands.to_vec(),
            ..Bisection::new(about, Mode::Versions, r.steps.clone())
        }
    }

    pub fn of_git(about: About, repo: &Path, r: &GitBisected) -> Bisection {
        Bisection {
            repo: Some(repo.display().to_string()),
            first_new: r.first_new.clone(),
            last_old: r.last_old.clone(),
            could_be: r.could_be.clone(),
            identical_to_parent: r.identical_to_parent,
            confidence: r.confidence,
            ..Bisection::new(about, Mode::Git, r.steps.clone())
        }
    }

    /// `first bad`, `first fixed commit`, …
    pub fn first_term(&self) -> String {
        self.term(self.kind.first_new_term())
    }

    pub fn last_term(&self) -> String {
        self.term(self.kind.last_old_term())
    }

    fn term(&self, t: &str) -> String {
        match self.mode {
            Mode::Versions => t.to_string(),
            Mode::Git => format!("{t} commit"),
        }
    }

    /// What it was, in a few words: `fix bisection over 8 Debian kernels`.
    pub fn headline(&self) -> String {
        match self.mode {
            Mode::Versions => format!(
                "{} bisection over {} Debian kernels, {} .. {}",
                self.kind,
                self.candidates.len(),
                self.candidates.first().map_or("", |c| c.version.as_str()),
                self.candidates.last().map_or("", |c| c.version.as_str()),
            ),
            Mode::Git => {
                let (old, new) = self.kind.old_new(&self.good, &self.bad);
                format!(
                    "{} bisection of git commits {} .. {}",
                    self.kind,
                    old.short(),
                    new.short()
                )
            }
        }
    }

    fn named(&self, p: &Point) -> String {
        match self.mode {
            Mode::Versions => format!("{} ({})", p.label, p.title),
            Mode::Git => format!("{} {}", p.label, p.title),
        }
    }

    /// Boots, builds and time, in one line.
    pub fn spent(&self) -> String {
        let mut s = format!(
            "{} step(s) and 2 ends, {} run(s), {} boot(s)",
            self.steps, self.runs, self.boots
        );
        if self.mode == Mode::Git {
            s.push_str(&format!(
                ", {} build(s) in {}",
                self.builds,
                duration(self.build_secs)
            ));
        }
        s.push_str(&format!(", {} in all", duration(self.seconds)));
        s
    }

    pub fn identical_warning(&self) -> Option<&'static str> {
        (self.identical_to_parent == Some(true)).then_some(
            "its kernel image is byte-identical to its parent's: the verdict cannot come from \
             its own change (a flaky reproducer, or a cause outside the image); rerun with more --runs",
        )
    }

    /// What the command prints.
    pub fn text(&self) -> String {
        let mut s = format!("{}; {}\n", self.headline(), self.signal);
        match (&self.first_new, &self.last_old) {
            (Some(first), last) => {
                s.push_str(&format!("{}: {}\n", self.first_term(), self.named(first)));
                if let Some(l) = last {
                    s.push_str(&format!("{}: {}\n", self.last_term(), self.named(l)));
                }
            }
            (None, _) => s.push_str(&format!(
                "skipped kernels hide the {}; it is one of: {}\n",
                self.first_term(),
                self.could_be
                    .iter()
                    .map(|p| p.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        if let Some(w) = self.identical_warning() {
            s.push_str(&format!("WARNING: {w}\n"));
        }
        s.push_str(&format!(
            "{}; confidence {:.3}\n",
            self.spent(),
            self.confidence
        ));
        s
    }

    /// Reads `result.json` of a bisection's `--out` directory (or the file itself).
    pub fn load(path: &Path) -> Result<Bisection> {
        let file: PathBuf = if path.is_dir() {
            path.join(RESULT_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "read {}: a bisection's result is --out DIR/{RESULT_FILE} of `daxdiff bisect`",
                file.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a bisection result of this daxdiff; rerun the same `daxdiff bisect` \
                 command: it resumes from its state and writes the result anew",
                file.display()
            )
        })
    }

    /// Writes the result into a finding's directory (`bisect.json`, `bisect.txt`) and notes
    /// it in the finding's triage state. A result naming another finding is refused.
    pub fn record_in_finding(&self, dir: &Path, signature: &str) -> Result<()> {
        if let Some(other) = &self.finding {
            if other != signature {
                bail!(
                    "this bisection is of the finding '{other}', not of {} ('{signature}')",
                    dir.display()
                );
            }
        }
        write_atomic(
            &dir.join(FINDING_JSON),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        write_atomic(&dir.join(FINDING_TEXT), self.text().as_bytes())?;
        Triage::update(dir, |t| {
            t.bisection = Some(BisectNote {
                kind: self.kind,
                first_new: self.first_new.as_ref().map(|p| p.label.clone()),
                confidence: self.confidence,
            })
        })?;
        Ok(())
    }

    /// The bisection recorded in a finding's directory, if any.
    pub fn of_finding(dir: &Path) -> Result<Option<Bisection>> {
        let p = dir.join(FINDING_JSON);
        if !p.exists() {
            return Ok(None);
        }
        Bisection::load(&p)
            .map(Some)
            .with_context(|| format!("delete {} or bisect again", p.display()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bisect::search::{StepVerdict, Tally};

    pub fn record(label: &str, kernel: &str, role: Role, verdict: StepVerdict) -> StepRecord {
        let tally = match verdict {
            StepVerdict::Bad => Tally {
                bad: 2,
                ..Tally::default()
            },
            _ => Tally {
                good: 2,
                ..Tally::default()
            },
        };
        StepRecord {
            label: label.into(),
            role,
            kernel: kernel.into(),
            tally,
            verdict,
            confidence: 0.99,
            boots: 1,
            seconds: 40.0,
            note: None,
            bzimage_sha256: None,
            build_secs: None,
        }
    }

    fn cand(version: &str, release: &str) -> Candidate {
        Candidate {
            version: version.into(),
            release: release.into(),
            upstream: super::super::versions::upstream_of(version).into(),
        }
    }

    /// A fix found over four Debian kernels.
    pub fn versions_fix() -> Bisection {
        use StepVerdict::{Bad, Good};
        let cands = vec![
            cand("6.1.170-3", "6.1.0-47-amd64"),
            cand("6.12.116-1", "6.12.116+deb13-amd64"),
            cand("7.2.6-1~bpo13+1", "7.2.6+deb13-amd64"),
            cand("7.3.4-1~bpo13+1", "7.3.4+deb13-amd64"),
        ];
        let records = vec![
            record("7.3.4-1~bpo13+1", "7.3.4+deb13-amd64", Role::GoodEnd, Good),
            record("6.1.170-3", "6.1.0-47-amd64", Role::BadEnd, Bad),
            record("6.12.116-1", "6.12.116+deb13-amd64", Role::Step, Bad),
            record("7.2.6-1~bpo13+1", "7.2.6+deb13-amd64", Role::Step, Good),
        ];
        let r = Bisected {
            last_old: "6.12.116-1".into(),
            first_new: Some("7.2.6-1~bpo13+1".into()),
            could_be: vec![],
            confidence: 0.971,
            steps: records,
        };
        let about = About {
            kind: Kind::Fix,
            signal: "bad if call 5 fails".into(),
            program: "uring_fixed_devdax.prog".into(),
            finding: Some("report only on A: WARNING in dax_disassociate_entry".into()),
            seconds: 852.0,
        };
        Bisection::of_versions(about, &r, &cands)
    }

    /// A regression found in a git tree, its culprit built byte-identical to its parent.
    pub fn git_regression() -> Bisection {
        use StepVerdict::{Bad, Good};
        let c = |n: u8| format!("{n:x}").repeat(40);
        let mut records = vec![
            record(&c(1), "base", Role::GoodEnd, Good),
            record(&c(5), "dax: last patch", Role::BadEnd, Bad),
            record(
                &c(3),
                "dax: stop taking a page reference in dax_insert_entry",
                Role::Step,
                Bad,
            ),
            record(&c(2), "dax: prepare", Role::Step, Good),
        ];
        for (r, secs) in records.iter_mut().zip([1500.0, 200.0, 150.0, 90.0]) {
            r.build_secs = Some(secs);
        }
        let r = GitBisected {
            first_new: Some(Point {
                label: c(3),
                title: "dax: stop taking a page reference in dax_insert_entry".into(),
            }),
            last_old: Some(Point {
                label: c(2),
                title: "dax: prepare".into(),
            }),
            could_be: vec![],
            identical_to_parent: Some(true),
            confidence: 0.95,
            steps: records,
        };
        let about = About {
            kind: Kind::Regression,
            signal: "bad if hang dax_break_layout_final".into(),
            program: "prog.txt of the finding".into(),
            finding: None,
            seconds: 2400.0,
        };
        Bisection::of_git(about, Path::new("linux"), &r)
    }

    #[test]
    fn a_fix_result_speaks_of_fixed_and_broken() {
        let b = versions_fix();
        let text = b.text();
        assert!(
            text.starts_with(
                "fix bisection over 4 Debian kernels, 6.1.170-3 .. 7.3.4-1~bpo13+1; bad if call 5 fails\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("first fixed: 7.2.6-1~bpo13+1 (7.2.6+deb13-amd64)\n"),
            "{text}"
        );
        assert!(
            text.contains("last broken: 6.12.116-1 (6.12.116+deb13-amd64)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "2 step(s) and 2 ends, 8 run(s), 4 boot(s), 14 min 12 s in all; confidence 0.971"
            ),
            "{text}"
        );
        assert!(!text.contains("build"), "{text}");
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["kind"], "fix");
        assert_eq!(json["mode"], "versions");
        assert_eq!(json["first_new"]["label"], "7.2.6-1~bpo13+1");
        assert_eq!(json["bad"]["label"], "6.1.170-3");
        assert_eq!(json["build_secs"].to_string(), "0.0");
    }

    #[test]
    fn a_git_result_counts_builds_and_flags_an_identical_image() {
        let b = git_regression();
        assert_eq!((b.builds, b.build_secs), (4, 1940.0));
        let text = b.text();
        assert!(
            text.starts_with("regression bisection of git commits 111111111111 .. 555555555555;"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "first bad commit: {} dax: stop taking",
                "3".repeat(40)
            )),
            "{text}"
        );
        assert!(
            text.contains("WARNING: its kernel image is byte-identical"),
            "{text}"
        );
        assert!(
            text.contains("4 build(s) in 32 min 20 s, 40 min 00 s in all"),
            "{text}"
        );
    }

    #[test]
    fn a_result_is_recorded_in_its_finding_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let b = versions_fix();
        let sig = b.finding.clone().unwrap();
        b.record_in_finding(dir.path(), &sig).unwrap();
        assert_eq!(Bisection::of_finding(dir.path()).unwrap(), Some(b.clone()));
        let text = std::fs::read_to_string(dir.path().join(FINDING_TEXT)).unwrap();
        assert!(text.contains("first fixed: 7.2.6-1~bpo13+1"), "{text}");
        let t = Triage::load(dir.path()).unwrap();
        let note = t.bisection.unwrap();
        assert_eq!(note.kind, Kind::Fix);
        assert_eq!(note.first_new.as_deref(), Some("7.2.6-1~bpo13+1"));
        let e = b
            .record_in_finding(dir.path(), "report only on B: BUG in x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not of"), "{e}");
        // An --out directory is read through its result.json; other JSON is refused.
        let out = tempfile::tempdir().unwrap();
        std::fs::write(
            out.path().join(RESULT_FILE),
            serde_json::to_string(&b).unwrap(),
        )
        .unwrap();
        assert_eq!(Bisection::load(out.path()).unwrap(), b);
        std::fs::write(out.path().join(RESULT_FILE), "{\"first_bad\": null}").unwrap();
        let e = format!("{:#}", Bisection::load(out.path()).unwrap_err());
        assert!(e.contains("rerun the same `daxdiff bisect`"), "{e}");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(41.4), "41 s");
        assert_eq!(duration(852.0), "14 min 12 s");
        assert_eq!(duration(3720.0), "1 h 02 min");
    }
}
