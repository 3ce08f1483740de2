//! Benchmarks that print figures: boot-to-ready against the bare-boot floor.

use std::time::Duration;

use anyhow::{Context, Result};
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
    /// Median snapshot restore → a guest that answers over SSH (copying the NVDIMMs and
    /// disks, loading the state, SSH).
    pub restore_median: Duration,
    /// Median of the load step alone (QEMU start → state loaded).
    pub restore_load_median: Duration,
    /// Saving the snapshot (the guest stopped), once.
    pub snapshot_save: Duration,
    pub snapshot_state_bytes: u64,
    pub full: Vec<BootTimes>,
    pub bare: Vec<Duration>,
    pub restores: Vec<crate::vm::snapshot::RestoreTimes>,
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
    let mut snapshot = None;
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
        let mut vm = p.boot(MachineProfile::default(), None)?;
        full.push(vm.times.clone());
        if i + 1 == runs {
            progress("saving the last booted guest");
            snapshot = Some(vm.save_snapshot()?);
        }
        vm.shutdown()?;
    }
    let snap = snapshot.context("no boot to save (--runs 0)")?;
    let mut restores = Vec::new();
    for i in 0..runs {
        progress(&format!("restore {}/{runs}", i + 1));
        let (mut vm, t) = Vm::restore(&snap)?;
        // Ready means it answers: a command through SSH, as the executor will be started.
        let out = vm.run(
            "cat /run/daxdiff/bringup.json >/dev/null",
            Duration::from_secs(30),
        )?;
        anyhow::ensure!(
            out.status == 0,
            "the restored guest's bring-up report is gone"
        );
        restores.push(t);
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
    let restore_median = median(restores.iter().map(|t| t.ready).collect());
    Ok(BootBench {
        kernel: p.kernel.name.0.clone(),
        runs,
        accel: p.accel.to_string(),
        median: median_t,
        bare_median,
        ratio,
        restore_median,
        restore_load_median: median(restores.iter().map(|t| t.load).collect()),
        snapshot_save: snap.saved_in,
        snapshot_state_bytes: snap.state_bytes,
        full,
        bare,
        restores,
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

/// Throughput and host memory of one VM pair, from a short real campaign.
#[derive(Debug, Serialize)]
pub struct FuzzBench {
    pub a: String,
    pub b: String,
    pub execs: u64,
    pub reruns: u64,
    pub seconds: f64,
    /// Program pairs per second, stability re-runs and VM restarts included in the time.
    pub execs_per_second: f64,
    pub vm_restarts: u64,
    /// Where each kernel's guest time went (programs, boots, restores).
    pub time_a: crate::workdir::SideTime,
    pub time_b: crate::workdir::SideTime,
    pub seeds: bool,
    pub boot_fresh: bool,
    /// Peak of the summed resident memory of the pair's QEMU processes, MiB.
    pub guests_peak_rss_mib: f64,
    /// Peak resident memory of the controller, MiB.
    pub controller_peak_rss_mib: f64,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Direct children of `pid` (every thread's list).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Runs `daxdiff fuzz` (this program) for `execs` program pairs without seeds into a fresh
/// workdir, sampling the memory of the controller and its QEMU children twice a second.
/// How `bench fuzz` runs its campaign.
#[derive(Clone, Debug, Default)]
pub struct FuzzBenchOptions {
    /// Start from this seed directory (the default campaign's corpus) instead of generated
    /// programs only.
    pub seeds: Option<std::path::PathBuf>,
    /// Boot every replacement guest instead of restoring the snapshot (the old way, for
    /// before/after figures in the same conditions).
    pub boot_fresh: bool,
}

pub fn fuzz(
    a: &str,
    b: &str,
    execs: u64,
    opts: &FuzzBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<FuzzBench> {
    let work = tempfile::Builder::new()
        .prefix("daxdiff-bench-fuzz-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["fuzz", "--a", a, "--b", b, "--seed", "1", "--budget", "4h"])
        .args(match &opts.seeds {
            Some(dir) => vec!["--seeds".into(), dir.display().to_string()],
            None => vec!["--no-seeds".to_string()],
        })
        .args(opts.boot_fresh.then_some("--boot-fresh"))
        .arg("--execs")
        .arg(execs.to_string())
        .arg("--workdir")
        .arg(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (mut guests_peak, mut controller_peak) = (0u64, 0u64);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        controller_peak = controller_peak.max(rss_kib(child.id()).unwrap_or(0));
        let guests: u64 = children(child.id()).into_iter().filter_map(rss_kib).sum();
        guests_peak = guests_peak.max(guests);
        if let Ok(text) = std::fs::read_to_string(work.path().join("stats.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                progress(&format!("{} of {execs} program pairs", v["execs"]));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // 0: no findings, 1: findings; both are a finished campaign.
    if !matches!(status.code(), Some(0) | Some(1)) {
        anyhow::bail!("daxdiff fuzz failed ({status}); run it by hand with --workdir to see why");
    }
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("stats.json"))?)?;
    let num = |k: &str| stats[k].as_u64().unwrap_or(0);
    let seconds = stats["elapsed_secs"].as_f64().unwrap_or(0.0);
    let side = |k: &str| -> crate::workdir::SideTime {
        serde_json::from_value(stats[k].clone()).unwrap_or_default()
    };
    Ok(FuzzBench {
        a: a.into(),
        b: b.into(),
        execs: num("execs"),
        reruns: num("reruns"),
        seconds,
        execs_per_second: num("execs") as f64 / seconds.max(1e-9),
        vm_restarts: num("vm_restarts_a") + num("vm_restarts_b"),
        time_a: side("time_a"),
        time_b: side("time_b"),
        seeds: opts.seeds.is_some(),
        boot_fresh: opts.boot_fresh,
        guests_peak_rss_mib: guests_peak as f64 / 1024.0,
        controller_peak_rss_mib: controller_peak as f64 / 1024.0,
    })
}
