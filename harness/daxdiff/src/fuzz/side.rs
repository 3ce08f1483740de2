//! One kernel of the pair: its guest, the executor session in it, and what to do when the
//! guest dies (record the death as the program's outcome, boot a fresh guest next time).

use std::time::Duration;

use anyhow::{Context, Result};
use daxdiff_prog::wire::{Response, Status, PROTOCOL_VERSION};

use crate::diff::{normalize, Outcome};
use crate::exec::Runner;
use crate::setup::Prepared;
use crate::vm::snapshot::Snapshot;
use crate::vm::{MachineProfile, Vm};

/// Failed restores after which a side boots every guest (a snapshot that does not load is
/// replaced by one of the next boot; two in a row mean restores do not work here).
const RESTORE_FAILURES_TOLERATED: u64 = 2;

/// The start of an outcome's `detail` when the guest, not just the program, stopped.
pub const GUEST_STOPPED: &str = "guest stopped answering";

/// One run of one program on one kernel.
#[derive(Clone, Debug)]
pub struct Run {
    pub outcome: Outcome,
    /// The console lines printed while the program ran.
    pub console: Vec<String>,
    /// KCOV edges (`None`: the kernel has no KCOV).
    pub coverage: Option<Vec<u32>>,
}

pub struct KernelSide {
    pub name: String,
    prepared: Prepared,
    guest: Option<(Vm, Runner)>,
    timeout: Duration,
    /// Guests booted after the first (one per death).
    pub restarts: u64,
    booted: u64,
    /// Teardown liveness after one program in N (0: never), chosen by the program's hash:
    /// both kernels, and every stability re-run, tear down after the same programs.
    teardown_every: u64,
    probe_warned: bool,
    /// Replace guests by restoring the first one's saved state instead of booting.
    snapshots: bool,
    snapshot: Option<Snapshot>,
    /// Guests restored from the snapshot (counted in `restarts` too).
    pub restores: u64,
    /// Restores that failed and were replaced by a boot.
    pub restore_failures: u64,
    /// Wall time spent bringing guests up: boots (with bring-up and SSH), saving the
    /// snapshot, restores.
    pub boot_time: Duration,
    pub restore_time: Duration,
    /// Wall time of program runs (the executor's whole round trip: the program, its
    /// teardown and cleanup, the checks after it).
    pub run_time: Duration,
    /// The teardown liveness steps' part of `run_time`, as the executor timed them.
    pub teardown_time: Duration,
}

/// What one side's guests cost so far: counted since the side was made, and subtracted to
/// get what one stretch of the campaign cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GuestCost {
    pub restarts: u64,
    pub restores: u64,
    pub restore_failures: u64,
    pub boot: Duration,
    pub restore: Duration,
    pub run: Duration,
    pub teardown: Duration,
}

impl std::ops::Sub for GuestCost {
    type Output = GuestCost;
    fn sub(self, o: GuestCost) -> GuestCost {
        GuestCost {
            restarts: self.restarts - o.restarts,
            restores: self.restores - o.restores,
            restore_failures: self.restore_failures - o.restore_failures,
            boot: self.boot.saturating_sub(o.boot),
            restore: self.restore.saturating_sub(o.restore),
            run: self.run.saturating_sub(o.run),
            teardown: self.teardown.saturating_sub(o.teardown),
        }
    }
}

impl KernelSide {
    pub fn new(name: &str, prepared: Prepared, timeout: Duration) -> KernelSide {
        KernelSide {
            name: name.to_string(),
            prepared,
            guest: None,
            timeout,
            restarts: 0,
            booted: 0,
            teardown_every: 1,
            probe_warned: false,
            snapshots: false,
            snapshot: None,
            restores: 0,
            restore_failures: 0,
            boot_time: Duration::ZERO,
            restore_time: Duration::ZERO,
            run_time: Duration::ZERO,
            teardown_time: Duration::ZERO,
        }
    }

    pub fn cost(&self) -> GuestCost {
        GuestCost {
            restarts: self.restarts,
            restores: self.restores,
            restore_failures: self.restore_failures,
            boot: self.boot_time,
            restore: self.restore_time,
            run: self.run_time,
            teardown: self.teardown_time,
        }
    }

    /// Replace a guest that died, hung or reported by restoring the first guest's state,
    /// saved right after its bring-up, instead of booting (a boot when a restore fails).
    pub fn with_snapshots(mut self, on: bool) -> KernelSide {
        self.snapshots = on;
        self
    }

    /// Teardown liveness after every `n`th program; 0 turns it off.
    pub fn with_teardown_every(mut self, n: u64) -> KernelSide {
        self.teardown_every = n;
        self
    }

    /// Says on stderr, once, when the guest has no reference-count probe.
    fn warn_without_probe(&mut self) {
        if self.probe_warned {
            return;
        }
        let Some((vm, _)) = &self.guest else { return };
        // Left out on purpose (a bisection step whose signal reads no counts): nothing to say.
        if self.prepared.image.facts.get("probe").map(String::as_str)
            == Some(crate::images::guest::PROBE_LEFT_OUT)
        {
            return;
        }
        if let Some(s) = crate::refcounts::probe_status(vm) {
            if s != "probe-loaded" {
                self.probe_warned = true;
                eprintln!(
                    "{}: no reference-count probe in the guest ({s}): outcomes carry no refcount deltas on this kernel",
                    self.name
                );
            }
        }
    }

    /// Boots the guest now (the first boot is slow; callers show it). A kernel that oopses
    /// while booting is booted again ([`crate::vm::boot_retrying_transient`]): under TCG,
    /// SMP boots occasionally oops while patching kernel text (int3), which says nothing about
    /// the program that ran before.
    pub fn ensure_booted(&mut self) -> Result<()> {
        if self.guest.is_some() {
            return Ok(());
        }
        let vm = self.fresh_guest()?;
        let runner = Runner::start(&vm)
            .with_context(|| format!("{}: the executor does not start", self.name))?;
        if self.booted > 0 {
            self.restarts += 1;
        }
        self.booted += 1;
        self.guest = Some((vm, runner));
        Ok(())
    }

    /// A guest as bring-up leaves it: restored from the snapshot when there is one, else
    /// booted (and saved, when snapshots are on and none is saved yet).
    fn fresh_guest(&mut self) -> Result<Vm> {
        if let Some(snap) = &self.snapshot {
            let started = std::time::Instant::now();
            match Vm::restore(snap) {
                Ok((vm, _)) => {
                    self.restore_time += started.elapsed();
                    self.restores += 1;
                    return Ok(vm);
                }
                Err(e) => {
                    self.restore_time += started.elapsed();
                    self.restore_failures += 1;
                    self.snapshot = None;
                    if self.restore_failures >= RESTORE_FAILURES_TOLERATED {
                        self.snapshots = false;
                    }
                    eprintln!(
                        "{}: restoring the saved guest failed ({} of {RESTORE_FAILURES_TOLERATED} \
                         tolerated), booting instead: {e:#}",
                        self.name, self.restore_failures
                    );
                }
            }
        }
        let started = std::time::Instant::now();
        let mut vm = self
            .prepared
            .boot(MachineProfile::default(), None)
            .with_context(|| format!("{}: the guest does not boot", self.name))?;
        if self.snapshots && self.snapshot.is_none() {
            match vm.save_snapshot() {
                Ok(s) => {
                    eprintln!(
                        "{}: saved the booted guest in {:.1}s ({} MiB of state): later guests \
                         are restored from it",
                        self.name,
                        s.saved_in.as_secs_f64(),
                        s.state_bytes >> 20
                    );
                    self.snapshot = Some(s);
                }
                Err(e) => {
                    self.snapshots = false;
                    eprintln!(
                        "{}: could not save the booted guest, every guest is booted: {e:#}",
                        self.name
                    );
                    if vm.ssh.is_none() {
                        // The save left the guest unreachable: boot a clean one.
                        drop(vm);
                        vm = self
                            .prepared
                            .boot(MachineProfile::default(), None)
                            .with_context(|| format!("{}: the guest does not boot", self.name))?;
                    }
                }
            }
        }
        self.boot_time += started.elapsed();
        Ok(vm)
    }

    /// Runs a program. A guest that stops answering gives a `Crashed` outcome carrying the
    /// console's reports, and is replaced by a fresh one before the next program; only a
    /// guest that cannot boot is an error.
    pub fn run(&mut self, program: &str) -> Result<Run> {
        self.ensure_booted()?;
        self.warn_without_probe();
        let teardown = tears_down(program, self.teardown_every);
        let (vm, runner) = self.guest.as_mut().expect("booted above");
        let from = vm.console.len();
        let started = std::time::Instant::now();
        let result = runner.run_with(vm, program, self.timeout, teardown);
        self.run_time += started.elapsed();
        let console: Vec<String> = vm.console.since(from).into_iter().map(|l| l.text).collect();
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                // The console keeps the panic or the hung-task report; give the kernel a
                // moment to finish printing it before the guest is killed.
                std::thread::sleep(Duration::from_secs(2));
                let (vm, _) = self.guest.take().expect("booted above");
                let console: Vec<String> =
                    vm.console.since(from).into_iter().map(|l| l.text).collect();
                drop(vm);
                let resp = Response {
                    id: 0,
                    status: Status::Crashed,
                    calls: Vec::new(),
                    stack: None,
                    detail: Some(format!(
                        "{GUEST_STOPPED}: {}",
                        first_line(&format!("{e:#}"))
                    )),
                    protocol: PROTOCOL_VERSION,
                    teardown: Vec::new(),
                    refcounts: None,
                    integrity: Vec::new(),
                    coverage: None,
                };
                return Ok(Run {
                    outcome: normalize(&resp, &console),
                    console,
                    coverage: None,
                });
            }
        };
        self.teardown_time += resp
            .teardown
            .iter()
            .map(|s| Duration::from_millis(s.duration_ms))
            .sum::<Duration>();
        let outcome = normalize(&resp, &console);
        if !outcome.reports.is_empty() || outcome.teardown_blocked() {
            // A kernel that has oopsed or warned is no longer the kernel under test (tainted,
            // locks or references possibly leaked), nor one with a task stuck in teardown:
            // the next program gets a fresh guest.
            self.shutdown();
        }
        Ok(Run {
            outcome,
            console,
            coverage: resp.coverage,
        })
    }

    pub fn shutdown(&mut self) {
        if let Some((vm, runner)) = self.guest.take() {
            drop(runner);
            let _ = vm.shutdown();
        }
    }
}

/// Whether `program` gets the teardown liveness steps when one program in `every` does.
pub fn tears_down(program: &str, every: u64) -> bool {
    every > 0 && crate::workdir::fnv1a64(program.as_bytes()).is_multiple_of(every)
}

fn first_line(s: &str) -> &str {
    // "did not answer in time: Timed out waiting on socket" is the same event as "exited":
    // keep only the controller's words so the outcome compares across runs.
    s.split(':').next().unwrap_or(s).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the campaign adds each time is what the side spent since the last look.
    #[test]
    fn guest_time_is_counted_once_across_looks() {
        let s = Duration::from_secs;
        let first = GuestCost {
            restarts: 1,
            restores: 1,
            restore_failures: 0,
            boot: s(20),
            restore: s(2),
            run: s(10),
            teardown: s(3),
        };
        let later = GuestCost {
            restores: 3,
            restore: s(5),
            run: s(30),
            teardown: s(9),
            ..first
        };
        let mut total = crate::workdir::SideTime::default();
        total.add(&first);
        total.add(&(later - first));
        assert_eq!(total.restores, 3);
        assert_eq!(total.boot_secs, 20.0);
        assert_eq!(total.restore_secs, 5.0);
        assert_eq!(total.programs_secs, 30.0);
        assert_eq!(total.teardown_secs, 9.0);
        assert_eq!(total.brief(), "programs 55% boots 36% restores 9%");
    }

    #[test]
    fn teardown_choice_depends_on_the_program_only() {
        assert!(tears_down("getpid()\n", 1));
        assert!(!tears_down("getpid()\n", 0));
        let progs: Vec<String> = (0..400)
            .map(|i| format!("daxdiff_sleep({i:#x})\n"))
            .collect();
        let chosen = progs.iter().filter(|p| tears_down(p, 4)).count();
        assert!((60..140).contains(&chosen), "{chosen} of 400 with every=4");
        assert!(progs.iter().all(|p| tears_down(p, 4) == tears_down(p, 4)));
    }
}
