//! What all jobs of one `daxdiff fuzz` share: the workdir, counters, suppressions, the
//! outcome features seen so far, the budget and the status line.

use std::collections::HashSet;

use daxdiff_prog::wire::COVERAGE_MAP_SIZE;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;

use crate::diff::Suppressions;
use crate::workdir::{Stats, Workdir};

/// How long to fuzz: wall time, program pairs, or both (whichever ends first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub time: Option<Duration>,
    pub execs: Option<u64>,
}

pub struct Campaign {
    pub workdir: Workdir,
    pub stats: Stats,
    pub suppressions: Suppressions,
    /// Runs per kernel behind a divergence verdict.
    pub runs: usize,
    features: HashSet<String>,
    /// KCOV edge slots seen per kernel (`None` until the kernel reports coverage).
    edges_a: Option<Vec<bool>>,
    edges_b: Option<Vec<bool>>,
    budget: Budget,
    started: Instant,
    base_elapsed: f64,
    base_execs: u64,
    last_save: Instant,
    /// When the last line of the minute history went out.
    last_minute: Instant,
    pub bar: ProgressBar,
}

/// One line of `stats.jsonl`, written every minute of a campaign: enough to plot a night.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Minute {
    /// Fuzzing time over all sessions, seconds.
    pub elapsed_secs: f64,
    pub execs: u64,
    /// Program pairs per second in this session so far.
    pub pairs_per_sec: f64,
    pub corpus: u64,
    pub divergences: u64,
    pub crashes: u64,
    pub unstable: u64,
    pub edges_a: Option<u64>,
    pub edges_b: Option<u64>,
    pub vm_restarts_a: u64,
    pub vm_restarts_b: u64,
    /// Each kernel's guest time so far by phase, and its restores.
    #[serde(default)]
    pub time_a: crate::workdir::SideTime,
    #[serde(default)]
    pub time_b: crate::workdir::SideTime,
    /// Class labels executed so far, of all the descriptions allow.
    pub classes_executed: usize,
    pub classes_possible: usize,
    /// The largest class key of the corpus and its share.
    pub largest_corpus_class: Option<(String, f64)>,
}

impl Campaign {
    pub fn new(
        workdir: Workdir,
        stats: Stats,
        suppressions: Suppressions,
        runs: usize,
        budget: Budget,
        bar: ProgressBar,
    ) -> Campaign {
        let (base_elapsed, base_execs) = (stats.elapsed_secs, stats.execs);
        Campaign {
            workdir,
            stats,
            suppressions,
            runs,
            features: HashSet::new(),
            edges_a: None,
            edges_b: None,
            budget,
            started: Instant::now(),
            base_elapsed,
            base_execs,
            last_save: Instant::now(),
            last_minute: Instant::now(),
            bar,
        }
    }

    /// Execs in this session.
    pub fn session_execs(&self) -> u64 {
        self.stats.execs - self.base_execs
    }

    pub fn should_stop(&self) -> bool {
        self.budget
            .time
            .is_some_and(|t| self.started.elapsed() >= t)
            || self.budget.execs.is_some_and(|n| self.session_execs() >= n)
    }

    /// Adds features; true if any was new.
    pub fn add_features(&mut self, features: impl IntoIterator<Item = String>) -> bool {
        let mut new = false;
        for f in features {
            new |= self.features.insert(f);
        }
        new
    }

    /// Adds a program's KCOV edges on kernel A (`on_a`) or B to the campaign's counts.
    pub fn add_edges(&mut self, on_a: bool, edges: &[u32]) {
        let (seen, count) = if on_a {
            (&mut self.edges_a, &mut self.stats.edges_a)
        } else {
            (&mut self.edges_b, &mut self.stats.edges_b)
        };
        // A resumed campaign counts afresh: the replayed corpus brings its edges back.
        let mut n = if seen.is_some() {
            count.unwrap_or(0)
        } else {
            0
        };
        let seen = seen.get_or_insert_with(|| vec![false; COVERAGE_MAP_SIZE]);
        for &e in edges {
            if let Some(slot) = seen.get_mut(e as usize) {
                if !*slot {
                    *slot = true;
                    n += 1;
                }
            }
        }
        *count = Some(n);
    }

    /// Says a line: above the status line on a terminal, as a plain log line otherwise
    /// (under systemd or cron the status line is not drawn, and nothing may go unsaid).
    pub fn announce(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn status(&self) -> String {
        let s = &self.stats;
        let rate = self.session_execs() as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let edges = |e: Option<u64>| e.map_or("-".to_string(), |n| n.to_string());
        let classes = format!(
            "{}/{}",
            s.classes_executed.labels.len(),
            daxdiff_prog::class::Class::all_labels().len()
        );
        format!(
            "{} vs {}: execs {} ({rate:.2}/s) corpus {} edges A {} B {} classes {classes} divergences {} unstable {} crashes {} suppressed {} VM restarts A {} B {} (restored A {} B {}) guest time A {} B {}",
            s.kernel_a, s.kernel_b, s.execs, s.corpus, edges(s.edges_a), edges(s.edges_b), s.divergences, s.unstable, s.crashes, s.suppressed, s.vm_restarts_a, s.vm_restarts_b,
            s.time_a.restores, s.time_b.restores, s.time_a.brief(), s.time_b.brief()
        )
    }

    /// This minute's line of the history.
    pub fn minute(&self) -> Minute {
        let s = &self.stats;
        Minute {
            elapsed_secs: s.elapsed_secs,
            execs: s.execs,
            pairs_per_sec: self.session_execs() as f64
                / self.started.elapsed().as_secs_f64().max(1e-3),
            corpus: s.corpus,
            divergences: s.divergences,
            crashes: s.crashes,
            unstable: s.unstable,
            edges_a: s.edges_a,
            edges_b: s.edges_b,
            vm_restarts_a: s.vm_restarts_a,
            vm_restarts_b: s.vm_restarts_b,
            time_a: s.time_a.clone(),
            time_b: s.time_b.clone(),
            classes_executed: s.classes_executed.labels.len(),
            classes_possible: daxdiff_prog::class::Class::all_labels().len(),
            largest_corpus_class: s
                .classes_corpus
                .largest()
                .map(|(k, share)| (k.to_string(), share)),
        }
    }

    /// Refreshes the status line, `stats.json` every few seconds, and once a minute a line
    /// of `stats.jsonl` (and the status as a log line when no terminal shows it).
    pub fn tick(&mut self) -> Result<()> {
        self.stats.elapsed_secs = self.base_elapsed + self.started.elapsed().as_secs_f64();
        let status = self.status();
        self.bar.set_message(status.clone());
        if self.last_save.elapsed() >= Duration::from_secs(5) {
            self.save()?;
        }
        if self.last_minute.elapsed() >= Duration::from_secs(60) {
            self.last_minute = Instant::now();
            self.workdir.append_history(&self.minute())?;
            if self.bar.is_hidden() {
                eprintln!("{status}");
            }
        }
        Ok(())
    }

    pub fn save(&mut self) -> Result<()> {
        self.stats.elapsed_secs = self.base_elapsed + self.started.elapsed().as_secs_f64();
        self.last_save = Instant::now();
        self.workdir.save_stats(&self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_count_once_per_kernel_and_stay_absent_without_kcov() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Campaign::new(
            Workdir::open(t.path()).unwrap(),
            Stats::default(),
            Suppressions::default(),
            1,
            Budget {
                time: None,
                execs: Some(1),
            },
            ProgressBar::hidden(),
        );
        c.add_edges(true, &[1, 2, 3]);
        c.add_edges(true, &[3, 4]);
        assert_eq!(c.stats.edges_a, Some(4));
        assert_eq!(
            c.stats.edges_b, None,
            "a kernel without KCOV has no edge count"
        );
        let json = serde_json::to_value(&c.stats).unwrap();
        assert_eq!(json["edges_a"], 4);
        assert!(json["edges_b"].is_null());
    }

    #[test]
    fn the_minute_history_gets_a_whole_line_each_time() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Campaign::new(
            Workdir::open(t.path()).unwrap(),
            Stats {
                execs: 7,
                corpus: 3,
                ..Stats::default()
            },
            Suppressions::default(),
            1,
            Budget {
                time: None,
                execs: Some(1),
            },
            ProgressBar::hidden(),
        );
        c.add_edges(true, &[1, 2]);
        c.workdir.append_history(&c.minute()).unwrap();
        c.stats.execs += 1;
        c.workdir.append_history(&c.minute()).unwrap();
        let text = std::fs::read_to_string(t.path().join("stats.jsonl")).unwrap();
        let lines: Vec<Minute> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].execs, lines[1].execs), (7, 8));
        assert_eq!(lines[0].corpus, 3);
        assert_eq!(lines[0].edges_a, Some(2));
        assert_eq!(lines[0].edges_b, None);
        assert_eq!(
            lines[0].classes_possible,
            daxdiff_prog::class::Class::all_labels().len()
        );
    }
}
