//! The kinds of kernel report, the header line that opens each, and the vocabulary of lines
//! that belong inside a report (so that ordinary console lines end it).

use crate::frames::{Frame, SourceLocation};
use crate::normalize::printable;
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::LazyLock;

/// What the kernel reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    /// `BUG: KASAN: <bug type> in <function>`.
    Kasan,
    /// `WARNING: CPU: … at <file>:<line> <function>`.
    Warning,
    /// `kernel BUG at <file>:<line>!`.
    Bug,
    /// `BUG: Bad page state in process …` (and `Bad page map`).
    BadPageState,
    /// `percpu ref (<release>) <= 0 (<count>) after switching to atomic`.
    PercpuRef,
    /// `refcount_t: underflow; use-after-free.` and the other refcount_t saturations.
    Refcount,
    /// `INFO: task <name>:<pid> blocked for more than <n> seconds.`
    HungTask,
    /// `rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:` and self-detected stalls.
    RcuStall,
    /// Lockdep: circular or recursive locking, inconsistent lock state.
    Lockdep,
    /// `general protection fault…`.
    GeneralProtectionFault,
    /// `BUG: unable to handle page fault for address` / `kernel paging request`.
    PageFault,
    /// `BUG: kernel NULL pointer dereference`.
    NullPointerDereference,
    /// An `Oops:` with no more specific header around it.
    Oops,
    /// `Kernel panic - not syncing: <reason>` on its own.
    Panic,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Kasan => "kasan",
            ReportKind::Warning => "warning",
            ReportKind::Bug => "bug",
            ReportKind::BadPageState => "bad-page-state",
            ReportKind::PercpuRef => "percpu-ref",
            ReportKind::Refcount => "refcount",
            ReportKind::HungTask => "hung-task",
            ReportKind::RcuStall => "rcu-stall",
            ReportKind::Lockdep => "lockdep",
            ReportKind::GeneralProtectionFault => "general-protection-fault",
            ReportKind::PageFault => "page-fault",
            ReportKind::NullPointerDereference => "null-pointer-dereference",
            ReportKind::Oops => "oops",
            ReportKind::Panic => "panic",
        }
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a header line says, before the rest of the report is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: ReportKind,
    /// The function the header names, if it names one.
    pub frame: Option<Frame>,
    pub location: Option<SourceLocation>,
    /// Kind-specific words for the title: the KASAN bug type, the percpu_ref release
    /// function, the lockdep finding, the bad page variant, the panic reason.
    pub detail: Option<String>,
}

impl Header {
    fn new(kind: ReportKind) -> Header {
        Header {
            kind,
            frame: None,
            location: None,
            detail: None,
        }
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("report header pattern")
}

static KASAN: LazyLock<Regex> =
    LazyLock::new(|| re(r"BUG: KASAN: (?P<type>[a-z-]+(?: or [a-z-]+)?) (?:in|on) (?P<rest>.+)$"));
static LOCKDEP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"WARNING: (?P<what>possible circular locking dependency|possible recursive locking|inconsistent lock state|possible irq lock inversion dependency)",
    )
});
static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    re(r"WARNING: CPU: \d+ PID: \d+ at (?P<file>[^\s:]+):(?P<line>\d+)(?:\s+(?P<rest>.*))?$")
});
/// The layout of newer kernels: `WARNING: fs/dax.c:1756 at dax_iomap_rw+0xe34/0xed0, CPU#0: …`.
static WARNING_AT_FIRST: LazyLock<Regex> =
    LazyLock::new(|| re(r"WARNING: (?P<file>[^\s:]+):(?P<line>\d+) at (?P<rest>[^,]+), CPU#\d+"));
static WARNING_OLD: LazyLock<Regex> = LazyLock::new(|| {
    re(r"WARNING: at (?P<file>[^\s:]+):(?P<line>\d+) (?P<func>[A-Za-z_][\w.]*)\(\)")
});
static KERNEL_BUG: LazyLock<Regex> =
    LazyLock::new(|| re(r"kernel BUG at (?P<file>[^\s:!]+):(?P<line>\d+)!?"));
static BAD_PAGE: LazyLock<Regex> =
    LazyLock::new(|| re(r"BUG: Bad page (?P<what>state|map) in process"));
static PERCPU_REF: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"percpu ref \((?P<release>[^\s)]+)(?: \[[\w-]+\])?\) <= -?\d+ \(-?\d+\) after switching to atomic",
    )
});
static REFCOUNT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"refcount_t: (?P<what>underflow; use-after-free|saturated; leaking memory|addition on 0; use-after-free|decrement hit 0; leaking memory|unknown saturation event)",
    )
});
static HUNG_TASK: LazyLock<Regex> =
    LazyLock::new(|| re(r"INFO: task .+:\d+ blocked for more than \d+ seconds"));
static RCU_STALL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"INFO: rcu_\w+ (?:detected (?:expedited )?stalls? on CPUs/tasks|self-detected stall on CPU)",
    )
});
static GPF: LazyLock<Regex> = LazyLock::new(|| re(r"general protection fault(?:,|:)"));
static NULL_DEREF: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"BUG: (?:kernel NULL pointer dereference, address|unable to handle kernel NULL pointer dereference|Kernel NULL pointer dereference)|Unable to handle kernel NULL pointer dereference",
    )
});
static PAGE_FAULT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"BUG: unable to handle (?:page fault for address|kernel paging request)|Unable to handle kernel paging request at virtual address",
    )
});
static OOPS: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\s*(?:Oops: |Oops\[#|Internal error: Oops|invalid opcode: [0-9a-f]+ \[#)")
});
static PANIC: LazyLock<Regex> =
    LazyLock::new(|| re(r"Kernel panic - not syncing: ?(?P<reason>.*?)\s*(?:\]---)?\s*$"));
static END_MARKER: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*---\[ end "));

/// Recognizes the line that opens a report. Lines closing one (`---[ end …`) open nothing.
/// Text taken from the line (a panic reason, a file name) has its control characters
/// escaped: it ends up in titles, signatures and terminals.
pub(crate) fn detect(line: &str) -> Option<Header> {
    let mut header = detect_raw(line)?;
    if let Some(d) = &mut header.detail {
        *d = printable(d).into_owned();
    }
    if let Some(at) = &mut header.location {
        at.file = printable(&at.file).into_owned();
    }
    Some(header)
}

fn detect_raw(line: &str) -> Option<Header> {
    if is_end_marker(line) {
        return None;
    }
    if let Some(c) = KASAN.captures(line) {
        return Some(Header {
            frame: Frame::parse_in_trace(&c["rest"]),
            detail: Some(c["type"].to_string()),
            ..Header::new(ReportKind::Kasan)
        });
    }
    if let Some(c) = LOCKDEP.captures(line) {
        let finding = match &c["what"] {
            "inconsistent lock state" => "inconsistent lock state",
            _ => "possible deadlock",
        };
        return Some(Header {
            detail: Some(finding.to_string()),
            ..Header::new(ReportKind::Lockdep)
        });
    }
    if let Some(c) = PERCPU_REF.captures(line) {
        return Some(Header {
            detail: Some(c["release"].to_string()),
            ..Header::new(ReportKind::PercpuRef)
        });
    }
    if let Some(c) = REFCOUNT.captures(line) {
        return Some(Header {
            detail: Some(c["what"].to_string()),
            ..Header::new(ReportKind::Refcount)
        });
    }
    if let Some(c) = WARNING
        .captures(line)
        .or_else(|| WARNING_AT_FIRST.captures(line))
    {
        return Some(Header {
            frame: c
                .name("rest")
                .and_then(|r| Frame::parse_in_trace(r.as_str())),
            location: location(&c["file"], &c["line"]),
            ..Header::new(ReportKind::Warning)
        });
    }
    if let Some(c) = WARNING_OLD.captures(line) {
        return Some(Header {
            frame: Frame::parse_in_trace(&c["func"]),
            location: location(&c["file"], &c["line"]),
            ..Header::new(ReportKind::Warning)
        });
    }
    if let Some(c) = KERNEL_BUG.captures(line) {
        return Some(Header {
            location: location(&c["file"], &c["line"]),
            ..Header::new(ReportKind::Bug)
        });
    }
    if let Some(c) = BAD_PAGE.captures(line) {
        return Some(Header {
            detail: Some(c["what"].to_string()),
            ..Header::new(ReportKind::BadPageState)
        });
    }
    if HUNG_TASK.is_match(line) {
        return Some(Header::new(ReportKind::HungTask));
    }
    if RCU_STALL.is_match(line) {
        return Some(Header::new(ReportKind::RcuStall));
    }
    if GPF.is_match(line) {
        return Some(Header::new(ReportKind::GeneralProtectionFault));
    }
    if NULL_DEREF.is_match(line) {
        return Some(Header::new(ReportKind::NullPointerDereference));
    }
    if PAGE_FAULT.is_match(line) {
        return Some(Header::new(ReportKind::PageFault));
    }
    if let Some(c) = PANIC.captures(line) {
        return Some(Header {
            detail: Some(c["reason"].to_string()),
            ..Header::new(ReportKind::Panic)
        });
    }
    if OOPS.is_match(line) {
        return Some(Header::new(ReportKind::Oops));
    }
    None
}

fn location(file: &str, line: &str) -> Option<SourceLocation> {
    Some(SourceLocation {
        file: file.to_string(),
        line: line.parse().ok()?,
    })
}

/// `---[ end trace … ]---` and `---[ end Kernel panic … ]---`.
pub(crate) fn is_end_marker(line: &str) -> bool {
    END_MARKER.is_match(line)
}

/// The `=====` rule that closes a KASAN report (and opens KASAN and lockdep reports).
pub(crate) fn is_rule(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 20 && t.bytes().all(|b| b == b'=')
}

pub(crate) fn is_cut_here(line: &str) -> bool {
    line.contains("[ cut here ]")
}

/// Page dump lines the kernel prints just before a `VM_BUG_ON_PAGE` BUG.
pub(crate) fn is_page_dump(line: &str) -> bool {
    static DUMP: LazyLock<Regex> = LazyLock::new(|| {
        re(
            r"^\s*(?:page:|page dumped because:|flags:|raw:|head:|memcg:|page_type:|anon flags:|aops:|folio:)",
        )
    });
    DUMP.is_match(line)
}

/// Lines that belong inside a report: stack frames, register dumps, and the fixed phrases
/// of each report kind. Anything else, a few times in a row, ends the report.
pub(crate) fn is_report_body(line: &str) -> bool {
    static BODY: LazyLock<RegexSet> = LazyLock::new(|| {
        RegexSet::new([
            // Indented: frames, continuation lines, lockdep chains, code dumps.
            r"^\s",
            // No letters at all: rules, lock class tails ("){.+.+}-{0:0}:"), hex rows.
            r"^[^A-Za-z]*$",
            r"^[>\s]?[0-9a-f]{8,16}: ",
            r"^(?:CPU:|CPU \d|CPU\d|Hardware name|Call Trace|Call trace|Stack:|Workqueue:|Modules linked in|Tainted:|Not tainted|Code:|Code starting|Code disassembly|All code|Krnl |Last Breaking-Event-Address|Exception stack|Instruction dump)",
            r"^(?:RIP|EIP|IP|RSP|RBP|RAX|RBX|RCX|RDX|RSI|RDI|R\d+|FS|GS|CS|DS|CR\d|DR\d|PKRU|EAX|EBX|ECX|EDX|ESI|EDI|EBP|ESP|NIP|LR|CTR|REGS|MSR|CFAR|IRQMASK|GPR\d+|pc|lr|sp|x\d+|pstate|ESR|epc)(?::|\s)",
            r"^(?:<[/A-Z]+>|<\.\.\.>|\[\.\.\]|\.\.\.|---|===|\*\s*[0-9a-f]+:)",
            r"^(?:Kernel panic|Kernel Offset|Rebooting in|Disabling lock debugging|invalid opcode|Oops|Internal error|#PF:|PGD |\*pde|\*pdpt|Kernel attempted|Faulting instruction address|Unable to handle|Mem abort info|Data abort info)",
            r"^(?:BUG: |KASAN: |WARNING: |INFO: |NMI backtrace|Sending NMI|task:|.echo 0 > )",
            // RCU stall details, not the "rcu: Hierarchical RCU implementation." of a boot.
            r"^rcu: (?:\s+(?:Tasks blocked|\(detected by|\d+-|Unless)|rcu_\w+ kthread|RCU grace-period|Stack dump where)",
            r"^(?:page:|page dumped because|flags:|raw:|head:|memcg:|page_type:|page_owner|page last|anon flags|The buggy address|Memory state around|Allocated by task|Freed by task|Last potentially related|Second to last potentially|which belongs to|(?:Read|Write) of size|Free of addr)",
            r"^(?:\S+ is trying to acquire lock|but task is already holding lock|which lock already depends|the existing dependency chain|-> #\d|other info that might help|Chain exists of|Possible unsafe locking scenario|\*\*\* DEADLOCK|\d+ locks? held by|no locks held by|#\d+:|stack backtrace:|Showing all locks held|irq event stamp|hardirqs last|softirqs last|lock\(|rlock\()",
            r"^(?:Tasks blocked on|\(detected by|\d+-\.+:|Task dump for CPU|Unless rcu_|RCU grace-period|Stack dump where|percpu ref|refcount_t:)",
        ])
        .expect("report body patterns")
    });
    BODY.is_match(line) || Frame::parse_in_trace(line).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &str) -> Option<ReportKind> {
        detect(line).map(|h| h.kind)
    }

    #[test]
    fn headers_of_each_kind() {
        let cases = [
            ("BUG: KASAN: use-after-free in dax_iomap_rw+0x10/0x20", ReportKind::Kasan),
            ("WARNING: CPU: 0 PID: 1 at fs/dax.c:460 dax_insert_entry+0x36e/0x380", ReportKind::Warning),
            ("WARNING: fs/dax.c:1756 at dax_iomap_rw+0xe34/0xed0, CPU#0: syz.0.17/5507", ReportKind::Warning),
            ("kernel BUG at mm/memremap.c:123!", ReportKind::Bug),
            ("BUG: Bad page state in process ndctl  pfn:240000", ReportKind::BadPageState),
            ("percpu ref (dax_pmem_percpu_release [dax_pmem]) <= 0 (0) after switching to atomic", ReportKind::PercpuRef),
            ("refcount_t: underflow; use-after-free.", ReportKind::Refcount),
            ("INFO: task DataXceiver for:7494 blocked for more than 120 seconds.", ReportKind::HungTask),
            ("rcu: INFO: rcu_sched self-detected stall on CPU", ReportKind::RcuStall),
            ("WARNING: possible circular locking dependency detected", ReportKind::Lockdep),
            ("WARNING: possible recursive locking detected", ReportKind::Lockdep),
            ("general protection fault: 0000 [#1] SMP KASAN", ReportKind::GeneralProtectionFault),
            ("BUG: kernel NULL pointer dereference, address: 0000000000000000", ReportKind::NullPointerDereference),
            ("BUG: unable to handle page fault for address: ffffffffc14dd888", ReportKind::PageFault),
            ("Kernel panic - not syncing: Fatal exception", ReportKind::Panic),
            ("Oops: 0000 [#1] PREEMPT SMP NOPTI", ReportKind::Oops),
        ];
        for (line, expected) in cases {
            assert_eq!(kind(line), Some(expected), "{line}");
        }
    }

    #[test]
    fn look_alikes_open_nothing() {
        for line in [
            "RETBleed: WARNING: Spectre v2 mitigation leaves CPU vulnerable to RETBleed attacks, data leaks possible!",
            "KASAN: null-ptr-deref in range [0x0000000000000070-0x0000000000000077]",
            "---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---",
            "BUG: Bad page state: 3 messages suppressed",
            "Command line: console=ttyS0 hung_task_timeout_secs=30 panic_on_warn=0",
        ] {
            assert_eq!(kind(line), None, "{line}");
        }
    }

    #[test]
    fn header_details() {
        let h = detect("WARNING: CPU: 9 PID: 1309428 at fs/dax.c:380 dax_insert_entry+0x2ab/0x320")
            .unwrap();
        assert_eq!(h.location.unwrap().to_string(), "fs/dax.c:380");
        assert_eq!(h.frame.unwrap().function, "dax_insert_entry");
        let h = detect("WARNING: fs/dax.c:1756 at dax_iomap_rw+0xe34/0xed0, CPU#0: syz.0.17/5507")
            .unwrap();
        assert_eq!(h.location.unwrap().to_string(), "fs/dax.c:1756");
        assert_eq!(h.frame.unwrap().function, "dax_iomap_rw");
        let h = detect("percpu_ref_switch_to_atomic_rcu: percpu ref (css_release) <= 0 (-3) after switching to atomic").unwrap();
        assert_eq!(h.detail.as_deref(), Some("css_release"));
        let h = detect("Kernel panic - not syncing: panic_on_warn set ...").unwrap();
        assert_eq!(h.detail.as_deref(), Some("panic_on_warn set ..."));
        let h =
            detect("BUG: KASAN: slab-use-after-free in pipe_lock fs/pipe.c:92 [inline]").unwrap();
        assert_eq!(h.detail.as_deref(), Some("slab-use-after-free"));
        assert!(h.frame.unwrap().inline);
    }

    #[test]
    fn report_body_versus_ordinary_console_lines() {
        for line in [
            " dax_fault_iter+0x286/0x6a0",
            "RSP: 0018:ffffc9000a0cbb78 EFLAGS: 00010002",
            "){.+.+}-{0:0}:",
            ">ffff888021a72500: fb fb fb fb",
            "Modules linked in: nd_pmem dax_pmem",
            "-> #1 (&of->mutex){+.+.}-{3:3}:",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "rcu: \t(detected by 1, t=10502 jiffies, g=19581, q=865 ncpus=2)",
            "rcu: rcu_preempt kthread starved for 1596 jiffies! g19581 f0x0",
        ] {
            assert!(is_report_body(line), "{line}");
        }
        for line in [
            "EXT4-fs (pmem0): mounted filesystem r/w with ordered data mode.",
            "random: crng init done",
            "Loading compiled-in X.509 certificates",
            "rcu: Hierarchical RCU implementation.",
            "rcu: \tRCU restricting CPUs from NR_CPUS=8192 to nr_cpu_ids=2.",
            "daxdiff-executor[93]: ready",
        ] {
            assert!(!is_report_body(line), "{line}");
        }
    }

    #[test]
    fn control_characters_in_header_fields_are_escaped() {
        let h = detect("WARNING: CPU: 0 PID: 1 at fs/\x1bdax.c:460 dax_insert_entry+0x36e/0x380")
            .unwrap();
        assert_eq!(h.location.unwrap().file, "fs/\\u{1b}dax.c");
        let h = detect("percpu ref (css\x07release) <= 0 (-1) after switching to atomic").unwrap();
        assert_eq!(h.detail.as_deref(), Some("css\\u{7}release"));
    }
}
