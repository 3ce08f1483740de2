//! Console lines as the kernel printed them: host timestamps, kmsg record headers, printk
//! timestamps and caller ids removed, `/dev/kmsg` dictionary lines dropped, line numbers kept.
//!
//! Host clocks understood in front of a line: the VM controller's elapsed `[    1.234] `,
//! RFC 3339 (`2025-11-26T12:04:05.123456Z `, `T` or a space, bracketed or not), elapsed
//! `[+12.345s] `, and `12:04:05.123 `.

use regex::Regex;
use std::sync::LazyLock;

/// One line of a console log or kmsg dump, with its 1-based line number in the input and
/// its text with every known prefix removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLine<'a> {
    pub number: usize,
    pub text: &'a str,
}

/// Prefixes that wrap a kernel line, tried repeatedly because they stack: the controller's
/// host timestamp, then a kmsg record header or syslog prefix, then the printk timestamp,
/// then the caller id (`[  T123]` / `[   C1]`).
static PREFIXES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // Host-side wall clock: RFC 3339 / ISO 8601, bracketed or not, 'T' or ' ' separator.
        r"^\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?:?[ \t]*",
        // Host-side elapsed time: "[+12.345s]" or "[12.345s]".
        r"^\[\+?\d+(?:\.\d+)?s\][ \t]*",
        // Host-side clock without a date: "12:34:56.789 ".
        r"^\d{2}:\d{2}:\d{2}(?:\.\d+)?[ \t]+",
        // syslog / journalctl: "Oct 16 20:47:19 host kernel: ".
        r"^[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \S+ kernel: ",
        // /dev/kmsg record: "level,seq,usec,flags[,caller=T1];".
        r"^\d+,\d+,\d+,[^;]*;",
        // printk level as in `dmesg -r`: "<6>".
        r"^<\d+>",
        // printk timestamp, then one separating space (more would be the line's own indent).
        r"^\[\s*\d+\.\d+\] ?",
        // printk caller id (CONFIG_PRINTK_CALLER).
        r"^\[\s*[TC]\d+\] ?",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("console prefix pattern"))
    .collect()
});

/// A `/dev/kmsg` dictionary continuation (" SUBSYSTEM=pci", " DEVICE=+pci:0000:00:01.0").
static KMSG_DICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^ [A-Z][A-Z0-9_]*=\S").expect("kmsg dict pattern"));
static KMSG_RECORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d+,\d+,\d+,[^;]*;").expect("kmsg record pattern"));

/// Removes every known prefix from one console line; what is left starts where the kernel's
/// own text starts, keeping its indentation (stack frames are indented by the kernel).
pub fn strip_prefixes(line: &str) -> &str {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    // Each pass removes at most one prefix; eight passes cover the deepest real stacking.
    for _ in 0..8 {
        let before = rest.len();
        for prefix in PREFIXES.iter() {
            if let Some(m) = prefix.find(rest) {
                rest = &rest[m.end()..];
                break;
            }
        }
        if rest.len() == before {
            break;
        }
    }
    rest
}

/// Splits a console log or kmsg dump into lines with prefixes stripped, dropping the
/// dictionary lines that `/dev/kmsg` attaches to a record.
pub fn lines(console: &str) -> Vec<ConsoleLine<'_>> {
    let mut out = Vec::new();
    let mut after_kmsg_record = false;
    for (index, raw) in console.lines().enumerate() {
        if after_kmsg_record && KMSG_DICT.is_match(raw) {
            continue;
        }
        after_kmsg_record = KMSG_RECORD.is_match(strip_host_clock(raw));
        out.push(ConsoleLine {
            number: index + 1,
            text: strip_prefixes(raw),
        });
    }
    out
}

/// Only the host clock, so that a kmsg record written through the controller is still seen
/// as one.
fn strip_host_clock(line: &str) -> &str {
    PREFIXES[..3]
        .iter()
        .find_map(|p| p.find(line).map(|m| &line[m.end()..]))
        .unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_printk_timestamp_but_keeps_frame_indentation() {
        assert_eq!(strip_prefixes("[   12.345678] Call Trace:"), "Call Trace:");
        assert_eq!(
            strip_prefixes("[   12.345678]  dump_stack+0x86/0xc3"),
            " dump_stack+0x86/0xc3"
        );
        assert_eq!(
            strip_prefixes("[43262.025815] WARNING: CPU: 9"),
            "WARNING: CPU: 9"
        );
    }

    #[test]
    fn strips_caller_ids_glued_or_spaced() {
        assert_eq!(
            strip_prefixes("[    1.770141][    T1] BUG: unable to handle page fault"),
            "BUG: unable to handle page fault"
        );
        assert_eq!(
            strip_prefixes("[  138.953636] [   T2164] Memory state around the buggy address:"),
            "Memory state around the buggy address:"
        );
        assert_eq!(strip_prefixes("[    C1] rcu: INFO:"), "rcu: INFO:");
    }

    #[test]
    fn strips_kmsg_record_headers_with_and_without_caller() {
        assert_eq!(
            strip_prefixes("4,1234,5678901,-;WARNING: CPU: 0 PID: 1 at fs/dax.c:460"),
            "WARNING: CPU: 0 PID: 1 at fs/dax.c:460"
        );
        assert_eq!(
            strip_prefixes("6,77,123,-,caller=T93; dax_fault_iter+0x286/0x6a0"),
            " dax_fault_iter+0x286/0x6a0"
        );
    }

    #[test]
    fn strips_host_clock_then_kernel_prefixes() {
        for line in [
            "2025-11-26T12:04:05.123456789Z [    2.031496] WARNING: CPU: 0",
            "2025-11-26T12:04:05.123+01:00 [    2.031496] WARNING: CPU: 0",
            "[2025-11-26 12:04:05.123] [    2.031496] WARNING: CPU: 0",
            "[+2.031s] [    2.031496] WARNING: CPU: 0",
            "12:04:05.123 [    2.031496] WARNING: CPU: 0",
            "Oct 16 20:47:19 guest kernel: [    2.031496] WARNING: CPU: 0",
            "<4>[    2.031496] WARNING: CPU: 0",
            "2025-11-26T12:04:05Z 4,10,2031496,-;WARNING: CPU: 0",
        ] {
            assert_eq!(strip_prefixes(line), "WARNING: CPU: 0", "{line}");
        }
    }

    #[test]
    fn strips_the_vm_controllers_elapsed_time_before_the_kernels_own() {
        // The controller writes "[{:>9.3}] {line}" for each console line.
        assert_eq!(
            strip_prefixes("[   12.345] [    2.031496] WARNING: CPU: 0"),
            "WARNING: CPU: 0"
        );
        assert_eq!(
            strip_prefixes("[   12.345]  dax_fault_iter+0x286/0x6a0"),
            " dax_fault_iter+0x286/0x6a0"
        );
        assert_eq!(
            strip_prefixes("[   12.345] Debian GNU/Linux 13 guest ttyS0"),
            "Debian GNU/Linux 13 guest ttyS0"
        );
    }

    #[test]
    fn leaves_unprefixed_and_bracketed_kernel_text_alone() {
        assert_eq!(
            strip_prefixes("BUG: KASAN: use-after-free"),
            "BUG: KASAN: use-after-free"
        );
        assert_eq!(strip_prefixes("[drm] Initialized"), "[drm] Initialized");
        assert_eq!(
            strip_prefixes(" [<ffffffff8de17609>] ? __schedule"),
            " [<ffffffff8de17609>] ? __schedule"
        );
        assert_eq!(strip_prefixes("line\r"), "line");
    }

    #[test]
    fn drops_kmsg_dictionary_lines_and_keeps_numbering() {
        let dump = "6,1,100,-;pmem0: detected capacity change\n SUBSYSTEM=block\n DEVICE=b259:0\n4,2,200,-;WARNING: CPU: 0\n";
        let got: Vec<_> = lines(dump).iter().map(|l| (l.number, l.text)).collect();
        assert_eq!(
            got,
            vec![
                (1, "pmem0: detected capacity change"),
                (4, "WARNING: CPU: 0")
            ]
        );
    }

    #[test]
    fn indented_lines_of_a_plain_console_are_not_dictionary_lines() {
        let log = " SUBSYSTEM=looks-like-dict\n";
        assert_eq!(lines(log).len(), 1);
    }
}
