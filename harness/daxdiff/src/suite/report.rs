//! A suite run's results: per kernel and test, the differences between kernel A and kernel B,
//! and the forms a user reads them in (a terminal table, JSON, Markdown with log excerpts).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::outcome::{secs, Outcome};
use super::runner::TestResult;
use crate::cache::write_atomic;

pub const JSON_FILE: &str = "report.json";
pub const MARKDOWN_FILE: &str = "report.md";
/// Where a report is kept when a new run cannot carry all of its results over.
pub const PREVIOUS_JSON_FILE: &str = "report.previous.json";

/// One kernel's part of a suite run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelRun {
    pub kernel: String,
    pub release: String,
    pub package_version: String,
    pub accel: String,
    /// SHA-256 of the kernel image the tests ran on: a resumed run keeps results only
    /// for the same image (a name can be rebuilt with another config).
    #[serde(default)]
    pub bzimage_sha256: String,
    /// The suite image's cache name (it changes with the image's recipe, /init and ndctl).
    #[serde(default)]
    pub image: String,
    /// Wall time of the kernel's whole run: boots, tests and reruns.
    #[serde(with = "secs")]
    pub wall: Duration,
    pub results: Vec<TestResult>,
}

impl KernelRun {
    pub fn result(&self, test: &str) -> Option<&TestResult> {
        self.results.iter().find(|r| r.test.0 == test)
    }

    /// Tests that really exercised the kernel: passed or failed, not skipped or vacuous.
    pub fn really_ran(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.verdict.really_ran())
            .count()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    pub ndctl_version: String,
    /// Kernel A first, then B (one kernel when only one was asked for).
    pub kernels: Vec<KernelRun>,
}

/// How a test's verdicts on A and B differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub test: String,
    pub a: String,
    pub b: String,
    /// A passes and B fails or times out (after B's rerun): what makes `daxdiff suite` exit 1.
    pub regression: bool,
    /// Kernel reports B printed that A did not.
    pub new_reports: Vec<String>,
}

/// A pass on A and a failure on B. Timing failures do not count: they measure the
/// emulator, not the kernel.
pub fn is_regression(a: &Outcome, b: &Outcome) -> bool {
    matches!(a, Outcome::Pass) && matches!(b, Outcome::Fail { .. } | Outcome::Timeout { .. })
}

impl SuiteReport {
    /// How many tests the run covered (those of its first kernel).
    pub fn tests_run(&self) -> usize {
        self.kernels.first().map_or(0, |k| k.results.len())
    }

    pub fn differences(&self) -> Vec<Difference> {
        let [a, b] = match self.kernels.as_slice() {
            [a, b] => [a, b],
            _ => return vec![],
        };
        let mut out = Vec::new();
        for ra in &a.results {
            let Some(rb) = b.result(&ra.test.0) else {
                continue;
            };
            let ar = ra.kernel_reports();
            let new_reports: Vec<String> = rb
                .kernel_reports()
                .into_iter()
                .filter(|r| !ar.contains(r))
                .collect();
            if ra.verdict.kind() != rb.verdict.kind() || !new_reports.is_empty() {
                out.push(Difference {
                    test: ra.test.0.clone(),
                    a: ra.verdict.kind().into(),
                    b: rb.verdict.kind().into(),
                    regression: is_regression(&ra.verdict, &rb.verdict),
                    new_reports,
                });
            }
        }
        out
    }

    pub fn has_regression(&self) -> bool {
        self.differences().iter().any(|d| d.regression)
    }

    /// The report in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<SuiteReport>> {
        let path = dir.join(JSON_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is not a suite report; move it away or choose another --out",
                path.display()
            )
        })
    }

    /// Kernel `name`'s run in this report, if a run of ndctl `ndctl_version` on the kernel
    /// image with SHA-256 `sha` and the suite image `image` can continue from it.
    pub fn resumable(
        &self,
        ndctl_version: &str,
        name: &str,
        sha: &str,
        image: &str,
    ) -> Option<&KernelRun> {
        if self.ndctl_version != ndctl_version || sha.is_empty() || image.is_empty() {
            return None;
        }
        self.kernels
            .iter()
            .find(|k| k.kernel == name && k.bzimage_sha256 == sha && k.image == image)
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut json = serde_json::to_value(self)?;
        json["differences"] = serde_json::to_value(self.differences())?;
        write_atomic(
            &dir.join(JSON_FILE),
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )
        .with_context(|| format!("write the suite report into {}", dir.display()))?;
        write_atomic(&dir.join(MARKDOWN_FILE), self.markdown(dir).as_bytes())?;
        Ok(())
    }

    /// The terminal table: one row per test, outcome and test time per kernel, differences.
    pub fn table(&self) -> String {
        let labels: Vec<&str> = self.kernels.iter().map(|k| k.kernel.as_str()).collect();
        self.render_table(&labels, true)
    }

    /// The table for a mail (rows of at most 66 columns): no pmem column, and the kernels
    /// headed by `labels` (`base`, `series`) rather than by their names.
    pub fn mail_table(&self, labels: &[&str]) -> String {
        self.render_table(labels, false)
    }

    fn render_table(&self, labels: &[&str], wide: bool) -> String {
        let mut s = String::new();
        let names = self.test_names();
        let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
        let (uses_w, cell_w, verdict_w) = if wide { (11, 22, 15) } else { (0, 15, 8) };
        let _ = write!(s, "{:<w$}", "test");
        if wide {
            let _ = write!(s, "  {:<uses_w$}", "uses");
        }
        for (i, _) in self.kernels.iter().enumerate() {
            let _ = write!(s, "  {:<cell_w$}", labels.get(i).copied().unwrap_or("?"));
        }
        if self.kernels.len() == 2 {
            s.push_str("  difference");
        }
        s.push('\n');
        let diffs = self.differences();
        for name in &names {
            let uses = self
                .kernels
                .iter()
                .find_map(|k| k.result(name))
                .map(|r| r.uses.clone())
                .unwrap_or_default();
            let _ = write!(s, "{name:<w$}");
            if wide {
                let _ = write!(s, "  {uses:<uses_w$}");
            }
            for k in &self.kernels {
                let cell = match k.result(name) {
                    Some(r) => {
                        let mut v = r.verdict.kind().to_string();
                        if r.flaky {
                            v.push_str(" (flaky)");
                        }
                        let t = r.duration().map(fmt_secs).unwrap_or_else(|| "-".into());
                        format!("{v:<verdict_w$}{t:>7}")
                    }
                    None => "-".into(),
                };
                let _ = write!(s, "  {cell:<cell_w$}");
            }
            if let Some(d) = diffs.iter().find(|d| &d.test == name) {
                s.push_str(if d.regression {
                    "  REGRESSION"
                } else if d.a != d.b {
                    "  differs"
                } else {
                    "  new kernel report"
                });
            }
            s.push('\n');
        }
        let pad = if wide { uses_w + 2 } else { 0 };
        let _ = write!(s, "{:<w$}{:pad$}", "really ran", "");
        for k in &self.kernels {
            let _ = write!(
                s,
                "  {:<cell_w$}",
                format!("{}/{}", k.really_ran(), k.results.len())
            );
        }
        s.push('\n');
        let _ = write!(s, "{:<w$}{:pad$}", "wall time", "");
        for k in &self.kernels {
            let _ = write!(s, "  {:<cell_w$}", fmt_secs(k.wall));
        }
        s.push('\n');
        // Why each test that did not pass did not.
        for k in &self.kernels {
            for r in &k.results {
                if let Some(why) = r.verdict.reason() {
                    let _ = writeln!(s, "  {} {}: {}: {why}", k.kernel, r.test, r.verdict.kind());
                }
                for rep in r.kernel_reports() {
                    let _ = writeln!(s, "  {} {}: kernel report: {rep}", k.kernel, r.test);
                }
            }
        }
        s
    }

    /// The Markdown report: the table, then each failure with an excerpt of its log.
    pub fn markdown(&self, dir: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# ndctl dax suite\n");
        let _ = writeln!(
            s,
            "ndctl {} (Debian source), `meson test --suite dax` tests, one fresh guest per test.\n",
            self.ndctl_version
        );
        for k in &self.kernels {
            let _ = writeln!(
                s,
                "- **{}**: {} (package {}), {}, wall time {}, {} of {} tests really ran",
                k.kernel,
                k.release,
                k.package_version,
                k.accel,
                fmt_secs(k.wall),
                k.really_ran(),
                k.results.len()
            );
        }
        s.push('\n');
        let _ = write!(s, "| test | uses |");
        for k in &self.kernels {
            let _ = write!(s, " {} | time |", k.kernel);
        }
        if self.kernels.len() == 2 {
            s.push_str(" difference |");
        }
        s.push('\n');
        s.push_str("|---|---|");
        for _ in &self.kernels {
            s.push_str("---|---:|");
        }
        if self.kernels.len() == 2 {
            s.push_str("---|");
        }
        s.push('\n');
        let diffs = self.differences();
        for name in self.test_names() {
            let uses = self
                .kernels
                .iter()
                .find_map(|k| k.result(&name))
                .map(|r| r.uses.clone())
                .unwrap_or_default();
            let _ = write!(s, "| {name} | {uses} |");
            for k in &self.kernels {
                match k.result(&name) {
                    Some(r) => {
                        let mut v = r.verdict.kind().to_string();
                        if r.flaky {
                            v.push_str(" (flaky)");
                        }
                        if let Some(why) = r.verdict.reason() {
                            v = format!("{v}: {}", md_cell(&why));
                        }
                        let t = r.duration().map(fmt_secs).unwrap_or_else(|| "-".into());
                        let _ = write!(s, " {v} | {t} |");
                    }
                    None => s.push_str(" - | - |"),
                }
            }
            if self.kernels.len() == 2 {
                let d = diffs.iter().find(|d| d.test == name);
                let cell = match d {
                    Some(d) if d.regression => "**regression**".to_string(),
                    Some(d) if d.a != d.b => format!("{} → {}", d.a, d.b),
                    Some(d) => format!("new on B: {}", md_cell(&d.new_reports.join("; "))),
                    None => String::new(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        let mut failures = String::new();
        let mut boots = String::new();
        for k in &self.kernels {
            for r in &k.results {
                for (i, a) in r.attempts.iter().enumerate() {
                    for (n, why) in a.boot_failures.iter().enumerate() {
                        let _ = writeln!(
                            boots,
                            "- {} {}, attempt {}, boot {}: {} (`{}`)",
                            k.kernel,
                            r.test,
                            i + 1,
                            n + 1,
                            md_cell(why),
                            a.log
                                .with_file_name(format!("boot-failure-{}.log", n + 1))
                                .display()
                        );
                    }
                    if !a.outcome.is_failure() && a.kernel_reports.is_empty() {
                        continue;
                    }
                    let _ = writeln!(
                        failures,
                        "\n### {} on {}, attempt {}: {}\n",
                        r.test,
                        k.kernel,
                        i + 1,
                        a.outcome.kind()
                    );
                    if let Some(why) = a.outcome.reason() {
                        let _ = writeln!(failures, "{}\n", md_cell(&why));
                    }
                    for rep in &a.kernel_reports {
                        let _ = writeln!(failures, "- kernel report: `{rep}`");
                    }
                    let _ = writeln!(
                        failures,
                        "- logs: `{}`, `{}`\n",
                        a.log.display(),
                        a.console.display()
                    );
                    let log = fs::read_to_string(dir.join(&a.log)).unwrap_or_default();
                    let needle = a.outcome.reason().unwrap_or_default();
                    let _ = writeln!(
                        failures,
                        "```\n{}\n```",
                        excerpt(&log, failure_line(&needle), 40)
                    );
                }
            }
        }
        if !failures.is_empty() {
            let _ = writeln!(s, "\n## Failures and kernel reports");
            s.push_str(&failures);
        }
        if !boots.is_empty() {
            let _ = writeln!(s, "\n## Boots that failed (retried; not test results)\n");
            s.push_str(&boots);
        }
        s
    }

    fn test_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for k in &self.kernels {
            for r in &k.results {
                if !names.contains(&r.test.0) {
                    names.push(r.test.0.clone());
                }
            }
        }
        names
    }
}

/// The line of the log a reason quotes (`exit 1: test/dm.sh: failed at line 70`).
fn failure_line(reason: &str) -> &str {
    match reason.split_once(": ") {
        Some((exit, line)) if exit.starts_with("exit ") => line,
        _ => reason,
    }
}

/// Up to `n` lines of a log without the libraries' debug lines: those before and a few
/// after the first line containing `needle`, or the last `n` when no line does.
pub fn excerpt(log: &str, needle: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("libndctl: ") && !l.starts_with("libdaxctl: "))
        .collect();
    let end = match lines
        .iter()
        .position(|l| !needle.is_empty() && l.contains(needle))
    {
        Some(i) => (i + 1 + n / 4).min(lines.len()),
        None => lines.len(),
    };
    lines[end.saturating_sub(n)..end].join("\n")
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::runner::Attempt;
    use crate::suite::spec::TestName;

    fn result(test: &str, verdicts: &[Outcome], reports: &[&str]) -> TestResult {
        let attempts: Vec<Attempt> = verdicts
            .iter()
            .enumerate()
            .map(|(i, o)| Attempt {
                outcome: o.clone(),
                duration: Duration::from_millis(12_300),
                boot: Duration::from_secs(10),
                status: Some(0),
                log: format!("k/{test}/attempt-{}/test.log", i + 1).into(),
                console: format!("k/{test}/attempt-{}/console.log", i + 1).into(),
                kernel_reports: reports.iter().map(|s| s.to_string()).collect(),
                boot_failures: vec![],
            })
            .collect();
        TestResult {
            test: TestName(test.into()),
            uses: "e820 pmem".into(),
            verdict: verdicts.last().unwrap().clone(),
            flaky: verdicts.iter().any(Outcome::is_failure)
                && verdicts.iter().any(|v| !v.is_failure()),
            attempts,
        }
    }

    fn kernel(name: &str, results: Vec<TestResult>) -> KernelRun {
        KernelRun {
            kernel: name.into(),
            release: "r".into(),
            package_version: "v".into(),
            accel: "tcg".into(),
            bzimage_sha256: format!("sha of {name}"),
            image: format!("{name}-suite-0123"),
            wall: Duration::from_secs(754),
            results,
        }
    }

    fn fail(r: &str) -> Outcome {
        Outcome::Fail { reason: r.into() }
    }

    #[test]
    fn pass_on_a_and_fail_on_b_is_a_regression_timing_and_flakes_are_not() {
        let a = kernel(
            "A",
            vec![
                result("dax-ext4.sh", &[Outcome::Pass], &[]),
                result("device-dax", &[Outcome::Pass], &[]),
                result("mmap.sh", &[Outcome::Pass], &[]),
                result("dm.sh", &[fail("x"), fail("x")], &[]),
            ],
        );
        let b = kernel(
            "B",
            vec![
                result(
                    "dax-ext4.sh",
                    &[fail("line 77"), fail("line 77")],
                    &["WARNING in dax_insert_entry"],
                ),
                result(
                    "device-dax",
                    &[
                        Outcome::Timing {
                            reason: "slow".into(),
                        },
                        Outcome::Timing {
                            reason: "slow".into(),
                        },
                    ],
                    &[],
                ),
                result("mmap.sh", &[fail("x"), Outcome::Pass], &[]),
                result("dm.sh", &[Outcome::Pass], &[]),
            ],
        );
        let r = SuiteReport {
            ndctl_version: "81-1".into(),
            kernels: vec![a, b],
        };
        let d = r.differences();
        let by = |t: &str| d.iter().find(|x| x.test == t).cloned();
        let ext4 = by("dax-ext4.sh").unwrap();
        assert!(ext4.regression);
        assert_eq!(ext4.new_reports, ["WARNING in dax_insert_entry"]);
        assert!(
            !by("device-dax").unwrap().regression,
            "timing is the emulator"
        );
        assert!(
            by("mmap.sh").is_none(),
            "a flake that passes on rerun is a pass"
        );
        assert!(
            !by("dm.sh").unwrap().regression,
            "fail → pass is an improvement"
        );
        assert!(r.has_regression());

        let t = r.table();
        let row = t.lines().find(|l| l.starts_with("dax-ext4.sh")).unwrap();
        assert!(
            row.contains("pass") && row.contains("fail") && row.contains("REGRESSION"),
            "{row}"
        );
        let mm = t.lines().find(|l| l.starts_with("mmap.sh")).unwrap();
        assert!(mm.contains("pass (flaky)") && mm.contains("12.3s"), "{mm}");
        assert!(t.contains("really ran") && t.contains("12m34s"), "{t}");
        assert!(t.contains("B dax-ext4.sh: fail: line 77"), "{t}");
    }

    #[test]
    fn excerpts_end_shortly_after_the_failure_line() {
        let log: String = (1..=200)
            .map(|i| {
                if i == 120 {
                    "test/dm.sh: failed at line 70\n".to_string()
                } else {
                    format!("l{i}\n")
                }
            })
            .collect();
        let e = excerpt(
            &log,
            failure_line("exit 1: test/dm.sh: failed at line 70"),
            40,
        );
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 40);
        assert_eq!(lines[29], "test/dm.sh: failed at line 70");
        assert_eq!(lines[39], "l130");
        assert_eq!(excerpt(&log, "not there", 3), "l198\nl199\nl200");
    }

    #[test]
    fn reports_are_written_with_failure_excerpts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("k/dm.sh/attempt-1");
        fs::create_dir_all(&log).unwrap();
        let text: String = (1..=100)
            .map(|i| format!("line {i}\nlibndctl: debug {i}\n"))
            .collect();
        fs::write(log.join("test.log"), text).unwrap();
        let mut dev = result("dax-dev", &[Outcome::Pass], &[]);
        dev.attempts[0].boot_failures = vec!["Oops: int3 in sched_clock_cpu".into()];
        let r = SuiteReport {
            ndctl_version: "81-1".into(),
            kernels: vec![kernel(
                "k",
                vec![
                    result(
                        "dm.sh",
                        &[fail("exit 1: test/dm.sh: failed at line 9")],
                        &[],
                    ),
                    dev,
                ],
            )],
        };
        r.write(dir.path()).unwrap();
        let md = fs::read_to_string(dir.path().join(MARKDOWN_FILE)).unwrap();
        assert!(
            md.contains("| dm.sh | e820 pmem | fail: exit 1: test/dm.sh: failed at line 9 |"),
            "{md}"
        );
        assert!(md.contains("### dm.sh on k, attempt 1: fail"), "{md}");
        assert!(
            md.contains("line 100") && md.contains("line 61") && !md.contains("line 60\n"),
            "{md}"
        );
        assert!(!md.contains("### dax-dev"), "passes get no excerpt");
        assert!(
            md.contains("- k dax-dev, attempt 1, boot 1: Oops: int3 in sched_clock_cpu (`k/dax-dev/attempt-1/boot-failure-1.log`)"),
            "{md}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join(JSON_FILE)).unwrap()).unwrap();
        assert_eq!(j["kernels"][0]["results"][0]["verdict"]["outcome"], "fail");
        assert_eq!(j["kernels"][0]["wall"], 754.0);
        assert!(
            j["differences"].as_array().unwrap().is_empty(),
            "one kernel, nothing to compare"
        );
    }

    #[test]
    fn a_written_report_resumes_only_for_the_same_image_and_ndctl() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            SuiteReport::load(d.path()).unwrap().is_none(),
            "no report yet"
        );
        let r = SuiteReport {
            ndctl_version: "81".into(),
            kernels: vec![kernel("A", vec![result("mmap.sh", &[Outcome::Pass], &[])])],
        };
        r.write(d.path()).unwrap();
        let back = SuiteReport::load(d.path()).unwrap().unwrap();
        let k = back
            .resumable("81", "A", "sha of A", "A-suite-0123")
            .unwrap();
        assert_eq!(k.results.len(), 1);
        assert_eq!(k.result("mmap.sh").unwrap().verdict, Outcome::Pass);
        assert!(back
            .resumable("81", "A", "sha of a rebuild", "A-suite-0123")
            .is_none());
        assert!(back
            .resumable("81", "A", "sha of A", "A-suite-4567")
            .is_none());
        assert!(back
            .resumable("82", "A", "sha of A", "A-suite-0123")
            .is_none());
        assert!(back
            .resumable("81", "B", "sha of A", "A-suite-0123")
            .is_none());
        // A report from before images were recorded resumes nothing.
        assert!(back.resumable("81", "A", "", "").is_none());
        std::fs::write(d.path().join(JSON_FILE), "{ not json").unwrap();
        let e = format!("{:#}", SuiteReport::load(d.path()).unwrap_err());
        assert!(e.contains("report.json is not a suite report"), "{e}");
    }

    #[test]
    fn the_mail_table_fits_a_mail() {
        let long = "a-test-name-sh";
        let r = SuiteReport {
            ndctl_version: "81".into(),
            kernels: vec![
                kernel("6.1-kasan", vec![result(long, &[Outcome::Pass], &[])]),
                kernel(
                    "6.1-kasan+dax-gup-v2",
                    vec![result(long, &[fail("x"), fail("x")], &[])],
                ),
            ],
        };
        let t = r.mail_table(&["base", "series"]);
        let rows: Vec<&str> = t.lines().filter(|l| !l.starts_with("  ")).collect();
        assert!(
            rows[0].starts_with("test") && rows[0].contains("base") && rows[0].contains("series")
        );
        assert!(!t.contains("e820 pmem"), "no pmem column:\n{t}");
        for l in &rows {
            assert!(l.trim_end().len() <= 66, "too wide for a mail: {l:?}");
        }
        assert!(rows[1].contains("REGRESSION"), "{t}");
        // The terminal table keeps the kernel names and the pmem column.
        let wide = r.table();
        assert!(wide.contains("6.1-kasan+dax-gup-v2") && wide.contains("e820 pmem"));
    }
}
