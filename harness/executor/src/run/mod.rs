//! `daxdiff-exec run`: programs in, results out, one JSON line each way
//! (see `daxdiff_prog::wire`). Each program runs in a fresh child with a timeout; the
//! executor itself survives whatever a program does.

pub mod bench;
pub mod cleanup;
pub mod env;
pub mod interp;
pub mod memory;
mod pseudo;
pub mod stacks;
pub mod supervise;
pub mod uring;

use std::io::{BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use daxdiff_prog::wire::{Request, Response, Status};
use daxdiff_prog::Target;

use env::{ProgDirs, RunEnv};

/// Runs requests one after another against one environment.
pub struct Executor {
    pub env: RunEnv,
    target: &'static Target,
    seq: u64,
}

fn error(id: u64, detail: String) -> Response {
    Response {
        id,
        status: Status::Error,
        calls: Vec::new(),
        stack: None,
        detail: Some(detail),
    }
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
        let prog = match daxdiff_prog::parse(self.target, &req.program) {
            Ok(p) => p,
            Err(e) => return error(req.id, format!("program does not parse: {e}")),
        };
        self.seq += 1;
        let dirs = ProgDirs::new(&self.env, self.seq);
        let mut notes = match cleanup::prepare(&self.env, &dirs) {
            Ok(n) => n,
            Err(e) => return error(req.id, format!("setting up the program's directories: {e}")),
        };
        let run = supervise::run_child(
            self.target,
            &prog,
            &self.env,
            &dirs,
            Duration::from_millis(req.timeout_ms),
        );
        let mut resp = match run {
            Ok(r) => {
                notes.extend(cleanup::after(&mut self.env, &dirs, &prog, r.unkillable));
                Response {
                    id: req.id,
                    status: r.status,
                    calls: r.calls,
                    stack: r.stack,
                    detail: r.detail,
                }
            }
            Err(e) => {
                notes.extend(cleanup::after(&mut self.env, &dirs, &prog, false));
                error(req.id, format!("could not start the program: {e}"))
            }
        };
        supervise::reap_orphans();
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
mod tests;
