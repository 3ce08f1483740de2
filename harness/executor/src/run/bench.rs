//! `daxdiff-exec loop`: the same batch of programs run again and again inside the guest,
//! with the full per-program machinery (fork, timeout, cleanup). Its programs/second is
//! the floor the controller's exec benchmark is measured against.

use std::collections::BTreeMap;
use std::time::Instant;

use daxdiff_prog::wire::{Request, Status};
use serde::{Deserialize, Serialize};

use super::steps::StepTimes;
use super::Executor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Programs in the batch.
    pub batch: usize,
    /// How many times the batch ran.
    pub rounds: u64,
    pub programs: u64,
    pub seconds: f64,
    pub programs_per_second: f64,
    /// Programs per final status (`completed`, `timeout`, …).
    pub statuses: BTreeMap<String, u64>,
    /// Seconds spent per step of the executor over all programs (`program`, `refcounts`, …;
    /// see `steps::Step`).
    #[serde(default)]
    pub step_seconds: BTreeMap<String, f64>,
}

fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub fn run(exec: &mut Executor, batch: &[Request], rounds: u64) -> BenchReport {
    let mut statuses = BTreeMap::new();
    exec.steps = StepTimes::default();
    let start = Instant::now();
    let mut programs = 0u64;
    for _ in 0..rounds {
        for req in batch {
            let resp = exec.handle(req);
            *statuses.entry(status_name(resp.status)).or_insert(0) += 1;
            programs += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    BenchReport {
        batch: batch.len(),
        rounds,
        programs,
        seconds,
        programs_per_second: if seconds > 0.0 {
            programs as f64 / seconds
        } else {
            0.0
        },
        statuses,
        step_seconds: exec.steps.seconds(),
    }
}
