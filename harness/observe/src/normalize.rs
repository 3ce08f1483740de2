//! Kernel text with run-specific noise removed, so two runs (or two kernels) can be compared:
//! no addresses, offsets, pids, CPU numbers, timings, line numbers, UUIDs or console prefixes.

use crate::console;
use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

/// Applied in order: the specific shapes first, so that a later generic rule (a bare number)
/// does not split them.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    [
        (
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
            "UUID",
        ),
        // Symbol offsets: "dax_insert_entry+0x36e/0x380" -> "dax_insert_entry".
        (r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?", ""),
        // Task names that carry a number of their own ("syz-executor123", "kworker/u9:0"),
        // where the kernel prints a task name.
        (
            r"(Comm: |task:|task |process |by task )([^\s/:]*?)\d+\b",
            "${1}${2}N",
        ),
        (r"\bkworker/[\w:+-]+", "kworker/N"),
        // Also glued to a letter, as in RCU's "g19581 f0x2".
        (r"0x[0-9a-fA-F]+\b", "X"),
        // Bare addresses and register values: eight or more hex digits.
        (r"\b[0-9a-fA-F]{8,}\b", "X"),
        (r"\b\d+\.\d+\b", "N"),
        (r"\b\d+\b", "N"),
        (r"\s+", " "),
    ]
    .into_iter()
    .map(|(p, replacement)| Rule {
        pattern: Regex::new(p).expect("normalization pattern"),
        replacement,
    })
    .collect()
});

/// Normalizes one line of kernel text: prefixes stripped, then addresses and symbol offsets,
/// pids, CPU numbers, timings, line numbers and UUIDs replaced by placeholders (`X` for hex,
/// `N` for decimal, `UUID`), whitespace collapsed.
///
/// Identifiers keep their digits (`ext4_iomap_begin`, `pmem0`): only free-standing numbers go.
pub fn normalize_line(line: &str) -> String {
    let mut text = console::strip_prefixes(line).to_string();
    for rule in RULES.iter() {
        text = rule
            .pattern
            .replace_all(&text, rule.replacement)
            .into_owned();
    }
    printable(text.trim()).into_owned()
}

/// `text` with each control character (an escape sequence, a bell, a NUL a damaged console
/// let through) written as its Rust escape (`\u{1b}`): what the parser takes from a line for a
/// title or a signature must be one line of printable text, and stay readable in a terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Normalizes every line of a text (see [`normalize_line`]), dropping lines left empty.
pub fn normalize(text: &str) -> String {
    console::lines(text)
        .iter()
        .map(|l| normalize_line(l.text))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_warning_from_two_runs_normalizes_identically() {
        let run1 =
            "[    2.031496] WARNING: CPU: 0 PID: 1 at fs/dax.c:460 dax_insert_entry+0x36e/0x380";
        let run2 =
            "[  817.000001] WARNING: CPU: 1 PID: 4242 at fs/dax.c:372 dax_insert_entry+0x2d5/0x2f0";
        assert_eq!(normalize_line(run1), normalize_line(run2));
        assert_eq!(
            normalize_line(run1),
            "WARNING: CPU: N PID: N at fs/dax.c:N dax_insert_entry"
        );
    }

    #[test]
    fn addresses_registers_and_uuids_become_placeholders() {
        assert_eq!(
            normalize_line("RSP: 0018:ffffc9000a0cbb78 EFLAGS: 00010002"),
            "RSP: N:X EFLAGS: X"
        );
        assert_eq!(
            normalize_line("Read of size 4 at addr ffff888021a7253c by task kworker/1:1/46"),
            "Read of size N at addr X by task kworker/N/N"
        );
        assert_eq!(
            normalize_line(
                "EXT4-fs (pmem0): mounted filesystem 6f2c1a35-9b1e-4f4e-8f0f-2a7e7b0d3c11 r/w"
            ),
            "EXT4-fs (pmem0): mounted filesystem UUID r/w"
        );
    }

    #[test]
    fn task_names_lose_their_numbers_but_identifiers_keep_theirs() {
        assert_eq!(
            normalize_line("INFO: task syz-executor123:3634 blocked for more than 143 seconds."),
            "INFO: task syz-executorN:N blocked for more than N seconds."
        );
        assert_eq!(
            normalize_line("CPU: 1 PID: 46 Comm: syz-executor7 Not tainted 6.6.0-rc3 #0"),
            "CPU: N PID: N Comm: syz-executorN Not tainted N.N-rc3 #N"
        );
        assert_eq!(
            normalize_line(" ext4_iomap_begin+0x12/0x340 [ext4]"),
            "ext4_iomap_begin [ext4]"
        );
    }

    #[test]
    fn timings_and_prefixes_go() {
        assert_eq!(
            normalize_line("2025-11-26T12:04:05Z [   12.345678] INFO: NMI handler took too long to run: 1.426 msecs"),
            "INFO: NMI handler took too long to run: N msecs"
        );
    }

    #[test]
    fn normalize_joins_lines_and_drops_blank_ones() {
        let text = "[    1.0] a 0x10\n\n[    2.0]   b   12\n";
        assert_eq!(normalize(text), "a X\nb N");
    }
}
