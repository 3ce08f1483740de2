//! Reference counts of the guest's DAX page maps (the probe of `vm-images/probe`, read with
//! `daxdiff-exec refcounts`), and what a program left changed: the leak and underflow signal.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use daxdiff_prog::wire::{RangeRefcounts, RefHistogram, RefcountReading, Status};
use daxdiff_prog::Program;
use serde::Serialize;

use crate::exec::Runner;
use crate::vm::Vm;

/// What `/init` said about the probe: `probe-loaded`, or `probe-missing: why`.
pub fn probe_status(vm: &Vm) -> Option<String> {
    vm.console
        .since(0)
        .iter()
        .find_map(|l| {
            l.text
                .strip_prefix("daxdiff-init: probe-")
                .map(str::to_string)
        })
        .map(|s| format!("probe-{s}"))
}

/// One reading of the probe in `vm`.
pub fn read(vm: &mut Vm) -> Result<RefcountReading> {
    let out = vm.run("daxdiff-exec refcounts", Duration::from_secs(120))?;
    if out.status != 0 {
        bail!(
            "`daxdiff-exec refcounts` failed on {}: {} (init said: {})",
            vm.kernel_name,
            out.stderr_str().trim(),
            probe_status(vm).unwrap_or_else(|| "nothing about the probe".into())
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`daxdiff-exec refcounts` printed {}", out.stdout_str()))
}

/// How a range is named across readings: its role, else its namespace, else its address.
pub fn label(r: &RangeRefcounts) -> String {
    r.role
        .clone()
        .or_else(|| r.namespace.clone())
        .unwrap_or_else(|| format!("{:#x}", r.start))
}

/// A range whose counts differ between two readings (`None`: absent from that reading).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RangeChange {
    pub label: String,
    pub before: Option<RangeRefcounts>,
    pub after: Option<RangeRefcounts>,
}

impl RangeChange {
    /// `pgmap_ref +1, ref1 -1, ref2 +1` (only what changed).
    pub fn summary(&self) -> String {
        let (b, a) = match (&self.before, &self.after) {
            (Some(b), Some(a)) => (b, a),
            (None, Some(a)) => return format!("new pgmap (ref {})", a.pgmap_ref),
            (Some(_), None) => return "pgmap gone".to_string(),
            (None, None) => return String::new(),
        };
        let mut parts = Vec::new();
        let mut delta = |name: &str, x: i128, y: i128| {
            if x != y {
                parts.push(format!("{name} {:+}", y - x));
            }
        };
        delta("pgmap_ref", b.pgmap_ref.into(), a.pgmap_ref.into());
        let (hb, ha) = (&b.histogram, &a.histogram);
        delta("ref0", hb.zero.into(), ha.zero.into());
        delta("ref1", hb.one.into(), ha.one.into());
        delta("ref2", hb.two.into(), ha.two.into());
        delta("ref3+", hb.three_plus.into(), ha.three_plus.into());
        delta("neg", hb.negative.into(), ha.negative.into());
        delta("tails", b.tails.into(), a.tails.into());
        delta("pages", b.pages.into(), a.pages.into());
        if b.max != a.max {
            parts.push(format!("max {}→{}", b.max, a.max));
        }
        parts.join(", ")
    }
}

/// The counts that must come back after teardown: everything but names and the maximum
/// (which follows from the histogram).
fn counts(r: &RangeRefcounts) -> (i64, RefHistogram, u64, u64, u64, u64) {
    (
        r.pgmap_ref,
        r.histogram,
        r.tails,
        r.compound,
        r.pages,
        r.first_pfn,
    )
}

/// Ranges whose counts differ, matched by label.
pub fn changes(before: &RefcountReading, after: &RefcountReading) -> Vec<RangeChange> {
    let mut out = Vec::new();
    for b in &before.ranges {
        let a = after
            .ranges
            .iter()
            .find(|a| label(a) == label(b) && a.index == b.index);
        if a.is_none_or(|a| counts(a) != counts(b)) {
            out.push(RangeChange {
                label: label(b),
                before: Some(b.clone()),
                after: a.cloned(),
            });
        }
    }
    for a in &after.ranges {
        if !before
            .ranges
            .iter()
            .any(|b| label(a) == label(b) && a.index == b.index)
        {
            out.push(RangeChange {
                label: label(a),
                before: None,
                after: Some(a.clone()),
            });
        }
    }
    out
}

/// Reads until the counts equal `baseline` or `settle` has passed: references dropped by
/// deferred work (an io_uring ring's release, RCU) come back a little after the program.
/// Returns the last reading and, if it matched, how long that took.
pub fn settle(
    vm: &mut Vm,
    baseline: &RefcountReading,
    settle: Duration,
) -> Result<(RefcountReading, Option<Duration>)> {
    let start = Instant::now();
    loop {
        let now = read(vm)?;
        if changes(baseline, &now).is_empty() {
            return Ok((now, Some(start.elapsed())));
        }
        if start.elapsed() >= settle {
            return Ok((now, None));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One program's effect on the counts.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramCounts {
    pub program: String,
    /// `completed`, `timeout`, `crashed`, `error`, or `guest died: <report title>`.
    pub outcome: String,
    pub baseline: RefcountReading,
    /// After the executor's teardown (and up to the settle time).
    pub after: Option<RefcountReading>,
    /// Time until the counts matched the baseline again; `None` if they did not.
    pub returned_after: Option<Duration>,
    pub changes: Vec<RangeChange>,
}

/// Runs each program once in a guest from `boot`, reading the counts before it and after its
/// teardown. A guest that dies is booted again for the next program.
pub fn run_programs(
    boot: &dyn Fn() -> Result<Vm>,
    programs: &[(String, Program)],
    timeout: Duration,
    settle_time: Duration,
    teardown: bool,
) -> Result<Vec<ProgramCounts>> {
    let mut vm = boot()?;
    let mut runner = Runner::start(&vm)?;
    let mut rows = Vec::new();
    for (name, prog) in programs {
        let baseline = read(&mut vm)?;
        let from = vm.console.len();
        let ran = runner.run_with(&vm, &prog.to_text(), timeout, teardown);
        let outcome = match &ran {
            Ok(r) => status_name(r.status).to_string(),
            Err(e) => {
                std::thread::sleep(Duration::from_secs(2));
                let console: String = vm
                    .console
                    .since(from)
                    .iter()
                    .map(|l| l.text.clone() + "\n")
                    .collect();
                match daxdiff_observe::parse(&console).first() {
                    Some(r) => format!("guest died: {}", r.title),
                    None => format!("guest stopped answering: {e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                }
            }
        };
        if ran.is_err() {
            rows.push(ProgramCounts {
                program: name.clone(),
                outcome,
                baseline,
                after: None,
                returned_after: None,
                changes: vec![],
            });
            drop(runner);
            vm = boot()?;
            runner = Runner::start(&vm)?;
            continue;
        }
        let (after, returned_after) = settle(&mut vm, &baseline, settle_time)?;
        rows.push(ProgramCounts {
            program: name.clone(),
            outcome,
            changes: changes(&baseline, &after),
            baseline,
            after: Some(after),
            returned_after,
        });
    }
    drop(runner);
    vm.shutdown()?;
    Ok(rows)
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Completed => "completed",
        Status::Timeout => "timeout",
        Status::Crashed => "crashed",
        Status::Error => "error",
    }
}

/// One line per range: `ext4  fsdax  pgmap_ref 257537  ref0 0 ref1 257536 …`.
pub fn format_reading(r: &RefcountReading) -> String {
    let mut s = String::new();
    for x in &r.ranges {
        let h = &x.histogram;
        let _ = writeln!(
            s,
            "  {:<7} {:<6} {:#x}-{:#x}  pgmap_ref {:<7} pages {} (tails {})  ref0 {} ref1 {} ref2 {} ref3+ {} neg {}  max {}",
            label(x),
            x.kind,
            x.start,
            x.end,
            x.pgmap_ref,
            x.pages,
            x.tails,
            h.zero,
            h.one,
            h.two,
            h.three_plus,
            h.negative,
            x.max
        );
    }
    s
}

/// The table of [`run_programs`]: one row per program, `=` where counts returned.
pub fn format_table(kernel: &str, rows: &[ProgramCounts]) -> String {
    let mut s = format!("{kernel}\n");
    let width = rows
        .iter()
        .map(|r| r.program.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        s,
        "  {:<width$}  {:<10}  after teardown",
        "program", "outcome"
    );
    for r in rows {
        let verdict = if r.after.is_none() {
            "no reading (guest restarted)".to_string()
        } else if r.changes.is_empty() {
            match r.returned_after {
                Some(d) if d >= Duration::from_millis(500) => {
                    format!("= baseline (after {:.1}s)", d.as_secs_f64())
                }
                _ => "= baseline".to_string(),
            }
        } else {
            r.changes
                .iter()
                .map(|c| format!("{}: {}", c.label, c.summary()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(s, "  {:<width$}  {:<10}  {verdict}", r.program, r.outcome);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(role: &str, pgmap_ref: i64, one: u64, two: u64) -> RangeRefcounts {
        RangeRefcounts {
            pgmap: 0,
            index: 0,
            nr_range: 1,
            kind: "devdax".into(),
            start: 0x1_8000_0000,
            end: 0x1_bfff_ffff,
            first_pfn: 0x181200,
            pages: 257536,
            pgmap_ref,
            tails: 257033,
            compound: 503,
            histogram: RefHistogram {
                one,
                two,
                ..RefHistogram::default()
            },
            max: if two > 0 { 2 } else { 1 },
            namespace: Some("namespace1.0".into()),
            role: Some(role.into()),
        }
    }

    fn reading(ranges: Vec<RangeRefcounts>) -> RefcountReading {
        RefcountReading { version: 1, ranges }
    }

    #[test]
    fn equal_counts_are_no_change_and_a_held_folio_is_one() {
        let base = reading(vec![range("devdax", 504, 503, 0)]);
        assert!(changes(&base, &base.clone()).is_empty());
        // A different pgmap ordinal or namespace name is not a change in counts.
        let mut renamed = base.clone();
        renamed.ranges[0].pgmap = 3;
        assert!(changes(&base, &renamed).is_empty());
        let held = reading(vec![range("devdax", 505, 502, 1)]);
        let c = changes(&base, &held);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].label, "devdax");
        assert_eq!(c[0].summary(), "pgmap_ref +1, ref1 -1, ref2 +1, max 1→2");
    }

    #[test]
    fn vanished_and_new_pgmaps_are_changes() {
        let base = reading(vec![range("devdax", 504, 503, 0)]);
        let gone = reading(vec![]);
        let c = changes(&base, &gone);
        assert_eq!(c[0].summary(), "pgmap gone");
        let c = changes(&gone, &base);
        assert_eq!(c[0].summary(), "new pgmap (ref 504)");
    }

    #[test]
    fn table_marks_returned_and_leaking_programs() {
        let base = reading(vec![range("devdax", 504, 503, 0)]);
        let held = reading(vec![range("devdax", 505, 502, 1)]);
        let rows = vec![
            ProgramCounts {
                program: "uring_fixed_devdax".into(),
                outcome: "completed".into(),
                baseline: base.clone(),
                after: Some(base.clone()),
                returned_after: Some(Duration::from_millis(1200)),
                changes: vec![],
            },
            ProgramCounts {
                program: "leaky".into(),
                outcome: "completed".into(),
                changes: changes(&base, &held),
                baseline: base.clone(),
                after: Some(held),
                returned_after: None,
            },
        ];
        let t = format_table("debian-7.3", &rows);
        assert!(t.contains("= baseline (after 1.2s)"), "{t}");
        assert!(t.contains("devdax: pgmap_ref +1"), "{t}");
    }
}
