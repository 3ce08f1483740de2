//! The controller ↔ executor protocol: one JSON object per line each way.
//! The controller sends [`Request`]s; the executor answers each with one [`Response`].

use serde::{Deserialize, Serialize};

/// The protocol's version. Host and guest are built together; a mismatch means a guest image
/// carries an old executor, and both sides refuse to go on. Version 2 added teardown
/// liveness, reference-count deltas, data integrity and KCOV coverage.
pub const PROTOCOL_VERSION: u32 = 2;

/// Seconds after which the guest kernel reports a task blocked in D state while programs
/// (and C reproducers) run: below the teardown steps' deadline, so a blocked step comes with
/// the kernel's report.
pub const HUNG_TASK_TIMEOUT_SECS: u64 = 10;

/// Size of the edge map KCOV coverage is hashed into (entries of [`Response::coverage`] are
/// below it).
pub const COVERAGE_MAP_SIZE: usize = 1 << 16;

/// One program to run: `{"id": 7, "program": "<text form>", "timeout_ms": 5000, ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the controller; echoed in the response.
    pub id: u64,
    /// The program in its text form (see [`crate::encoding`]).
    pub program: String,
    /// Wall-clock limit for the whole program; past it the executor kills the child and
    /// answers [`Status::Timeout`].
    pub timeout_ms: u64,
    /// [`PROTOCOL_VERSION`] of the sender (0: a sender from before versions existed).
    #[serde(default)]
    pub protocol: u32,
    /// After the program: unmount and mount the DAX filesystems, disable and enable the
    /// device-dax device, each under `teardown_timeout_ms` (see [`TeardownStep`]).
    #[serde(default)]
    pub teardown: bool,
    #[serde(default = "default_teardown_timeout_ms")]
    pub teardown_timeout_ms: u64,
    /// How long reference counts may take to come back after the program before what is
    /// left is reported (references dropped by deferred work arrive a little late).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
}

fn default_teardown_timeout_ms() -> u64 {
    20_000
}

fn default_settle_ms() -> u64 {
    2_000
}

impl Request {
    /// A request of the current protocol with the default teardown and settle times.
    pub fn new(id: u64, program: String, timeout_ms: u64) -> Request {
        Request {
            id,
            program,
            timeout_ms,
            protocol: PROTOCOL_VERSION,
            teardown: false,
            teardown_timeout_ms: default_teardown_timeout_ms(),
            settle_ms: default_settle_ms(),
        }
    }

    /// The longest the executor may take to answer: the program, every teardown step, the
    /// reference-count settle time.
    pub fn budget_ms(&self) -> u64 {
        let steps = if self.teardown { TEARDOWN_STEPS_MAX } else { 0 };
        self.timeout_ms + steps * self.teardown_timeout_ms + self.settle_ms
    }
}

/// At most this many bounded steps in one teardown (unmount and mount of two filesystems,
/// disable and enable of the device); a blocked step ends the teardown.
pub const TEARDOWN_STEPS_MAX: u64 = 6;

/// How a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every call ran (each may have failed with an errno: that is a result, not an error).
    Completed,
    /// The program did not finish in time; `stack` holds the hung task's kernel stack.
    Timeout,
    /// The child running the program died (signal); `detail` says how.
    Crashed,
    /// The executor could not run the program (parse error, setup failure); `detail` says why.
    Error,
}

/// The result of one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// Position of the call in the program (0-based).
    pub index: usize,
    /// Full call name (`openat$ext4`).
    pub name: String,
    /// Thread that ran it (0 main, 1 second).
    pub thread: u8,
    /// Raw return value (-1 on failure for syscalls).
    pub ret: i64,
    /// errno when the call failed.
    pub errno: Option<i32>,
    /// Symbolic errno (`EOPNOTSUPP`), see [`errno_name`].
    pub errno_name: Option<String>,
    pub duration_us: u64,
    /// For calls that read data or create mappings: a checksum of the bytes seen.
    pub checksum: Option<u64>,
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub status: Status,
    /// Results of the calls that finished, in completion order.
    pub calls: Vec<CallResult>,
    /// `/proc/PID/stack` of the hung task for [`Status::Timeout`].
    pub stack: Option<String>,
    /// Human-readable explanation for non-completed programs.
    pub detail: Option<String>,
    /// [`PROTOCOL_VERSION`] of the executor that answered.
    #[serde(default)]
    pub protocol: u32,
    /// Teardown steps in the order they ran (empty when the request asked for none).
    #[serde(default)]
    pub teardown: Vec<TeardownStep>,
    /// What changed in the reference counts between before the program and after its
    /// teardown and cleanup, per namespace role; only ranges that changed. `None` when the
    /// probe is not loaded in the guest.
    #[serde(default)]
    pub refcounts: Option<Vec<RefDelta>>,
    /// Shared mappings of DAX files and the device-dax device the program wrote through
    /// (or that were mapped when it wrote with write()), compared with what the file or
    /// device holds.
    #[serde(default)]
    pub integrity: Vec<IntegrityCheck>,
    /// KCOV edges of the program's threads, deduplicated and sorted, each below
    /// [`COVERAGE_MAP_SIZE`]. `None` when the guest kernel has no KCOV.
    #[serde(default)]
    pub coverage: Option<Vec<u32>>,
}

/// How one teardown step ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepResult {
    Ok,
    /// The step finished and failed (`mount: EINVAL`).
    Failed {
        detail: String,
    },
    /// The step did not finish in time: the kernel stacks of the task(s) running it.
    Blocked {
        stack: String,
    },
    /// Not run: an earlier step blocked.
    Skipped,
}

/// One bounded step of the teardown after a program: `exit` (the program's processes end,
/// which closes and unmaps everything), `umount ext4`, `mount ext4`, `umount xfs`,
/// `mount xfs`, `disable devdax`, `enable devdax`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownStep {
    pub step: String,
    #[serde(flatten)]
    pub result: StepResult,
    pub duration_ms: u64,
}

/// Reference-count change of one namespace role's range after a program: after minus before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RefDelta {
    /// `ext4`, `xfs`, `devdax` (else the namespace name, else the range start) and the
    /// range's index within its pgmap when it has several (`devdax#1`).
    pub role: String,
    pub pgmap_ref: i64,
    pub ref0: i64,
    pub ref1: i64,
    pub ref2: i64,
    pub ref3_plus: i64,
    pub negative: i64,
    /// The pgmap appeared (`new pgmap`) or went away (`pgmap gone`).
    pub note: Option<String>,
    /// The reading after shows a page refcount below zero or a pgmap ref at or below zero.
    pub underflow: bool,
}

impl RefDelta {
    /// `pgmap_ref +1, ref1 -1, ref2 +1` (only what changed).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.note.iter().cloned().collect();
        for (name, v) in [
            ("pgmap_ref", self.pgmap_ref),
            ("ref0", self.ref0),
            ("ref1", self.ref1),
            ("ref2", self.ref2),
            ("ref3+", self.ref3_plus),
            ("neg", self.negative),
        ] {
            if v != 0 {
                parts.push(format!("{name} {v:+}"));
            }
        }
        if self.underflow {
            parts.push("UNDERFLOW".into());
        }
        parts.join(", ")
    }
}

fn range_label(r: &RangeRefcounts) -> String {
    let base = r
        .role
        .clone()
        .or_else(|| r.namespace.clone())
        .unwrap_or_else(|| format!("{:#x}", r.start));
    if r.index == 0 {
        base
    } else {
        format!("{base}#{}", r.index)
    }
}

fn underflowed(r: &RangeRefcounts) -> bool {
    r.histogram.negative > 0 || r.pgmap_ref <= 0
}

/// The ranges whose counts differ between two readings, matched by role (names and addresses
/// that change between boots are not part of the delta).
pub fn refcount_deltas(before: &RefcountReading, after: &RefcountReading) -> Vec<RefDelta> {
    let mut out = Vec::new();
    for b in &before.ranges {
        let label = range_label(b);
        match after.ranges.iter().find(|a| range_label(a) == label) {
            Some(a) => {
                let (hb, ha) = (&b.histogram, &a.histogram);
                let d = |x: u64, y: u64| y as i64 - x as i64;
                let delta = RefDelta {
                    role: label,
                    pgmap_ref: a.pgmap_ref - b.pgmap_ref,
                    ref0: d(hb.zero, ha.zero),
                    ref1: d(hb.one, ha.one),
                    ref2: d(hb.two, ha.two),
                    ref3_plus: d(hb.three_plus, ha.three_plus),
                    negative: d(hb.negative, ha.negative),
                    note: None,
                    underflow: underflowed(a) && !underflowed(b),
                };
                if delta
                    != (RefDelta {
                        role: delta.role.clone(),
                        ..RefDelta::default()
                    })
                {
                    out.push(delta);
                }
            }
            None => out.push(RefDelta {
                role: label,
                note: Some("pgmap gone".into()),
                ..RefDelta::default()
            }),
        }
    }
    for a in &after.ranges {
        let label = range_label(a);
        if !before.ranges.iter().any(|b| range_label(b) == label) {
            out.push(RefDelta {
                role: label,
                note: Some("new pgmap".into()),
                underflow: underflowed(a),
                ..RefDelta::default()
            });
        }
    }
    out.sort();
    out
}

/// What a check of data through a mapping found.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum DataCheck {
    /// The bytes agree.
    Same,
    /// They differ; the first differing byte's offset in the mapping, when known.
    Differs { first_offset: Option<u64> },
    /// One side could not be read (`mapping: EFAULT`, `pread: EINVAL`, `file gone`).
    Unreadable { what: String },
}

/// One shared mapping the program wrote through (or held while writing with write()),
/// checked when the program unmaps it or ends (mapping against pread of the same range
/// through the same file) and after the teardown (the mapping's bytes then against the file
/// or device read afresh).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntegrityCheck {
    /// Index of the call that made the mapping.
    pub call: usize,
    /// `ext4`, `xfs` or `devdax`.
    pub target: String,
    /// Bytes compared (from the mapped address; capped).
    pub bytes: u64,
    /// Mapping against pread at its munmap or the program's end (`None` for a readable
    /// devdax mapping: the device has no read()).
    pub at_end: Option<DataCheck>,
    /// Mapping contents at the end against the file or device after teardown and cleanup.
    pub after_teardown: Option<DataCheck>,
}

/// What `daxdiff-exec refcounts` prints: one reading of the reference-count probe
/// (`vm-images/probe`), an entry per range of every dev_pagemap in persistent memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefcountReading {
    /// The probe's output format version.
    pub version: u32,
    pub ranges: Vec<RangeRefcounts>,
}

/// Page refcounts of the head and order-0 pages of a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefHistogram {
    pub zero: u64,
    pub one: u64,
    pub two: u64,
    pub three_plus: u64,
    /// Below zero: an underflow.
    pub negative: u64,
}

/// One range of one dev_pagemap, as the probe saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRefcounts {
    /// Which pgmap of the reading; the ranges of one pgmap share `pgmap_ref`.
    pub pgmap: u32,
    pub index: u32,
    pub nr_range: u32,
    /// The pgmap's memory type: `fsdax`, `devdax` (MEMORY_DEVICE_GENERIC), ….
    pub kind: String,
    /// Physical range, inclusive.
    pub start: u64,
    pub end: u64,
    /// First pfn with a ZONE_DEVICE page (after the memmap kept on the device).
    pub first_pfn: u64,
    pub pages: u64,
    /// The pgmap's percpu_ref, read exactly, without the probe's own reference.
    pub pgmap_ref: i64,
    /// Tail pages of compound folios; their references are counted on the head.
    pub tails: u64,
    /// Head pages of compound folios.
    pub compound: u64,
    pub histogram: RefHistogram,
    /// Highest page refcount in the range.
    pub max: i64,
    /// The nd namespace holding the range (`namespace0.0`).
    pub namespace: Option<String>,
    /// What bring-up made of that namespace: `ext4`, `xfs` or `devdax`.
    pub role: Option<String>,
}

/// Symbolic name of an amd64 Linux errno, for the errnos these calls produce.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    ERRNOS.iter().find(|(n, _)| *n == errno).map(|(_, s)| *s)
}

/// The errno with this symbolic name.
pub fn errno_from_name(name: &str) -> Option<i32> {
    ERRNOS.iter().find(|(_, s)| *s == name).map(|(n, _)| *n)
}

const ERRNOS: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (5, "EIO"),
    (6, "ENXIO"),
    (7, "E2BIG"),
    (8, "ENOEXEC"),
    (9, "EBADF"),
    (10, "ECHILD"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (15, "ENOTBLK"),
    (16, "EBUSY"),
    (17, "EEXIST"),
    (18, "EXDEV"),
    (19, "ENODEV"),
    (20, "ENOTDIR"),
    (21, "EISDIR"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (25, "ENOTTY"),
    (26, "ETXTBSY"),
    (27, "EFBIG"),
    (28, "ENOSPC"),
    (29, "ESPIPE"),
    (30, "EROFS"),
    (31, "EMLINK"),
    (32, "EPIPE"),
    (33, "EDOM"),
    (34, "ERANGE"),
    (35, "EDEADLK"),
    (36, "ENAMETOOLONG"),
    (37, "ENOLCK"),
    (38, "ENOSYS"),
    (39, "ENOTEMPTY"),
    (40, "ELOOP"),
    (61, "ENODATA"),
    (62, "ETIME"),
    (75, "EOVERFLOW"),
    (95, "EOPNOTSUPP"),
    (110, "ETIMEDOUT"),
    (125, "ECANCELED"),
    (512, "ERESTARTSYS"),
    (524, "ENOTSUPP"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_one_json_object_with_the_documented_fields() {
        let line = r#"{"id":3,"program":"daxdiff_sleep(0x1)\n","timeout_ms":500,"protocol":2,"teardown":true,"teardown_timeout_ms":20000,"settle_ms":2000}"#;
        let req: Request = serde_json::from_str(line).unwrap();
        assert_eq!(req.id, 3);
        assert_eq!(req.program, "daxdiff_sleep(0x1)\n");
        assert_eq!(req.timeout_ms, 500);
        assert!(req.teardown);
        assert_eq!(serde_json::to_string(&req).unwrap(), line);
        // A sender from before protocol versions: version 0, no teardown, default times.
        let old: Request =
            serde_json::from_str(r#"{"id":3,"program":"","timeout_ms":500}"#).unwrap();
        assert_eq!(
            (old.protocol, old.teardown, old.settle_ms),
            (0, false, 2000)
        );
        let mut new = Request::new(3, String::new(), 500);
        assert_eq!(new.protocol, PROTOCOL_VERSION);
        assert_eq!(new.budget_ms(), 500 + 2000);
        new.teardown = true;
        assert_eq!(new.budget_ms(), 500 + 6 * 20_000 + 2000);
    }

    #[test]
    fn response_serializes_status_and_nulls_as_documented() {
        let resp = Response {
            id: 9,
            status: Status::Timeout,
            calls: vec![CallResult {
                index: 0,
                name: "io_uring_register$REGISTER_BUFFERS".into(),
                thread: 1,
                ret: -1,
                errno: Some(95),
                errno_name: errno_name(95).map(String::from),
                duration_us: 12,
                checksum: None,
            }],
            stack: Some("[<0>] dax_break_layout_final+0x4d/0x90\n".into()),
            detail: None,
            protocol: PROTOCOL_VERSION,
            teardown: vec![
                TeardownStep {
                    step: "umount xfs".into(),
                    result: StepResult::Blocked {
                        stack: "[<0>] dax_break_layout_final+0x4d/0x90\n".into(),
                    },
                    duration_ms: 20_000,
                },
                TeardownStep {
                    step: "mount xfs".into(),
                    result: StepResult::Skipped,
                    duration_ms: 0,
                },
            ],
            refcounts: Some(vec![]),
            integrity: vec![IntegrityCheck {
                call: 1,
                target: "xfs".into(),
                bytes: 4096,
                at_end: Some(DataCheck::Same),
                after_teardown: Some(DataCheck::Differs {
                    first_offset: Some(8),
                }),
            }],
            coverage: None,
        };
        let v: serde_json::Value = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["calls"][0]["errno_name"], "EOPNOTSUPP");
        assert_eq!(v["calls"][0]["thread"], 1);
        assert!(v["calls"][0]["checksum"].is_null());
        assert!(v["detail"].is_null());
        assert_eq!(v["teardown"][0]["result"], "blocked");
        assert_eq!(v["teardown"][1]["result"], "skipped");
        assert_eq!(v["integrity"][0]["after_teardown"]["first_offset"], 8);
        assert!(v["coverage"].is_null());
        let back: Response = serde_json::from_value(v).unwrap();
        assert_eq!(back, resp);
    }

    fn range(role: &str, pgmap_ref: i64, one: u64, two: u64, neg: u64) -> RangeRefcounts {
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
                negative: neg,
                ..RefHistogram::default()
            },
            max: 1,
            namespace: Some("namespace1.0".into()),
            role: Some(role.into()),
        }
    }

    #[test]
    fn refcount_deltas_name_the_role_and_what_stayed_changed() {
        let reading = |ranges| RefcountReading { version: 1, ranges };
        let base = reading(vec![
            range("devdax", 504, 503, 0, 0),
            range("ext4", 10, 9, 0, 0),
        ]);
        assert!(refcount_deltas(&base, &base.clone()).is_empty());
        // Another boot names the namespace differently and puts it elsewhere: same role, no delta.
        let mut moved = base.clone();
        moved.ranges[0].namespace = Some("namespace2.0".into());
        moved.ranges[0].start += 1 << 30;
        assert!(refcount_deltas(&base, &moved).is_empty());
        let leak = reading(vec![
            range("devdax", 505, 502, 1, 0),
            range("ext4", 10, 9, 0, 0),
        ]);
        let d = refcount_deltas(&base, &leak);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].role, "devdax");
        assert_eq!(d[0].summary(), "pgmap_ref +1, ref1 -1, ref2 +1");
        let under = reading(vec![
            range("devdax", 503, 502, 0, 1),
            range("ext4", 10, 9, 0, 0),
        ]);
        let d = refcount_deltas(&base, &under);
        assert!(d[0].underflow);
        assert_eq!(d[0].summary(), "pgmap_ref -1, ref1 -1, neg +1, UNDERFLOW");
        let gone = reading(vec![range("ext4", 10, 9, 0, 0)]);
        assert_eq!(refcount_deltas(&base, &gone)[0].summary(), "pgmap gone");
        assert_eq!(refcount_deltas(&gone, &base)[0].summary(), "new pgmap");
    }

    #[test]
    fn errno_names_match_linux_amd64() {
        assert_eq!(errno_name(95), Some("EOPNOTSUPP"));
        assert_eq!(errno_name(14), Some("EFAULT"));
        assert_eq!(errno_from_name("EBUSY"), Some(16));
        assert_eq!(errno_name(100_000), None);
    }
}
