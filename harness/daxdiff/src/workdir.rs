//! A fuzzing campaign's directory: the corpus, findings (one directory per signature) and
//! counters. Every write is atomic, so a killed controller resumes from what is on disk.
//!
//! ```text
//! corpus/<hash>.prog
//! divergences/<signature>/  prog.txt finding.json outcome-a.json outcome-b.json console-a.log console-b.log
//! crashes/<title>/          (same files)
//! unstable/<signature>/     (same files; outcome-*.json hold every run)
//! stats.json
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use daxdiff_prog::class::Distribution;
use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;
use crate::diff::Outcome;

/// The kinds of finding, each with its own directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Divergence,
    Crash,
    Unstable,
}

impl FindingKind {
    pub fn dir(self) -> &'static str {
        match self {
            FindingKind::Divergence => "divergences",
            FindingKind::Crash => "crashes",
            FindingKind::Unstable => "unstable",
        }
    }
}

/// `finding.json`: what was found, on which pair, and the differences that make it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Divergence signature, report title, or the unstable kernel.
    pub signature: String,
    pub kernel_a: String,
    pub kernel_b: String,
    /// Every difference, one line each (`call 3 io_uring_register$…: 0 vs EOPNOTSUPP`).
    pub differences: Vec<String>,
    /// Runs per kernel behind the verdict.
    pub runs: usize,
    /// The campaign's exec count when it was found.
    pub found_at_exec: u64,
}

/// One side of a finding: the outcomes of its runs and the console of the first.
pub struct SideRecord<'a> {
    pub outcomes: &'a [Outcome],
    pub console: &'a [String],
}

/// Campaign counters (`stats.json`); they continue across restarts of the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub kernel_a: String,
    pub kernel_b: String,
    /// Program pairs run by the fuzz loop (stability re-runs not included).
    pub execs: u64,
    /// Stability re-runs (per side).
    pub reruns: u64,
    pub corpus: u64,
    pub divergences: u64,
    pub crashes: u64,
    pub unstable: u64,
    /// Programs whose only differences were suppressed.
    pub suppressed: u64,
    pub vm_restarts_a: u64,
    pub vm_restarts_b: u64,
    /// Fuzzing time over all sessions, seconds.
    pub elapsed_secs: f64,
    /// Controller sessions that wrote into this workdir.
    pub sessions: u64,
    /// Distinct KCOV edges (slots of the edge map) seen on each kernel in this session;
    /// absent for a kernel without KCOV.
    #[serde(default)]
    pub edges_a: Option<u64>,
    #[serde(default)]
    pub edges_b: Option<u64>,
    /// Teardown liveness after every Nth program (0: off).
    #[serde(default)]
    pub teardown_every: u64,
    /// Programs the fuzz loop ran, by class (target, granularity, pin kind, disturbance
    /// while pinned, threads: `daxdiff_prog::class`).
    #[serde(default)]
    pub classes_executed: Distribution,
    /// Programs the corpus took, by class.
    #[serde(default)]
    pub classes_corpus: Distribution,
    /// What each kernel's name resolved to in the latest session (a Debian series moves to
    /// its newest package); absent in workdirs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_a: Option<ResolvedKernel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_b: Option<ResolvedKernel>,
    /// Where each kernel's guest time went, over all sessions.
    #[serde(default)]
    pub time_a: SideTime,
    #[serde(default)]
    pub time_b: SideTime,
}

/// One kernel's guest time in a campaign, by phase (seconds), and how its guests were
/// replaced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideTime {
    /// Program runs through the executor (the program, teardown, cleanup and checks),
    /// stability re-runs included.
    pub programs_secs: f64,
    /// The teardown liveness steps' share of `programs_secs`.
    #[serde(default)]
    pub teardown_secs: f64,
    /// Guest boots: kernel, bring-up, SSH (and saving the first guest's snapshot).
    pub boot_secs: f64,
    /// Guests restored from the snapshot instead of booted.
    pub restore_secs: f64,
    pub restores: u64,
    /// Restores that failed and were replaced by a boot.
    pub restore_failures: u64,
}

impl SideTime {
    /// `programs 80% boots 15% restores 5%` of the guest time so far.
    pub fn brief(&self) -> String {
        let total = (self.programs_secs + self.boot_secs + self.restore_secs).max(1e-9);
        let pc = |x: f64| (100.0 * x / total).round();
        format!(
            "programs {}% boots {}% restores {}%",
            pc(self.programs_secs),
            pc(self.boot_secs),
            pc(self.restore_secs)
        )
    }

    pub fn add(&mut self, c: &crate::fuzz::side::GuestCost) {
        self.programs_secs += c.run.as_secs_f64();
        self.teardown_secs += c.teardown.as_secs_f64();
        self.boot_secs += c.boot.as_secs_f64();
        self.restore_secs += c.restore.as_secs_f64();
        self.restores += c.restores;
        self.restore_failures += c.restore_failures;
    }
}

/// The exact kernel a catalogue name stood for in a campaign.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedKernel {
    /// The Debian package version, or `local` for a built kernel.
    pub version: String,
    /// `uname -r`.
    pub release: String,
}

impl ResolvedKernel {
    pub fn of(k: &crate::images::Kernel) -> ResolvedKernel {
        ResolvedKernel {
            version: k.version.clone(),
            release: k.release.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Workdir {
    pub root: PathBuf,
}

impl Workdir {
    /// Opens (creating if needed) a workdir.
    pub fn open(root: &Path) -> Result<Workdir> {
        for d in ["corpus", "divergences", "crashes", "unstable"] {
            std::fs::create_dir_all(root.join(d))
                .with_context(|| format!("create {}", root.join(d).display()))?;
        }
        Ok(Workdir {
            root: root.to_path_buf(),
        })
    }

    /// Makes this process the workdir's one writer until the lock is dropped: two campaigns
    /// on one workdir would overwrite each other's counters and corpus. Refused, naming the
    /// holder's pid, while another process holds it; reading it (`show`) needs no lock.
    pub fn own(&self) -> Result<crate::lock::Lock> {
        crate::lock::Lock::try_take(&self.root.join(".lock"), "workdir")
    }

    /// Opens a workdir that must already exist (for `show`).
    pub fn existing(root: &Path) -> Result<Workdir> {
        if !root.join("stats.json").is_file() {
            bail!("{} is not a daxdiff workdir (no stats.json); `daxdiff fuzz --workdir {}` creates one", root.display(), root.display());
        }
        Ok(Workdir {
            root: root.to_path_buf(),
        })
    }

    pub fn stats(&self) -> Result<Option<Stats>> {
        let p = self.root.join("stats.json");
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; delete it to restart the counters",
                p.display()
            )
        })?))
    }

    pub fn save_stats(&self, s: &Stats) -> Result<()> {
        write_atomic(
            &self.root.join("stats.json"),
            serde_json::to_string_pretty(s)?.as_bytes(),
        )
    }

    /// Every corpus program's text, sorted by file name.
    pub fn corpus(&self) -> Result<Vec<String>> {
        let dir = self.root.join("corpus");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("read {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "prog"))
        {
            out.push(std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?);
        }
        Ok(out)
    }

    /// Appends one line to the campaign's minute history (`stats.jsonl`). A line is written
    /// whole with one `write` on an `O_APPEND` file, so a killed campaign leaves whole lines.
    pub fn append_history<T: Serialize>(&self, line: &T) -> Result<()> {
        use std::io::Write;
        let p = self.root.join("stats.jsonl");
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("open {}", p.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("append to {}", p.display()))
    }

    /// The corpus's programs by class (those that parse).
    pub fn corpus_classes(&self) -> Result<Distribution> {
        let target = daxdiff_prog::Target::builtin();
        let mut d = Distribution::default();
        for text in self.corpus()? {
            if let Ok(p) = daxdiff_prog::parse(target, &text) {
                d.add(&daxdiff_prog::class::classify(target, &p));
            }
        }
        Ok(d)
    }

    /// Adds a program to the corpus; false if it was there already.
    pub fn add_corpus(&self, text: &str) -> Result<bool> {
        let p = self
            .root
            .join("corpus")
            .join(format!("{:016x}.prog", fnv1a64(text.as_bytes())));
        if p.exists() {
            return Ok(false);
        }
        write_atomic(&p, text.as_bytes())?;
        Ok(true)
    }

    pub fn finding_dir(&self, kind: FindingKind, name: &str) -> PathBuf {
        self.root.join(kind.dir()).join(name)
    }

    pub fn has_finding(&self, kind: FindingKind, name: &str) -> bool {
        self.finding_dir(kind, name).join("finding.json").is_file()
    }

    /// Writes a finding's directory. `finding.json` goes last: a directory without it is an
    /// interrupted write and is rewritten when the finding comes again.
    pub fn save_finding(
        &self,
        name: &str,
        finding: &Finding,
        program: &str,
        a: SideRecord,
        b: SideRecord,
    ) -> Result<PathBuf> {
        let dir = self.finding_dir(finding.kind, name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        write_atomic(&dir.join("prog.txt"), program.as_bytes())?;
        for (side, rec) in [("a", &a), ("b", &b)] {
            let outcomes = if finding.kind == FindingKind::Unstable {
                serde_json::to_string_pretty(rec.outcomes)?
            } else {
                serde_json::to_string_pretty(&rec.outcomes.first())?
            };
            write_atomic(
                &dir.join(format!("outcome-{side}.json")),
                outcomes.as_bytes(),
            )?;
            let mut log = rec.console.join("\n");
            log.push('\n');
            write_atomic(&dir.join(format!("console-{side}.log")), log.as_bytes())?;
        }
        write_atomic(
            &dir.join("finding.json"),
            serde_json::to_string_pretty(finding)?.as_bytes(),
        )?;
        Ok(dir)
    }

    /// Every complete finding of a kind, sorted by directory name; the first damaged one
    /// (see [`Workdir::listing`]) is an error naming its directory.
    pub fn findings(&self, kind: FindingKind) -> Result<Vec<(String, Finding)>> {
        let listing = self.listing(kind)?;
        if let Some(d) = listing.damaged.first() {
            bail!("{d}");
        }
        Ok(listing.complete)
    }

    /// Every finding directory of a kind, sorted by name: those whose `finding.json` reads
    /// back, and those where it is there but cannot be read (cut short, not UTF-8, not a
    /// finding). A directory without `finding.json` is a write that was interrupted before
    /// it counted, and is in neither list.
    pub fn listing(&self, kind: FindingKind) -> Result<Listing> {
        let dir = self.root.join(kind.dir());
        let mut listing = Listing::default();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut entries = Vec::new();
        for e in rd {
            entries.push(e.with_context(|| format!("read {}", dir.display()))?);
        }
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path().join("finding.json");
            let text = match std::fs::read(&p) {
                Ok(bytes) => String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => Err(e.to_string()),
            };
            match text.and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
                Ok(f) => listing
                    .complete
                    .push((e.file_name().to_string_lossy().into_owned(), f)),
                Err(error) => listing.damaged.push(DamagedFinding {
                    kind,
                    dir: e.path(),
                    error,
                }),
            }
        }
        Ok(listing)
    }
}

/// The finding directories of one kind (see [`Workdir::listing`]).
#[derive(Debug, Default)]
pub struct Listing {
    pub complete: Vec<(String, Finding)>,
    pub damaged: Vec<DamagedFinding>,
}

/// A finding directory whose `finding.json` is there but does not read back (a disk that
/// filled up, an editor, a copy cut short). It was counted in `stats.json` when found.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedFinding {
    pub kind: FindingKind,
    pub dir: PathBuf,
    /// Why `finding.json` does not read back.
    pub error: String,
}

impl std::fmt::Display for DamagedFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{dir}/finding.json is damaged ({}); `daxdiff run --kernel <kernel> \
             {dir}/prog.txt` runs its program again, and once the directory is deleted the \
             campaign records the finding anew when it comes back",
            self.error,
            dir = self.dir.display(),
        )
    }
}

/// The program hash used for corpus and unstable file names (stable across Rust versions).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What `daxdiff show` prints.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub stats: Stats,
    pub divergences: Vec<Finding>,
    pub crashes: Vec<Finding>,
    pub unstable: Vec<Finding>,
    /// Finding directories of any kind whose `finding.json` does not read back.
    pub damaged: Vec<DamagedFinding>,
}

impl Workdir {
    pub fn summary(&self) -> Result<Summary> {
        let mut damaged = Vec::new();
        let mut complete = |kind| -> Result<Vec<Finding>> {
            let listing = self.listing(kind)?;
            damaged.extend(listing.damaged);
            Ok(listing.complete.into_iter().map(|(_, f)| f).collect())
        };
        let mut stats = self.stats()?.unwrap_or_default();
        if stats.classes_corpus.programs == 0 {
            // A workdir from before classes were counted: its corpus says what they are.
            stats.classes_corpus = self.corpus_classes()?;
        }
        Ok(Summary {
            stats,
            divergences: complete(FindingKind::Divergence)?,
            crashes: complete(FindingKind::Crash)?,
            unstable: complete(FindingKind::Unstable)?,
            damaged,
        })
    }
}

impl Summary {
    /// Whether the campaign found a divergence or a crash, damaged records included: what
    /// the exit status of `fuzz` and `show` says.
    pub fn has_findings(&self) -> bool {
        !self.divergences.is_empty()
            || !self.crashes.is_empty()
            || self.damaged.iter().any(|d| d.kind != FindingKind::Unstable)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "{} (A) vs {} (B): {} execs in {:.0}s over {} session(s), {} stability re-runs",
            s.kernel_a, s.kernel_b, s.execs, s.elapsed_secs, s.sessions, s.reruns
        )?;
        writeln!(
            f,
            "corpus {}, suppressed {}, VM restarts A {} B {}",
            s.corpus, s.suppressed, s.vm_restarts_a, s.vm_restarts_b
        )?;
        let edges = |e: Option<u64>| e.map_or("no KCOV".to_string(), |n| n.to_string());
        writeln!(
            f,
            "KCOV edges A {} B {}; teardown {}",
            edges(s.edges_a),
            edges(s.edges_b),
            match s.teardown_every {
                0 => "off".to_string(),
                1 => "after every program".to_string(),
                n => format!("after every {n}th program"),
            }
        )?;
        for (k, t) in [(&s.kernel_a, &s.time_a), (&s.kernel_b, &s.time_b)] {
            if t.programs_secs + t.boot_secs + t.restore_secs > 0.0 {
                writeln!(
                    f,
                    "guest time {k}: programs {:.0}s (teardown {:.0}s of it), boots {:.0}s, restores {:.0}s ({} restored, {} restores failed)",
                    t.programs_secs, t.teardown_secs, t.boot_secs, t.restore_secs, t.restores, t.restore_failures
                )?;
            }
        }
        if s.classes_executed.programs > 0 {
            writeln!(f, "executed programs by class:\n{}", s.classes_executed)?;
        }
        if s.classes_corpus.programs > 0 {
            writeln!(f, "corpus by class:\n{}", s.classes_corpus)?;
        }
        for (kind, list) in [
            (FindingKind::Divergence, &self.divergences),
            (FindingKind::Crash, &self.crashes),
            (FindingKind::Unstable, &self.unstable),
        ] {
            let damaged: Vec<&DamagedFinding> =
                self.damaged.iter().filter(|d| d.kind == kind).collect();
            write!(f, "{}: {}", kind.dir(), list.len() + damaged.len())?;
            if !damaged.is_empty() {
                write!(f, " ({} damaged)", damaged.len())?;
            }
            writeln!(f)?;
            for x in list.iter() {
                writeln!(f, "  {}  (exec {})", x.signature, x.found_at_exec)?;
                for d in x.differences.iter().take(4) {
                    writeln!(f, "      {d}")?;
                }
            }
            for d in damaged {
                writeln!(f, "  damaged: {d}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_and_stats_round_trip_and_half_written_findings_do_not_count() {
        let t = tempfile::tempdir().unwrap();
        let w = Workdir::open(t.path()).unwrap();
        assert!(w.add_corpus("getpid()\n").unwrap());
        assert!(!w.add_corpus("getpid()\n").unwrap());
        assert_eq!(w.corpus().unwrap(), vec!["getpid()\n".to_string()]);
        let f = Finding {
            kind: FindingKind::Divergence,
            signature: "mmap: ENODEV vs addr".into(),
            kernel_a: "a".into(),
            kernel_b: "b".into(),
            differences: vec!["call 1 mmap: ENODEV vs addr".into()],
            runs: 3,
            found_at_exec: 7,
        };
        let rec = SideRecord {
            outcomes: &[],
            console: &["line".to_string()],
        };
        let dir = w
            .save_finding(
                "mmap-1",
                &f,
                "mmap()\n",
                SideRecord { ..rec },
                SideRecord {
                    outcomes: &[],
                    console: &[],
                },
            )
            .unwrap();
        for file in [
            "prog.txt",
            "finding.json",
            "outcome-a.json",
            "outcome-b.json",
            "console-a.log",
            "console-b.log",
        ] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        assert!(w.has_finding(FindingKind::Divergence, "mmap-1"));
        std::fs::create_dir_all(w.finding_dir(FindingKind::Divergence, "half")).unwrap();
        assert!(!w.has_finding(FindingKind::Divergence, "half"));
        assert_eq!(w.findings(FindingKind::Divergence).unwrap().len(), 1);
        let s = Stats {
            execs: 5,
            kernel_a: "a".into(),
            ..Stats::default()
        };
        w.save_stats(&s).unwrap();
        assert_eq!(
            Workdir::existing(t.path()).unwrap().stats().unwrap(),
            Some(s)
        );
    }

    #[test]
    fn a_workdir_has_one_owner_at_a_time() {
        let t = tempfile::tempdir().unwrap();
        let w = Workdir::open(t.path()).unwrap();
        let first = w.own().unwrap();
        let again = Workdir::open(t.path()).unwrap();
        let err = again.own().unwrap_err().to_string();
        assert!(
            err.contains("workdir") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        again.own().unwrap();
    }

    fn finding(kind: FindingKind, signature: &str) -> Finding {
        Finding {
            kind,
            signature: signature.into(),
            kernel_a: "a".into(),
            kernel_b: "b".into(),
            differences: vec![],
            runs: 1,
            found_at_exec: 1,
        }
    }

    fn save(w: &Workdir, name: &str, f: &Finding) -> PathBuf {
        let none = || SideRecord {
            outcomes: &[],
            console: &[],
        };
        w.save_finding(name, f, "getpid()\n", none(), none())
            .unwrap()
    }

    #[test]
    fn damaged_findings_are_listed_as_damaged_beside_the_others() {
        let t = tempfile::tempdir().unwrap();
        let w = Workdir::open(t.path()).unwrap();
        w.save_stats(&Stats::default()).unwrap();
        save(&w, "good", &finding(FindingKind::Divergence, "good one"));
        let cut = save(&w, "cut", &finding(FindingKind::Divergence, "cut"));
        let json = std::fs::read(cut.join("finding.json")).unwrap();
        std::fs::write(cut.join("finding.json"), &json[..json.len() / 2]).unwrap();
        let bytes = save(&w, "bytes", &finding(FindingKind::Crash, "bytes"));
        std::fs::write(bytes.join("finding.json"), b"{\"kind\": \"crash\xff\"}").unwrap();

        let summary = w.summary().expect("show lists what it can read");
        assert_eq!(summary.divergences.len(), 1);
        assert!(summary.crashes.is_empty());
        let damaged: Vec<&Path> = summary.damaged.iter().map(|d| d.dir.as_path()).collect();
        assert_eq!(damaged, vec![cut.as_path(), bytes.as_path()]);
        let text = summary.to_string();
        assert!(text.contains("divergences: 2 (1 damaged)"), "{text}");
        assert!(text.contains("crashes: 1 (1 damaged)"), "{text}");
        assert!(text.contains(&cut.display().to_string()), "{text}");
        assert!(text.contains("EOF while parsing"), "{text}");
        assert!(text.contains("UTF-8"), "{text}");
        assert!(text.contains("directory is deleted"), "{text}");
        assert!(summary.has_findings());
    }

    #[test]
    fn a_damaged_unstable_entry_alone_is_not_a_finding() {
        let t = tempfile::tempdir().unwrap();
        let w = Workdir::open(t.path()).unwrap();
        let d = save(&w, "u", &finding(FindingKind::Unstable, "unstable on a"));
        std::fs::write(d.join("finding.json"), b"{").unwrap();
        let summary = w.summary().unwrap();
        assert_eq!(summary.damaged.len(), 1);
        assert!(!summary.has_findings());
    }
}
