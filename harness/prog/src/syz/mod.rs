//! syzkaller's program text in and out: import a reproducer as syzbot shows it into a daxdiff
//! program, and export a daxdiff program as syzkaller text where its calls have counterparts.
//!
//! Mapping rules (both directions; the README's "syzkaller programs" section says the same):
//! - Files: a relative syzkaller path (`./file0`) is a file on the mount named by
//!   [`ImportOptions::target`] (`$ext4` unless told); `/dev/daxN.M` is the devdax device. A
//!   comment line `# daxdiff target: xfs` before a call picks the mount for that call (export
//!   writes one for every file call not on ext4, so programs mixing mounts come back whole).
//! - Addresses: an address inside an earlier `mmap` of the program becomes `&rN+0x…`; any
//!   other pointer a `&buf[0x…]` scratch buffer as large as its data, else its length
//!   argument. Export lays mappings and buffers out in syzkaller's 16 MiB data area and maps
//!   with `MAP_FIXED`; import drops `MAP_FIXED` (daxdiff lets the kernel place mappings).
//! - `pipe`/`pipe2` are `daxdiff_pipe`, `io_uring_setup` is `daxdiff_uring_setup` (which maps
//!   the rings itself, so syzkaller's `mmap$IORING_OFF_*` calls are absorbed), `(async)` is
//!   `[t1]`. Buffer contents are not carried: daxdiff fills scratch buffers itself.
//! - Refused, naming line, call and why: calls daxdiff does not describe, values it cannot
//!   express (`fail_nth`, a vma outside the program's mappings, …), and on export the
//!   `daxdiff_*` pseudo-calls without a syzkaller counterpart. With `skip_unknown` those
//!   calls (and the calls using what they made) are dropped instead and listed.

mod export;
mod import;
pub mod text;

#[cfg(test)]
mod tests;

pub use export::{export, ExportOptions, Exported};
pub use import::{import, ImportOptions, Imported};
pub use text::{SyzArg, SyzCall, SyzProgram};

/// One call that cannot be converted, or was converted with a caveat: where, which, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based line of the call in the input text.
    pub line: usize,
    /// The call's name as the input writes it.
    pub call: String,
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.call, self.why)
    }
}

/// Why a program could not be imported or exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyzError {
    #[error("line {line}, column {col}: {msg}")]
    Syntax {
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{} call(s) cannot be converted (--skip-unknown leaves them out, with a warning for each):\n{}",
        .0.len(), list(.0))]
    Refused(Vec<Refusal>),
}

fn list(r: &[Refusal]) -> String {
    r.iter()
        .map(|x| format!("  {x}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A comment line `# daxdiff target: xfs` before a call puts its files on that mount.
pub const TARGET_HINT: &str = "# daxdiff target:";

/// The [`FileTarget`](crate::FileTarget) a `--target`-style name selects (`ext4`, `xfs`, …).
pub fn file_target(name: &str) -> Option<crate::FileTarget> {
    crate::FileTarget::ALL
        .into_iter()
        .find(|t| t.suffix() == name.trim())
}
