//! The controller ↔ executor protocol: one JSON object per line each way.
//! The controller sends [`Request`]s; the executor answers each with one [`Response`].

use serde::{Deserialize, Serialize};

/// One program to run: `{"id": 7, "program": "<text form>", "timeout_ms": 5000}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the controller; echoed in the response.
    pub id: u64,
    /// The program in its text form (see [`crate::encoding`]).
    pub program: String,
    /// Wall-clock limit for the whole program; past it the executor kills the child and
    /// answers [`Status::Timeout`].
    pub timeout_ms: u64,
}

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
        let line = r#"{"id":3,"program":"daxdiff_sleep(0x1)\n","timeout_ms":500}"#;
        let req: Request = serde_json::from_str(line).unwrap();
        assert_eq!(req.id, 3);
        assert_eq!(req.program, "daxdiff_sleep(0x1)\n");
        assert_eq!(req.timeout_ms, 500);
        assert_eq!(serde_json::to_string(&req).unwrap(), line);
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
        };
        let v: serde_json::Value = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["calls"][0]["errno_name"], "EOPNOTSUPP");
        assert_eq!(v["calls"][0]["thread"], 1);
        assert!(v["calls"][0]["checksum"].is_null());
        assert!(v["detail"].is_null());
        let back: Response = serde_json::from_value(v).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn errno_names_match_linux_amd64() {
        assert_eq!(errno_name(95), Some("EOPNOTSUPP"));
        assert_eq!(errno_name(14), Some("EFAULT"));
        assert_eq!(errno_from_name("EBUSY"), Some(16));
        assert_eq!(errno_name(100_000), None);
    }
}
