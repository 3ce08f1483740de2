//! One kernel of the pair: its guest, the executor session in it, and what to do when the
//! guest dies (record the death as the program's outcome, boot a fresh guest next time).

use std::time::Duration;

use anyhow::Result;
use daxdiff_prog::wire::{Response, Status};

use crate::diff::{normalize, Outcome};
use crate::exec::Runner;
use crate::setup::Prepared;
use crate::vm::{MachineProfile, Vm};

/// The start of an outcome's `detail` when the guest, not just the program, stopped.
pub const GUEST_STOPPED: &str = "guest stopped answering";

const BOOT_ATTEMPTS: usize = 3;

/// One run of one program on one kernel.
#[derive(Clone, Debug)]
pub struct Run {
    pub outcome: Outcome,
    /// The console lines printed while the program ran.
    pub console: Vec<String>,
}

pub struct KernelSide {
    pub name: String,
    prepared: Prepared,
    guest: Option<(Vm, Runner)>,
    timeout: Duration,
    /// Guests booted after the first (one per death).
    pub restarts: u64,
    booted: u64,
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
        }
    }

    /// Boots the guest now (the first boot is slow; callers show it). A kernel that dies
    /// while booting is retried: under TCG, SMP boots occasionally oops while patching
    /// kernel text (int3), which says nothing about the program that ran before.
    pub fn ensure_booted(&mut self) -> Result<()> {
        if self.guest.is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..BOOT_ATTEMPTS {
            match self
                .prepared
                .boot(MachineProfile::default(), None)
                .and_then(|vm| {
                    let runner = Runner::start(&vm)?;
                    Ok((vm, runner))
                }) {
                Ok(guest) => {
                    if self.booted > 0 {
                        self.restarts += 1;
                    }
                    self.booted += 1;
                    self.guest = Some(guest);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one attempt");
        Err(e.context(format!(
            "{}: {BOOT_ATTEMPTS} boots in a row failed",
            self.name
        )))
    }

    /// Runs a program. A guest that stops answering gives a `Crashed` outcome carrying the
    /// console's reports, and is replaced by a fresh one before the next program; only a
    /// guest that cannot boot is an error.
    pub fn run(&mut self, program: &str) -> Result<Run> {
        self.ensure_booted()?;
        let (vm, runner) = self.guest.as_mut().expect("booted above");
        let from = vm.console.len();
        let result = runner.run_text(vm, program, self.timeout);
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
                };
                return Ok(Run {
                    outcome: normalize(&resp, &console),
                    console,
                });
            }
        };
        let outcome = normalize(&resp, &console);
        if !outcome.reports.is_empty() {
            // A kernel that has oopsed or warned is no longer the kernel under test (tainted,
            // locks or references possibly leaked): the next program gets a fresh guest.
            self.shutdown();
        }
        Ok(Run { outcome, console })
    }

    pub fn shutdown(&mut self) {
        if let Some((vm, runner)) = self.guest.take() {
            drop(runner);
            let _ = vm.shutdown();
        }
    }
}

fn first_line(s: &str) -> &str {
    // "did not answer in time: Timed out waiting on socket" is the same event as "exited":
    // keep only the controller's words so the outcome compares across runs.
    s.split(':').next().unwrap_or(s).trim()
}
