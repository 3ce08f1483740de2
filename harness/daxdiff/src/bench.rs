//! Benchmarks that print figures: boot-to-ready against the bare-boot floor.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::setup::Prepared;
use crate::vm::{BootOptions, BootTimes, MachineProfile, Vm};

#[derive(Debug, Serialize)]
pub struct BootBench {
    pub kernel: String,
    pub runs: usize,
    pub accel: String,
    /// Median of each phase over the full boots.
    pub median: BootTimes,
    /// Median QEMU start → /init of a guest whose init powers off at once.
    pub bare_median: Duration,
    /// median ready / median bare boot: the figure (target ≤ 1.5).
    pub ratio: f64,
    pub full: Vec<BootTimes>,
    pub bare: Vec<Duration>,
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// Alternates bare and full boots so load changes on a shared machine hit both alike.
pub fn boot(p: &Prepared, runs: usize, mut progress: impl FnMut(&str)) -> Result<BootBench> {
    let mut full = Vec::new();
    let mut bare = Vec::new();
    for i in 0..runs {
        progress(&format!("run {}/{runs}: bare boot", i + 1));
        let opts = BootOptions {
            accel: p.accel,
            bare: true,
            ..BootOptions::default()
        };
        let vm = Vm::boot(&p.kernel, &p.image, opts)?;
        bare.push(vm.times.kernel);
        vm.shutdown()?;
        progress(&format!("run {}/{runs}: full boot", i + 1));
        let vm = p.boot(MachineProfile::default(), None)?;
        full.push(vm.times.clone());
        vm.shutdown()?;
    }
    let med = |f: fn(&BootTimes) -> Duration| median(full.iter().map(f).collect());
    let median_t = BootTimes {
        kernel: med(|t| t.kernel),
        bringup: med(|t| t.bringup),
        ssh: med(|t| t.ssh),
        ready: med(|t| t.ready),
    };
    let bare_median = median(bare.clone());
    let ratio = median_t.ready.as_secs_f64() / bare_median.as_secs_f64().max(1e-9);
    Ok(BootBench {
        kernel: p.kernel.name.0.clone(),
        runs,
        accel: p.accel.to_string(),
        median: median_t,
        bare_median,
        ratio,
        full,
        bare,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let s = Duration::from_secs;
        assert_eq!(median(vec![s(3), s(1), s(2)]), s(2));
        assert_eq!(
            median(vec![s(4), s(1), s(2), s(3)]),
            Duration::from_millis(2500)
        );
        assert_eq!(median(vec![]), Duration::ZERO);
    }
}
