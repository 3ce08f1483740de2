//! One program's observable behaviour on one kernel, normalized so that two runs of the same
//! program compare equal unless the kernel really behaved differently.

use serde::{Deserialize, Serialize};

use daxdiff_observe::Signature;
use daxdiff_prog::wire::{IntegrityCheck, RefDelta, Response, Status, StepResult};
use daxdiff_prog::{ResourceKind, Target};

/// What a call returned, with run-specific values replaced by what they stand for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// A plain return value (fd numbers, byte counts, wait statuses, 0).
    Value(i64),
    /// A mapping address (`mmap`, `mremap`): only "it succeeded" is comparable.
    Address,
    /// A pid (`getpid`).
    Pid,
    /// A file descriptor (`openat`, `io_uring_setup`): its number depends on which thread
    /// opened first, so only "it succeeded" is comparable.
    Fd,
    /// The call failed with this errno (symbolic when known, else `errno 123`).
    Errno(String),
}

impl std::fmt::Display for Ret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ret::Value(v) => write!(f, "{v}"),
            Ret::Address => f.write_str("addr"),
            Ret::Pid => f.write_str("pid"),
            Ret::Fd => f.write_str("fd"),
            Ret::Errno(e) => f.write_str(e),
        }
    }
}

/// One call's normalized result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallOutcome {
    pub index: usize,
    pub name: String,
    pub ret: Ret,
    pub checksum: Option<u64>,
}

/// A kernel report seen on the console while the program ran.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelReport {
    pub title: String,
    pub signature: Signature,
}

/// Everything comparable about one run of one program on one kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// Sorted by call index (the executor reports completion order, which threads shuffle).
    pub calls: Vec<CallOutcome>,
    /// Sorted and deduplicated by signature.
    pub reports: Vec<KernelReport>,
    /// Function names of the hung task's stack for `Status::Timeout`, innermost first.
    pub hung_stack: Vec<String>,
    /// Why the program did not complete (signal, setup error), numbers and addresses removed.
    pub detail: Option<String>,
    /// Teardown steps after the program, in order, without their durations.
    #[serde(default)]
    pub teardown: Vec<StepOutcome>,
    /// What stayed changed in the reference counts per namespace role after the teardown
    /// (empty: all back); `None` when the guest has no probe.
    #[serde(default)]
    pub refcounts: Option<Vec<RefDelta>>,
    /// Data written through shared mappings against the file or device.
    #[serde(default)]
    pub integrity: Vec<IntegrityCheck>,
}

/// One teardown step's result: `ok`, `failed: umount: EBUSY`, `blocked in <function>`,
/// `skipped`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepOutcome {
    pub step: String,
    pub result: String,
    /// Function names of the blocked task's stack, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
}

impl StepOutcome {
    pub fn blocked(&self) -> bool {
        self.result.starts_with("blocked")
    }
}

/// Stack frames that say where a task waits, not why: skipped when naming the blocked function.
const SCHEDULER_FRAMES: &[&str] = &[
    "__schedule",
    "schedule",
    "schedule_timeout",
    "io_schedule",
    "__switch_to",
    "__switch_to_asm",
    "schedule_preempt_disabled",
];

fn step_outcome(s: &daxdiff_prog::wire::TeardownStep) -> StepOutcome {
    let (result, stack) = match &s.result {
        StepResult::Ok => ("ok".to_string(), Vec::new()),
        StepResult::Skipped => ("skipped".to_string(), Vec::new()),
        StepResult::Failed { detail } => (format!("failed: {}", scrub(detail)), Vec::new()),
        StepResult::Blocked { stack } => {
            let f = stack_functions(stack);
            let at = f
                .iter()
                .find(|x| !SCHEDULER_FRAMES.contains(&x.as_str()))
                .cloned();
            let result = match at {
                Some(at) => format!("blocked in {at}"),
                None => "blocked".to_string(),
            };
            (result, f)
        }
    };
    StepOutcome {
        step: s.step.clone(),
        result,
        stack,
    }
}

/// Calls whose return value is an address or a pid, which differ from run to run.
const ADDRESS_CALLS: &[&str] = &["mmap", "mremap"];
const PID_CALLS: &[&str] = &["getpid", "gettid"];

/// Builds the outcome of one run from the executor's response and the console lines printed
/// while it ran. Addresses, pids, durations and completion order are dropped here.
pub fn normalize(resp: &Response, console: &[String]) -> Outcome {
    let mut calls: Vec<CallOutcome> = resp
        .calls
        .iter()
        .map(|c| {
            let base = c.name.split('$').next().unwrap_or(&c.name);
            let ret = match (&c.errno, &c.errno_name) {
                (_, Some(name)) => Ret::Errno(name.clone()),
                (Some(e), None) => Ret::Errno(format!("errno {e}")),
                (None, None) => match returns(&c.name) {
                    Some(ResourceKind::Fd | ResourceKind::Ring) => Ret::Fd,
                    Some(ResourceKind::Map) => Ret::Address,
                    Some(ResourceKind::Pid) => Ret::Pid,
                    _ if ADDRESS_CALLS.contains(&base) => Ret::Address,
                    _ if PID_CALLS.contains(&base) => Ret::Pid,
                    _ => Ret::Value(c.ret),
                },
            };
            CallOutcome {
                index: c.index,
                name: c.name.clone(),
                ret,
                checksum: c.checksum,
            }
        })
        .collect();
    calls.sort_by_key(|c| c.index);
    let mut reports: Vec<KernelReport> = daxdiff_observe::parse(&console.join("\n"))
        .into_iter()
        .map(|r| KernelReport {
            title: r.title,
            signature: r.signature,
        })
        .collect();
    reports.sort();
    reports.dedup_by(|a, b| a.signature == b.signature);
    let hung_stack = resp
        .stack
        .as_deref()
        .map(stack_functions)
        .unwrap_or_default();
    let detail = match resp.status {
        Status::Completed => None,
        _ => resp.detail.as_deref().map(scrub),
    };
    Outcome {
        status: resp.status,
        calls,
        reports,
        hung_stack,
        detail,
        teardown: resp.teardown.iter().map(step_outcome).collect(),
        refcounts: resp.refcounts.clone(),
        integrity: resp.integrity.clone(),
    }
}

impl Outcome {
    /// Oracle findings that stand on one kernel alone, whatever the other did: a reference
    /// count that stayed changed after teardown, a teardown step that blocked, data that
    /// does not match. Titles like kernel report titles (`refcount leak on devdax: …`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.refcounts.iter().flatten() {
            let what = if d.underflow || d.negative > 0 || d.pgmap_ref < 0 {
                "underflow"
            } else {
                "leak"
            };
            out.push(format!("refcount {what} on {}: {}", d.role, d.summary()));
        }
        for s in self.teardown.iter().filter(|s| s.blocked()) {
            out.push(format!("teardown: {} {}", s.step, s.result));
        }
        for c in &self.integrity {
            for (when, check) in [
                ("at the end", &c.at_end),
                ("after teardown", &c.after_teardown),
            ] {
                if let Some(daxdiff_prog::wire::DataCheck::Differs { .. }) = check {
                    out.push(format!(
                        "data integrity: {} mapping differs from the {} {when}",
                        c.target,
                        if c.target == "devdax" {
                            "device"
                        } else {
                            "file"
                        }
                    ));
                }
            }
        }
        out.dedup();
        out
    }

    /// A teardown step blocked: the guest holds a stuck task.
    pub fn teardown_blocked(&self) -> bool {
        self.teardown.iter().any(StepOutcome::blocked)
    }

    /// Whether this run shows the crash finding titled `title` ([`CrashTitle`]).
    pub fn shows_crash(&self, title: &str) -> bool {
        match CrashTitle::of(title) {
            CrashTitle::Report(t) => self.reports.iter().any(|r| r.title == t),
            CrashTitle::Problem(kind) => self.problems().iter().any(|p| p.starts_with(kind)),
        }
    }
}

/// What a crash finding's title stands for, and how a run is matched against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashTitle<'a> {
    /// A kernel report, matched by its whole title.
    Report(&'a str),
    /// One of the oracle's [`Outcome::problems`], matched by the part that names the
    /// behaviour. A refcount problem's title ends in the counts that moved
    /// (`refcount underflow on devdax: pgmap_ref -512, ref0 +1, ref1 -1`), which vary with
    /// what the pages did before: the kind and the device (`refcount underflow on devdax`)
    /// are the behaviour. A teardown or data problem is matched by its whole title.
    Problem(&'a str),
}

impl<'a> CrashTitle<'a> {
    pub fn of(title: &'a str) -> CrashTitle<'a> {
        if title.starts_with("refcount ") {
            CrashTitle::Problem(title.split(':').next().unwrap_or(title))
        } else if title.starts_with("teardown: ") || title.starts_with("data integrity: ") {
            CrashTitle::Problem(title)
        } else {
            CrashTitle::Report(title)
        }
    }

    /// Only daxdiff's own checks after the program see it (the reference-count probe, the
    /// teardown steps, the data check), not the kernel log: a program run on its own, like
    /// the C reproducer, cannot show it.
    pub fn needs_daxdiff_checks(&self) -> bool {
        matches!(self, CrashTitle::Problem(_))
    }
}

/// The kind of resource a call returns, from the descriptions.
fn returns(name: &str) -> Option<ResourceKind> {
    Target::builtin().call(name).and_then(|d| d.ret_kind)
}

/// `[<0>] dax_break_layout_final+0x4d/0x90` → `dax_break_layout_final`. Lines that are not
/// frames (the executor's `== /proc/PID/stack ==` headers) are skipped.
fn stack_functions(stack: &str) -> Vec<String> {
    stack
        .lines()
        .filter(|l| l.contains("+0x"))
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(_, r)| r.trim())
                .unwrap_or(l);
            let f = l.split(['+', ' ']).next()?.trim();
            (!f.is_empty()).then(|| f.to_string())
        })
        .collect()
}

/// Removes hex values and long numbers (pids, addresses, times) from a free-text detail; small
/// numbers (signal numbers, exit statuses) stay because they carry meaning.
fn scrub(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let is_hex = core.len() > 2 && core.starts_with("0x");
            let is_long = core.len() >= 4 && core.chars().all(|c| c.is_ascii_digit());
            if is_hex || is_long {
                w.replace(core, "N")
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as `daxdiff run --json` printed it on debian-6.12 (trimmed), threads and
    /// completion order included.
    pub(crate) const RESPONSE_612: &str = r#"{"calls":[
        {"checksum":null,"duration_us":877,"errno":null,"errno_name":null,"index":0,"name":"openat$ext4","ret":3,"thread":0},
        {"checksum":13346994205906133797,"duration_us":19056,"errno":null,"errno_name":null,"index":2,"name":"mmap","ret":140132950736896,"thread":0},
        {"checksum":null,"duration_us":24,"errno":null,"errno_name":null,"index":3,"name":"getpid","ret":266,"thread":0},
        {"checksum":null,"duration_us":6209,"errno":null,"errno_name":null,"index":5,"name":"fallocate","ret":0,"thread":0},
        {"checksum":null,"duration_us":1048,"errno":14,"errno_name":"EFAULT","index":4,"name":"process_vm_readv","ret":-1,"thread":1},
        {"checksum":null,"duration_us":994,"errno":null,"errno_name":null,"index":1,"name":"ftruncate","ret":0,"thread":0}],
        "detail":null,"id":1,"stack":null,"status":"completed"}"#;

    fn resp(json: &str) -> Response {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn addresses_pids_durations_and_order_are_normalized_away() {
        let a = resp(RESPONSE_612);
        let b = resp(
            &RESPONSE_612
                .replace("140132950736896", "140737488347136")
                .replace("\"ret\":266", "\"ret\":301")
                .replace("\"duration_us\":877", "\"duration_us\":5"),
        );
        let oa = normalize(&a, &[]);
        assert_eq!(oa, normalize(&b, &[]));
        assert_eq!(
            oa.calls.iter().map(|c| c.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(oa.calls[2].ret, Ret::Address);
        assert_eq!(oa.calls[3].ret, Ret::Pid);
        assert_eq!(oa.calls[4].ret, Ret::Errno("EFAULT".into()));
        assert_eq!(oa.calls[0].ret, Ret::Fd);
        assert_eq!(oa.calls[1].ret, Ret::Value(0));
    }

    #[test]
    fn checksums_and_errnos_are_kept() {
        let a = normalize(&resp(RESPONSE_612), &[]);
        let b = normalize(
            &resp(&RESPONSE_612.replace("13346994205906133797", "1")),
            &[],
        );
        assert_ne!(a, b);
        let c = normalize(
            &resp(&RESPONSE_612.replace(
                "\"errno\":14,\"errno_name\":\"EFAULT\"",
                "\"errno\":95,\"errno_name\":\"EOPNOTSUPP\"",
            )),
            &[],
        );
        assert_ne!(a, c);
    }

    #[test]
    fn hung_stack_keeps_function_names_only() {
        let json = r#"{"id":4,"status":"timeout","calls":[],"detail":"program did not finish in 10000 ms (pid 4242)",
            "stack":"== /proc/223/stack ==\n[<0>] dax_break_layout_final+0x4d/0x90\n[<0>] ext4_evict_inode+0x1a/0x5c0 [ext4]\n"}"#;
        let o = normalize(&resp(json), &[]);
        assert_eq!(
            o.hung_stack,
            vec!["dax_break_layout_final", "ext4_evict_inode"]
        );
        assert_eq!(
            o.detail.as_deref(),
            Some("program did not finish in N ms (pid N)")
        );
    }

    #[test]
    fn teardown_refcounts_and_integrity_become_comparable_fields_and_problems() {
        let json = r#"{"id":4,"status":"completed","calls":[],"detail":null,"stack":null,"protocol":2,
            "teardown":[{"step":"exit","result":"ok","duration_ms":3},
                {"step":"umount xfs","result":"blocked","duration_ms":20000,
                 "stack":"== pid 301 tid 301 (daxdiff-exec) state D wchan x\n[<0>] __schedule+0x1/0x2\n[<0>] schedule+0x1/0x2\n[<0>] dax_break_layout_final+0x4d/0x90\n[<0>] xfs_fs_evict_inode+0x1/0x2 [xfs]\n"},
                {"step":"mount xfs","result":"skipped","duration_ms":0},
                {"step":"disable devdax","result":"failed","detail":"daxctl disable-device: exit status 1: dax2.0 busy (pid 4242)","duration_ms":80}],
            "refcounts":[{"role":"devdax","pgmap_ref":1,"ref0":0,"ref1":-1,"ref2":1,"ref3_plus":0,"negative":0,"note":null,"underflow":false}],
            "integrity":[{"call":1,"target":"ext4","bytes":4096,"at_end":{"result":"same"},"after_teardown":{"result":"differs","first_offset":null}}],
            "coverage":[1,2,3]}"#;
        let o = normalize(&resp(json), &[]);
        let steps: Vec<(&str, &str)> = o
            .teardown
            .iter()
            .map(|s| (s.step.as_str(), s.result.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("exit", "ok"),
                ("umount xfs", "blocked in dax_break_layout_final"),
                ("mount xfs", "skipped"),
                (
                    "disable devdax",
                    "failed: daxctl disable-device: exit status 1: dax2.0 busy (pid N)"
                )
            ]
        );
        assert!(o.teardown_blocked());
        assert_eq!(
            o.problems(),
            [
                "refcount leak on devdax: pgmap_ref +1, ref1 -1, ref2 +1",
                "teardown: umount xfs blocked in dax_break_layout_final",
                "data integrity: ext4 mapping differs from the file after teardown",
            ]
        );
        // A crash finding is matched by its behaviour, not by the counts of one run.
        assert!(o.shows_crash("refcount leak on devdax: pgmap_ref +512, ref1 -1, ref2 +1"));
        assert!(!o.shows_crash("refcount underflow on devdax: pgmap_ref -512"));
        assert!(!o.shows_crash("refcount leak on ext4: pgmap_ref +1"));
        assert!(o.shows_crash("teardown: umount xfs blocked in dax_break_layout_final"));
        assert!(!o.shows_crash("teardown: umount ext4 blocked in dax_break_layout_final"));
        assert!(o.shows_crash("data integrity: ext4 mapping differs from the file after teardown"));
        assert!(!o.shows_crash("data integrity: ext4 mapping differs from the file at the end"));
        assert!(
            !o.shows_crash("WARNING in dax_insert_entry"),
            "no such kernel report"
        );
        // Durations and coverage are not part of the outcome.
        let again = normalize(
            &resp(
                &json
                    .replace("\"duration_ms\":3", "\"duration_ms\":9")
                    .replace("[1,2,3]", "[4]"),
            ),
            &[],
        );
        assert_eq!(o, again);
        // An old executor's response (no new fields) still normalizes.
        let old = normalize(&resp(RESPONSE_612), &[]);
        assert_eq!((old.refcounts, old.teardown.len()), (None, 0));
    }

    #[test]
    fn console_reports_become_titles_and_signatures() {
        let console: Vec<String> = [
            "[    2.031496] WARNING: CPU: 0 PID: 1 at fs/dax.c:460 dax_insert_entry+0x36e/0x380",
            "[    2.038216] Call Trace:",
            "[    2.038486]  dax_fault_iter+0x286/0x6a0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = normalize(&resp(RESPONSE_612), &console);
        assert_eq!(o.reports.len(), 1);
        assert_eq!(o.reports[0].title, "WARNING in dax_insert_entry");
    }
}
