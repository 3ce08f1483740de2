//! Where the executor's time goes per program, step by step (the in-guest loop reports it,
//! so a per-program cost that one kernel makes expensive shows as the step that grew).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The steps of one request, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Parsing the program and the first reference-count baseline.
    Parse,
    /// The program's directories (and a mount repair when one is missing).
    Prepare,
    /// Fork to the child's last result.
    Program,
    /// The program's processes going away after the last result (or the kill).
    Exit,
    /// The bounded teardown steps (when the request asks for them).
    Teardown,
    /// Mount and device-dax repairs.
    Repair,
    /// Integrity re-reads after the teardown.
    Integrity,
    /// Removing the program's directories.
    RemoveDirs,
    /// Zeroing what the program wrote on the device-dax device.
    ZeroDevdax,
    /// Reference-count readings until they settle.
    Refcounts,
    /// Reaping orphans.
    Reap,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Parse => "parse",
            Step::Prepare => "prepare",
            Step::Program => "program",
            Step::Exit => "exit",
            Step::Teardown => "teardown",
            Step::Repair => "repair",
            Step::Integrity => "integrity",
            Step::RemoveDirs => "remove_dirs",
            Step::ZeroDevdax => "zero_devdax",
            Step::Refcounts => "refcounts",
            Step::Reap => "reap",
        }
    }
}

/// Time spent per step, summed over the requests handled.
#[derive(Clone, Debug, Default)]
pub struct StepTimes {
    spent: BTreeMap<Step, Duration>,
}

impl StepTimes {
    pub fn add(&mut self, step: Step, d: Duration) {
        *self.spent.entry(step).or_default() += d;
    }

    /// Adds the time since `*mark` to `step` and moves the mark to now.
    pub fn lap(&mut self, step: Step, mark: &mut Instant) {
        let now = Instant::now();
        self.add(step, now - *mark);
        *mark = now;
    }

    /// Seconds per step, by name, in step order.
    pub fn seconds(&self) -> BTreeMap<String, f64> {
        self.spent
            .iter()
            .map(|(s, d)| (s.as_str().to_string(), d.as_secs_f64()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_step() {
        let mut t = StepTimes::default();
        t.add(Step::Program, Duration::from_millis(30));
        t.add(Step::Program, Duration::from_millis(20));
        t.add(Step::Refcounts, Duration::from_millis(5));
        let mut mark = Instant::now() - Duration::from_millis(10);
        t.lap(Step::Reap, &mut mark);
        let s = t.seconds();
        assert!((s["program"] - 0.05).abs() < 1e-9);
        assert!((s["refcounts"] - 0.005).abs() < 1e-9);
        assert!(s["reap"] >= 0.01);
        assert!(mark.elapsed() < Duration::from_millis(10));
    }
}
