//! A program as a standalone C reproducer: raw system calls and the pseudo-calls done the
//! way the guest executor does them, one result line per call, plus the shell script that
//! finds a machine's DAX mounts and devices and runs it.
//!
//! The C program prints `#<index> <name> = <ret>[ errno <n> (<NAME>)]` for each call as it
//! finishes ([`parse_output`] reads it back). It does not compute the executor's checksums.

mod calls;

use std::fmt::Write;

use thiserror::Error;

use crate::target::{CallKind, FileTarget, Pseudo, ResourceKind};
use crate::wire::{errno_name, CallResult};
use crate::{Program, Target, ThreadId};

/// The C runtime every reproducer starts with (after `#define CALLS n`).
const RUNTIME: &str = include_str!("runtime.c");

/// The script that runs a reproducer against the DAX mounts of the machine it runs on.
pub const RUN_SCRIPT: &str = include_str!("repro.sh");

/// The script that prepares a machine's NVDIMMs for a reproducer (namespaces, mkfs, DAX
/// mounts); `@ROLES@` stands for the roles the program uses ([`setup_script`]).
const SETUP_SCRIPT: &str = include_str!("setup.sh");

/// What a program needs set up: `ext4`, `xfs`, `devdax`, in that order.
pub fn roles(target: &Target, prog: &Program) -> Vec<&'static str> {
    let mut ext4 = false;
    let mut xfs = false;
    let mut devdax = false;
    for call in &prog.calls {
        let Some(desc) = target.call(&call.name) else {
            continue;
        };
        match desc.file_target {
            Some(FileTarget::Ext4) => ext4 = true,
            Some(FileTarget::Xfs) => xfs = true,
            Some(FileTarget::Devdax) => devdax = true,
            // The slow disks are daxdiff's guest's own (repro.sh finds them there); on another
            // machine DAXDIFF_NODAX_DIR and DAXDIFF_BLKDEV name a non-DAX directory and device.
            Some(FileTarget::Nodax | FileTarget::Blkdev) | None => {}
        }
        match desc.kind {
            CallKind::Pseudo(
                Pseudo::DevdaxDisable | Pseudo::DevdaxEnable | Pseudo::NsReconfigure,
            ) => devdax = true,
            CallKind::Pseudo(Pseudo::Evict) => {
                let mode = call.args.first().and_then(|a| target.scalar_value(a));
                let is = |name: &str| target.consts.get(name).copied() == mode;
                ext4 |= is("DAXDIFF_EVICT_REMOUNT_EXT4");
                xfs |= is("DAXDIFF_EVICT_REMOUNT_XFS");
            }
            _ => {}
        }
    }
    [(ext4, "ext4"), (xfs, "xfs"), (devdax, "devdax")]
        .into_iter()
        .filter(|(used, _)| *used)
        .map(|(_, r)| r)
        .collect()
}

/// `setup.sh` for `prog`: sets up the roles it uses (all three when it uses none).
pub fn setup_script(target: &Target, prog: &Program) -> String {
    let mut r = roles(target, prog);
    if r.is_empty() {
        r = vec!["ext4", "xfs", "devdax"];
    }
    SETUP_SCRIPT.replace("@ROLES@", &r.join(" "))
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CsourceError {
    #[error("call {index} ({name}) is not in the descriptions")]
    UnknownCall { index: usize, name: String },
}

/// Renders `prog` as a C program. `header` lines become the opening comment (what the
/// reproducer is for, where it came from).
pub fn emit(target: &Target, prog: &Program, header: &[String]) -> Result<String, CsourceError> {
    let mut out = String::new();
    out.push_str("// SPDX-License-Identifier: GPL-2.0-only\n");
    for l in header {
        let _ = writeln!(out, "// {l}");
    }
    out.push_str("//\n// The program, in daxdiff's text form:\n");
    for call in &prog.calls {
        let _ = writeln!(out, "//   {}", call.to_text());
    }
    out.push_str(
        "//\n// Build: gcc -static -O1 -pthread -o repro repro.c; run as root with repro.sh.\n\n",
    );
    let _ = writeln!(out, "#define CALLS {}", prog.calls.len().max(1));
    out.push_str(RUNTIME);
    out.push('\n');
    out.push_str(&calls::resources(target, prog));
    out.push_str(&calls::no_ring());
    for idx in 0..prog.calls.len() {
        out.push_str(&calls::function(target, prog, idx)?);
    }
    out.push_str(&main_fn(prog));
    Ok(out)
}

fn main_fn(prog: &Program) -> String {
    let second: Vec<usize> = (0..prog.calls.len())
        .filter(|&i| prog.calls[i].thread != ThreadId::MAIN)
        .collect();
    let mut out = String::new();
    if !second.is_empty() {
        out.push_str(
            "/* The second thread runs the calls marked [t1], in order, once handed over. */\n",
        );
        out.push_str("static void *thread1(void *arg)\n{\n\t(void)arg;\n");
        for i in &second {
            let _ = writeln!(out, "\twait_for(call_handed, {i});\n\tcall{i}();");
        }
        out.push_str("\treturn NULL;\n}\n\n");
    }
    out.push_str("int main(void)\n{\n\tprepare();\n");
    if !second.is_empty() {
        out.push_str("\tpthread_t t1;\n\tif (pthread_create(&t1, NULL, thread1, NULL)) {\n\t\tperror(\"pthread_create\");\n\t\treturn 1;\n\t}\n");
    }
    for (i, call) in prog.calls.iter().enumerate() {
        if call.thread == ThreadId::MAIN {
            let _ = writeln!(out, "\tcall{i}();");
        } else {
            let _ = writeln!(out, "\tmark(call_handed, {i});");
        }
    }
    if !second.is_empty() {
        out.push_str("\tpthread_join(t1, NULL);\n");
    }
    out.push_str("\treturn 0;\n}\n");
    out
}

/// The value a resource has before its producer succeeded (the executor's "failed" value).
fn invalid_value(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Fd | ResourceKind::Ring | ResourceKind::Pipe => "-1",
        _ => "0",
    }
}

/// The call results a reproducer printed, in the wire form (no durations or checksums), so
/// they normalize and compare like the executor's. Lines that are not results are skipped.
pub fn parse_output(stdout: &str) -> Vec<CallResult> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix('#')?;
            let mut f = rest.split_ascii_whitespace();
            let index: usize = f.next()?.parse().ok()?;
            let name = f.next()?.to_string();
            if f.next()? != "=" {
                return None;
            }
            let ret: i64 = f.next()?.parse().ok()?;
            let errno = match f.next() {
                Some("errno") => Some(f.next()?.parse::<i32>().ok()?),
                _ => None,
            };
            Some(CallResult {
                index,
                name,
                thread: 0,
                ret,
                errno,
                errno_name: errno.and_then(errno_name).map(String::from),
                duration_us: 0,
                checksum: None,
            })
        })
        .collect()
}

/// A string as a C string literal.
fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:03o}");
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
