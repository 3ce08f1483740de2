//! `daxdiff-exec run`: programs in, results out, one JSON line each way
//! (see `daxdiff_prog::wire`). Each program runs in a fresh child with a timeout; the
//! executor itself survives whatever a program does.

pub mod aio;
pub mod bench;
pub mod cleanup;
pub mod confine;
pub mod env;
pub mod hang;
pub mod integrity;
pub mod interp;
pub mod kcov;
pub mod memory;
mod pseudo;
pub mod stacks;
pub mod steps;
pub mod supervise;
pub mod teardown;
pub mod uring;

use std::io::{BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use daxdiff_prog::wire::{
    refcount_deltas, RefDelta, RefcountReading, Request, Response, Status, StepResult,
    TeardownStep, PROTOCOL_VERSION,
};
use daxdiff_prog::Target;

use crate::topology::Topology;
use env::{ProgDirs, RunEnv};
use steps::{Step, StepTimes};

/// Runs requests one after another against one environment.
pub struct Executor {
    pub env: RunEnv,
    target: &'static Target,
    seq: u64,
    /// Names reference-count ranges by role; `None` outside a brought-up guest.
    topology: Option<Topology>,
    /// The last reference-count reading: the baseline after bring-up, then after each program.
    refs: Option<RefcountReading>,
    /// Where the requests' time went, per step.
    pub steps: StepTimes,
}

fn error(id: u64, detail: String) -> Response {
    Response {
        id,
        status: Status::Error,
        calls: Vec::new(),
        stack: None,
        detail: Some(detail),
        protocol: PROTOCOL_VERSION,
        teardown: Vec::new(),
        refcounts: None,
        integrity: Vec::new(),
        coverage: None,
    }
}

/// Lowers the kernel's hung-task timeout so a task blocked in a teardown step is reported
/// (with its stack, on the console) while the step's deadline runs.
pub fn lower_hung_task_timeout(secs: u64) -> std::io::Result<()> {
    let p = Path::new("/proc/sys/kernel/hung_task_timeout_secs");
    if !p.exists() {
        return Ok(());
    }
    std::fs::write(p, secs.to_string())
}

impl Executor {
    pub fn new(env: RunEnv) -> Executor {
        // Orphans of programs (forked holders, helpers) come back to us to be reaped,
        // instead of piling up as zombies under the guest's init script.
        // SAFETY: prctl on ourselves.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        // Root may pin any amount; without this, io_uring buffer registration could fail
        // with ENOMEM on accounting rather than for the DAX reasons under test.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
        Executor {
            env,
            target: Target::builtin(),
            seq: 0,
            topology: None,
            refs: None,
            steps: StepTimes::default(),
        }
    }

    /// An executor in a brought-up guest: reference counts are read (when the probe is
    /// loaded) and named after the topology's roles.
    pub fn with_topology(env: RunEnv, topology: Topology) -> Executor {
        let mut e = Executor::new(env);
        e.topology = Some(topology);
        e
    }

    /// Reads the probe until the counts match the last reading or `settle` has passed; the
    /// result is what stayed changed. `None` when there is no probe (or no baseline).
    fn refcount_change(
        &mut self,
        settle: Duration,
        notes: &mut Vec<String>,
    ) -> Option<Vec<RefDelta>> {
        let before = self.refs.clone()?;
        let start = Instant::now();
        loop {
            let now = match crate::refcounts::read(self.topology.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    notes.push(format!("refcounts: {e:#}"));
                    self.refs = None;
                    return None;
                }
            };
            let d = refcount_deltas(&before, &now);
            if d.is_empty() || start.elapsed() >= settle {
                self.refs = Some(now);
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one request; never panics, never fails: every problem is in the response.
    pub fn handle(&mut self, req: &Request) -> Response {
        match catch_unwind(AssertUnwindSafe(|| self.handle_inner(req))) {
            Ok(r) => r,
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                error(req.id, format!("executor panicked: {what}"))
            }
        }
    }

    fn handle_inner(&mut self, req: &Request) -> Response {
        if req.protocol != PROTOCOL_VERSION {
            return error(
                req.id,
                format!(
                    "the controller speaks protocol {}, this executor {PROTOCOL_VERSION}: \
                     rebuild both with ci/build.sh (the guest image picks up the new executor)",
                    req.protocol
                ),
            );
        }
        let mut mark = Instant::now();
        let prog = match daxdiff_prog::parse(self.target, &req.program) {
            Ok(p) => p,
            Err(e) => return error(req.id, format!("program does not parse: {e}")),
        };
        if self.refs.is_none()
            && self.topology.is_some()
            && Path::new(crate::refcounts::DEBUGFS_PATH).exists()
        {
            // The baseline: the guest as bring-up (or the last program's teardown) left it.
            self.refs = crate::refcounts::read(self.topology.as_ref()).ok();
        }
        self.steps.lap(Step::Parse, &mut mark);
        self.seq += 1;
        let dirs = ProgDirs::new(&self.env, self.seq);
        let mut notes = match cleanup::prepare(&self.env, &dirs) {
            Ok(n) => n,
            Err(e) => return error(req.id, format!("setting up the program's directories: {e}")),
        };
        self.steps.lap(Step::Prepare, &mut mark);
        let run = supervise::run_child(
            self.target,
            &prog,
            &self.env,
            &dirs,
            Duration::from_millis(req.timeout_ms),
        );
        let mut resp = match run {
            Ok(r) => {
                let exit = r.exit_duration;
                self.steps
                    .add(Step::Program, mark.elapsed().saturating_sub(exit));
                self.steps.add(Step::Exit, exit);
                mark = Instant::now();
                self.after_program(req, &prog, &dirs, r, &mut notes, &mut mark)
            }
            Err(e) => {
                notes.extend(cleanup::after(&mut self.env, &dirs, &prog, false));
                self.steps.lap(Step::Repair, &mut mark);
                error(req.id, format!("could not start the program: {e}"))
            }
        };
        supervise::reap_orphans();
        self.steps.lap(Step::Reap, &mut mark);
        if !notes.is_empty() {
            let n = notes.join("; ");
            resp.detail = Some(match resp.detail.take() {
                Some(d) => format!("{d}; {n}"),
                None => n,
            });
        }
        resp
    }
}

impl Executor {
    /// Everything after the program's child: teardown, repairs, the integrity check after
    /// the teardown, the device-dax reset, the program's files, the reference counts.
    fn after_program(
        &mut self,
        req: &Request,
        prog: &daxdiff_prog::Program,
        dirs: &ProgDirs,
        r: supervise::ChildRun,
        notes: &mut Vec<String>,
        mark: &mut Instant,
    ) -> Response {
        let mut steps = vec![TeardownStep {
            step: "exit".into(),
            result: if r.unkillable {
                StepResult::Blocked {
                    stack: r.stack.clone().unwrap_or_default(),
                }
            } else {
                StepResult::Ok
            },
            duration_ms: r.exit_duration.as_millis() as u64,
        }];
        if req.teardown && !r.unkillable {
            steps.extend(teardown::run(
                &self.env,
                Duration::from_millis(req.teardown_timeout_ms),
            ));
        }
        self.steps.lap(Step::Teardown, mark);
        let blocked = steps
            .iter()
            .any(|s| matches!(s.result, StepResult::Blocked { .. }));
        let not_ok = |prefix: &[&str]| {
            steps
                .iter()
                .any(|s| prefix.iter().any(|p| s.step.starts_with(p)) && s.result != StepResult::Ok)
        };
        let suspect = cleanup::Suspect {
            mounts: not_ok(&["umount", "mount"]),
            devdax: not_ok(&["disable", "enable"]),
        };
        // A blocked task holds locks the repairs, reads and the reset would wait behind.
        let wedged = r.unkillable || blocked;
        notes.extend(cleanup::repair(&mut self.env, prog, wedged, suspect));
        self.steps.lap(Step::Repair, mark);
        let integrity = if wedged {
            Vec::new()
        } else {
            r.mappings
                .iter()
                .map(|m| integrity::after_teardown(&self.env, m))
                .collect()
        };
        self.steps.lap(Step::Integrity, mark);
        notes.extend(cleanup::remove_dirs(dirs));
        self.steps.lap(Step::RemoveDirs, mark);
        if !wedged {
            if let Err(e) = integrity::zero_devdax(&self.env, &r.devdax_written) {
                notes.push(format!("device-dax reset: {e}"));
            }
        }
        self.steps.lap(Step::ZeroDevdax, mark);
        let refcounts = if wedged {
            self.refs = None;
            None
        } else {
            self.refcount_change(Duration::from_millis(req.settle_ms), notes)
        };
        self.steps.lap(Step::Refcounts, mark);
        Response {
            id: req.id,
            status: r.status,
            calls: r.calls,
            stack: r.stack,
            detail: r.detail,
            protocol: PROTOCOL_VERSION,
            teardown: steps,
            refcounts,
            integrity,
            coverage: kcov::available().then(|| r.coverage.unwrap_or_default()),
        }
    }
}

/// Reads requests from `input` until it ends, writing one response line per request.
pub fn serve(
    exec: &mut Executor,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => exec.handle(&req),
            Err(e) => error(0, format!("request is not a JSON Request: {e}")),
        };
        serde_json::to_writer(&mut output, &resp)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) use crate::FORK_LOCK;

#[cfg(test)]
mod tests;
