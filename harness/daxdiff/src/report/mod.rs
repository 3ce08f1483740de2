//! The mailing-list report of a triaged finding (`report.txt` in its directory, a message):
//! which kernels, what differs, how reliably, the kernel report, the program; files attached.

pub mod bisection;
pub mod reply;

use std::fmt::Write;

use crate::bisect::result::Bisection;
use crate::bisect::search::Kind;

use crate::images::Kernel;
use crate::mail::{Attachment, Mailbox, Outgoing};
use crate::repro::state::{CRun, Triage};
use crate::workdir::{Finding, FindingKind};

pub const REPORT_FILE: &str = "report.txt";

/// Everything the report says, gathered by the caller.
pub struct ReportInput<'a> {
    pub finding: &'a Finding,
    pub triage: &'a Triage,
    pub kernel_a: &'a Kernel,
    pub kernel_b: &'a Kernel,
    /// The program the numbers are about (minimized when minimization ran).
    pub program: &'a str,
    pub console_a: &'a str,
    pub console_b: &'a str,
    /// Whether `repro.c`/`repro.sh`/`setup.sh` exist to attach.
    pub has_c: bool,
    /// The files of the attachments directory (`attachments/`), by name.
    pub attachments: &'a [String],
    /// Where the finding starts (or stops), when it was bisected.
    pub bisection: Option<&'a Bisection>,
    /// `qemu.txt`: the QEMU command lines with the NVDIMM options (attached, and quoted).
    pub qemu: &'a str,
}

/// The kernel reports of a console log, as printed (one block per report); the caller passes
/// a console already symbolized (`symbolize`) when the kernel has debug information.
pub fn kernel_report_text(console: &str) -> Vec<String> {
    daxdiff_observe::parse(console)
        .into_iter()
        .map(|r| r.text)
        .collect()
}

fn kernel_line(tag: &str, k: &Kernel, attachments: &[String]) -> String {
    let origin = if k.version == "local" {
        "built locally".to_string()
    } else {
        format!("package {}", k.version)
    };
    let config = format!("config-{}", tag.to_lowercase());
    let config = if attachments.contains(&config) {
        format!("; its .config: attachments/{config}")
    } else {
        String::new()
    };
    // A built kernel may carry patches that change the scheme its version has upstream.
    let scheme = if k.version == "local" {
        format!(
            "its version upstream has the {} DAX refcount scheme",
            k.scheme
        )
    } else {
        format!("{} DAX refcount scheme", k.scheme)
    };
    format!(
        "  {tag}: {} = Linux {} ({origin}, {scheme}{config})",
        k.name, k.release
    )
}

fn c_line(tag: &str, c: &Option<CRun>) -> String {
    match c {
        None => format!("  {tag}: not run"),
        Some(c) => format!(
            "  {tag}: {} ({}{}{})",
            if c.shows_signal {
                "shows it"
            } else {
                "does NOT show it"
            },
            c.status,
            match &c.unfinished {
                Some(call) if c.status != "completed" => format!(", {call} did not return"),
                _ => String::new(),
            },
            if c.reports.is_empty() {
                String::new()
            } else {
                format!("; kernel reports: {}", c.reports.join(", "))
            }
        ),
    }
}

fn subject(i: &ReportInput) -> String {
    let f = i.finding;
    let rel = |k: &Kernel| k.release.clone();
    if let Some(title) = f.signature.strip_prefix("report only on A: ") {
        return format!("{title} on {}, not on {}", rel(i.kernel_a), rel(i.kernel_b));
    }
    if let Some(title) = f.signature.strip_prefix("report only on B: ") {
        return format!("{title} on {}, not on {}", rel(i.kernel_b), rel(i.kernel_a));
    }
    let only = f.differences.first().map(String::as_str).unwrap_or("");
    match f.kind {
        FindingKind::Crash if only.starts_with("only on A") => format!(
            "{} on {}, not on {}",
            f.signature,
            rel(i.kernel_a),
            rel(i.kernel_b)
        ),
        FindingKind::Crash if only.starts_with("only on B") => format!(
            "{} on {}, not on {}",
            f.signature,
            rel(i.kernel_b),
            rel(i.kernel_a)
        ),
        FindingKind::Crash => format!(
            "{} on {} and {}",
            f.signature,
            rel(i.kernel_a),
            rel(i.kernel_b)
        ),
        _ => format!(
            "DAX behaviour differs between {} and {}: {}",
            rel(i.kernel_a),
            rel(i.kernel_b),
            f.signature
        ),
    }
}

/// The report as a message from `sender`, with the files of the finding's `attachments/`
/// directory as parts: the configs alone run to hundreds of kilobytes, and attached they
/// stay out of the text reviewers quote (syzbot's reports do the same).
pub fn message(i: &ReportInput, sender: &Mailbox, attachments: Vec<Attachment>) -> Outgoing {
    Outgoing {
        from: sender.clone(),
        to: vec![],
        cc: vec![],
        subject: subject_line(i),
        in_reply_to: None,
        references: vec![],
        body: body(i),
        attachments,
    }
}

/// `[REPORT] fs/dax: …`, or `[REGRESSION]` when a bisection named where it starts.
pub fn subject_line(i: &ReportInput) -> String {
    let tag = match i.bisection {
        Some(b) if b.kind == Kind::Regression && b.first_new.is_some() => "REGRESSION",
        _ => "REPORT",
    };
    format!("[{tag}] fs/dax: {}", subject(i))
}

/// The report's text.
pub fn body(i: &ReportInput) -> String {
    let (f, t) = (i.finding, i.triage);
    let mut s = String::new();
    s.push_str("Hello,\n\n");
    s.push_str(
        "daxdiff, a differential fuzzer for DAX page reference counting, ran the same\n\
         program on two kernels and they behaved differently:\n\n",
    );
    let _ = writeln!(s, "{}", kernel_line("A", i.kernel_a, i.attachments));
    let _ = writeln!(s, "{}\n", kernel_line("B", i.kernel_b, i.attachments));
    let _ = writeln!(s, "What differs: {}", t.signal);
    s.push_str("All differences, A against B, in the run that found it:\n");
    for d in &f.differences {
        let _ = writeln!(s, "  {d}");
    }
    s.push('\n');
    if let (Some(before), Some(after)) = (t.calls_before, t.calls_after) {
        let _ = writeln!(
            s,
            "The program below is minimized from {before} to {after} calls ({} candidates run).",
            t.candidates.unwrap_or(0)
        );
        if !t.args_simplified.is_empty() {
            let _ = writeln!(
                s,
                "Arguments simplified ({}), each still showing the difference:",
                t.args_simplified.len()
            );
            for a in &t.args_simplified {
                let _ = writeln!(s, "  {a}");
            }
        }
    }
    if !t.differences.is_empty() {
        s.push_str("Differences with the minimized program (each kernel's usual outcome):\n");
        for d in &t.differences {
            let _ = writeln!(s, "  {d}");
        }
    }
    if let Some(r) = &t.reliability {
        let _ = writeln!(
            s,
            "Reproducibility over {} runs per kernel{}: A shows its side in {}, B in {}, both\n\
             sides in the same run pair {}.",
            r.a.n,
            if r.fresh_boots {
                " (each on a freshly booted guest)"
            } else {
                ""
            },
            r.a,
            r.b,
            r.pair
        );
        if !r.reliable() {
            let _ = writeln!(
                s,
                "UNRELIABLE: the whole signal showed in {} of {} run pairs, below the\n\
                 threshold of {}; the program is not presented as a reproducer.",
                r.pair.k,
                r.pair.n,
                r.threshold.min(r.pair.n)
            );
        }
    }
    if t.c_a.is_some() || t.c_b.is_some() {
        s.push_str("The C reproducer, once on a freshly booted guest of each kernel:\n");
        let _ = writeln!(s, "{}", c_line("A", &t.c_a));
        let _ = writeln!(s, "{}", c_line("B", &t.c_b));
    } else if let Some(why) = &t.c_not_judged {
        let _ = writeln!(
            s,
            "{}",
            bisection::wrap(
                &format!("The C reproducer is attached but was not judged: {why}."),
                bisection::WIDTH,
                0
            )
        );
    }
    s.push('\n');
    if let Some(b) = i.bisection {
        s.push_str(&bisection::render(b));
    }
    for (tag, console, k) in [
        ("A", i.console_a, i.kernel_a),
        ("B", i.console_b, i.kernel_b),
    ] {
        for text in kernel_report_text(console) {
            let how = if text.lines().any(|l| {
                daxdiff_observe::Frame::parse(l)
                    .is_some_and(|f| f.location.is_some() && f.offset.is_some())
            }) {
                "symbolized"
            } else {
                "as recorded"
            };
            let _ = writeln!(s, "Kernel report on {tag} ({}), {how}:\n", k.release);
            for l in text.lines() {
                let _ = writeln!(s, "  {l}");
            }
            s.push('\n');
        }
    }
    s.push_str("The program (daxdiff's text form: one system call per line, rN are results of\nearlier calls, daxdiff_* are the harness's pseudo-calls):\n\n");
    for l in i.program.lines() {
        let _ = writeln!(s, "  {l}");
    }
    s.push('\n');
    if i.has_c {
        s.push_str(
            "Attached: repro.c, the program as plain C (raw system calls, io_uring through\n\
             io_uring_setup/enter/register), and repro.sh, which runs it as root against an\n\
             ext4 file system mounted -o dax and an xfs one mounted -o dax=always (found in\n\
             /proc/mounts) and a device-dax device. setup.sh makes those on a machine with\n\
             NVDIMMs (ndctl create-namespace, mkfs, mount); it reuses what is set up and\n\
             destroys nothing unless DAXDIFF_FORCE=1:\n\n\
             \x20 gcc -static -O1 -pthread -o repro repro.c\n\
             \x20 sh setup.sh && sh repro.sh ./repro\n\n",
        );
    }
    s.push_str(
        "Machine: QEMU (x86-64, TCG), three emulated 1 GiB NVDIMMs: fsdax with ext4 -o dax,\n\
         fsdax with xfs -o dax=always (reflink=0), and devdax.\n",
    );
    if !i.qemu.is_empty() {
        s.push_str("The QEMU command lines (attached as qemu.txt):\n\n");
        for l in i.qemu.lines() {
            let _ = writeln!(s, "  {l}");
        }
    }
    if !i.attachments.is_empty() {
        let line = format!(
            "Attachments (the finding's attachments/ directory): {}.",
            i.attachments.join(", ")
        );
        let _ = write!(s, "\n{}", bisection::wrap(&line, bisection::WIDTH, 0));
    }
    s.push_str("\n-- \ndaxdiff\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{KernelName, Scheme};
    use crate::mail::Received;
    use crate::repro::state::{Rate, Reliability, Stage};
    use std::path::PathBuf;

    /// The report as written and read back: its decoded subject, a blank line, its text.
    fn render(i: &ReportInput) -> String {
        let m = Received::parse(sent(i, vec![])).unwrap();
        format!("Subject: {}\n\n{}", m.subject.unwrap(), m.body)
    }

    fn sent(i: &ReportInput, attachments: Vec<Attachment>) -> String {
        let from = Mailbox::parse("Zoë Reviewer <zoe@example.org>").unwrap();
        String::from_utf8(message(i, &from, attachments).to_bytes()).unwrap()
    }

    fn kernel(name: &str, release: &str, scheme: Scheme) -> Kernel {
        Kernel {
            name: KernelName::from(name),
            version: format!("{release}-1"),
            release: release.into(),
            scheme,
            bzimage: PathBuf::from("bzImage"),
            modules_root: None,
            config: None,
            vmlinux: None,
            packages: vec![],
        }
    }

    const CONSOLE_A: &str = "[   74.318875] WARNING: CPU: 0 PID: 252 at fs/dax.c:390 dax_disassociate_entry+0x86/0xb0\n\
[   74.321445] Modules linked in: ext4\n\
[   74.324000] RIP: 0010:dax_disassociate_entry+0x86/0xb0\n\
[   74.330000] Call Trace:\n\
[   74.330001]  <TASK>\n\
[   74.330002]  __dax_invalidate_entry+0x61/0x110\n\
[   74.330003]  truncate_inode_pages_range+0x31/0x490\n\
[   74.330004]  ext4_evict_inode+0x1e0/0x6f0\n\
[   74.330005]  </TASK>\n\
[   74.330006] ---[ end trace 0000000000000000 ]---\n";

    #[test]
    fn the_report_names_kernels_difference_reliability_report_and_program() {
        let finding = Finding {
            kind: FindingKind::Divergence,
            signature: "report only on A: WARNING in dax_disassociate_entry".into(),
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            differences: vec![
                "report only on A: WARNING in dax_disassociate_entry".into(),
                "status completed vs timeout in dax_break_layout_final".into(),
            ],
            runs: 2,
            found_at_exec: 1,
        };
        let triage = Triage {
            stage: Stage::Reproduced,
            signal: finding.signature.clone(),
            calls_before: Some(13),
            calls_after: Some(7),
            candidates: Some(12),
            args_simplified: vec!["#1 ftruncate len: 0x200000 -> 0x1000".into()],
            minimize_budget_spent: false,
            reliability: Some(Reliability {
                a: Rate { k: 3, n: 3 },
                b: Rate { k: 3, n: 3 },
                pair: Rate { k: 3, n: 3 },
                threshold: 3,
                fresh_boots: false,
            }),
            c_a: Some(CRun {
                shows_signal: true,
                status: "completed".into(),
                reports: vec!["WARNING in dax_disassociate_entry".into()],
                output: String::new(),
                unfinished: None,
            }),
            c_b: Some(CRun {
                shows_signal: true,
                status: "timeout".into(),
                reports: vec![],
                output: String::new(),
                unfinished: Some("#8 unlink$ext4".into()),
            }),
            differences: vec!["call 8 unlink$ext4: 0 vs did not run".into()],
            not_shown_again: None,
            c_not_judged: None,
            bisection: None,
        };
        let (a, b) = (
            kernel("debian-6.12", "6.12.117+deb12-amd64", Scheme::Old),
            kernel("debian-7.3", "7.3.1+deb13-amd64", Scheme::New),
        );
        let text = render(&ReportInput {
            finding: &finding,
            triage: &triage,
            kernel_a: &a,
            kernel_b: &b,
            program: "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n",
            console_a: CONSOLE_A,
            console_b: "",
            has_c: true,
            attachments: &["config-a".into(), "console-a.log".into(), "repro.c".into()],
            bisection: None,
            qemu: "# A: debian-6.12\nqemu-system-x86_64 -machine pc,nvdimm=on\n",
        });
        assert!(
            text.contains("old DAX refcount scheme; its .config: attachments/config-a)\n"),
            "{text}"
        );
        assert!(
            text.contains("\nAttachments (the finding's attachments/ directory): config-a,\nconsole-a.log, repro.c.\n"),
            "{text}"
        );
        assert!(text.starts_with("Subject: [REPORT] fs/dax: WARNING in dax_disassociate_entry on 6.12.117+deb12-amd64, not on 7.3.1+deb13-amd64\n"), "{text}");
        assert!(
            text.contains("A: debian-6.12 = Linux 6.12.117+deb12-amd64"),
            "{text}"
        );
        assert!(text.contains("minimized from 13 to 7 calls"), "{text}");
        assert!(
            text.contains("The QEMU command lines (attached as qemu.txt):\n\n  # A: debian-6.12\n  qemu-system-x86_64 -machine pc,nvdimm=on\n"),
            "{text}"
        );
        assert!(
            text.contains("sh setup.sh && sh repro.sh ./repro"),
            "{text}"
        );
        assert!(
            text.contains("Arguments simplified (1), each still showing the difference:\n  #1 ftruncate len: 0x200000 -> 0x1000\n"),
            "{text}"
        );
        assert!(text.contains("A shows its side in 3/3, B in 3/3"), "{text}");
        assert!(
            text.contains(
                "  A: shows it (completed; kernel reports: WARNING in dax_disassociate_entry)"
            ),
            "{text}"
        );
        assert!(
            text.contains("  B: shows it (timeout, #8 unlink$ext4 did not return)"),
            "{text}"
        );
        assert!(
            text.contains("minimized program (each kernel's usual outcome):\n  call 8 unlink$ext4: 0 vs did not run"),
            "{text}"
        );
        assert!(
            text.contains("Kernel report on A (6.12.117+deb12-amd64), as recorded:"),
            "{text}"
        );
        assert!(text.contains("ext4_evict_inode+0x1e0/0x6f0"), "{text}");
        assert!(!text.contains("Kernel report on B"), "{text}");
        assert!(text.contains("  r0 = openat$ext4("), "{text}");
        assert!(text.contains("Attached: repro.c"), "{text}");
    }

    #[test]
    fn a_refcount_finding_says_why_its_c_reproducer_was_not_judged() {
        let finding = crash_only_on_b("refcount underflow on devdax: pgmap_ref -512, ref0 +1");
        let (a, b) = (
            kernel("6.1-kasan", "6.1.192", Scheme::Old),
            kernel("6.1-kasan+dax-gup-v2", "6.1.192+", Scheme::Old),
        );
        let t = Triage {
            c_not_judged: Some(crate::repro::not_judged(&finding.signature, "B")),
            ..Triage::default()
        };
        let text = render(&bare(&finding, &t, (&a, &b)));
        assert!(
            text.contains(
                "The C reproducer is attached but was not judged: only the\nreference-count probe"
            ),
            "{text}"
        );
        assert!(!text.contains("The C reproducer, once on"), "{text}");
    }

    #[test]
    fn a_program_below_the_reliability_threshold_is_not_presented_as_a_reproducer() {
        let finding = crash_only_on_b("WARNING in dax_disassociate_entry");
        let (a, b) = (
            kernel("debian-6.12", "6.12.117+deb12-amd64", Scheme::Old),
            kernel("debian-7.3", "7.3.4+deb13-amd64", Scheme::New),
        );
        let triage = |k| Triage {
            reliability: Some(Reliability {
                a: Rate { k: 10, n: 10 },
                b: Rate { k, n: 10 },
                pair: Rate { k, n: 10 },
                threshold: 3,
                fresh_boots: false,
            }),
            ..Triage::default()
        };
        for (k, unreliable) in [(2, true), (3, false)] {
            let t = triage(k);
            let text = render(&bare(&finding, &t, (&a, &b)));
            assert_eq!(
                text.contains("UNRELIABLE: the whole signal showed in 2 of 10 run pairs"),
                unreliable,
                "{text}"
            );
        }
    }

    /// A report of `finding` with nothing but the triage: no program, consoles or files.
    fn bare<'a>(
        finding: &'a Finding,
        triage: &'a Triage,
        (kernel_a, kernel_b): (&'a Kernel, &'a Kernel),
    ) -> ReportInput<'a> {
        ReportInput {
            finding,
            triage,
            kernel_a,
            kernel_b,
            program: "",
            console_a: "",
            console_b: "",
            has_c: false,
            attachments: &[],
            bisection: None,
            qemu: "",
        }
    }

    /// A crash seen on debian-7.3 only, as the fuzzer records it.
    fn crash_only_on_b(signature: &str) -> Finding {
        Finding {
            kind: FindingKind::Crash,
            signature: signature.into(),
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            differences: vec!["only on B (debian-7.3)".into()],
            runs: 1,
            found_at_exec: 1,
        }
    }

    #[test]
    fn a_crash_on_one_kernel_says_which_in_the_subject() {
        let finding = crash_only_on_b("WARNING in dax_disassociate_entry");
        let (a, b) = (
            kernel("debian-6.12", "6.12.117+deb12-amd64", Scheme::Old),
            kernel("debian-7.3", "7.3.4+deb13-amd64", Scheme::New),
        );
        let text = render(&bare(&finding, &Triage::default(), (&a, &b)));
        assert!(text.starts_with("Subject: [REPORT] fs/dax: WARNING in dax_disassociate_entry on 7.3.4+deb13-amd64, not on 6.12.117+deb12-amd64\n"), "{text}");
        assert!(!text.contains("Attached"), "{text}");
        assert!(!text.contains("Bisection"), "{text}");
    }

    #[test]
    fn a_bisected_finding_carries_its_bisection() {
        let finding = crash_only_on_b("INFO: task hung in dax_break_layout_final");
        let (a, b) = (
            kernel("debian-6.12", "6.12.117+deb12-amd64", Scheme::Old),
            kernel("debian-7.3", "7.3.4+deb13-amd64", Scheme::New),
        );
        let regression = crate::bisect::result::tests::git_regression();
        let triage = Triage::default();
        let input = |bisection| ReportInput {
            finding: &finding,
            triage: &triage,
            kernel_a: &a,
            kernel_b: &b,
            program: "",
            console_a: "",
            console_b: "",
            has_c: false,
            attachments: &[],
            bisection,
            qemu: "",
        };
        let text = render(&input(Some(&regression)));
        assert!(text.starts_with("Subject: [REGRESSION] fs/dax: "), "{text}");
        assert!(
            text.contains("\nBisection (regression, where the behaviour starts)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("  first bad commit: {}", "3".repeat(40))),
            "{text}"
        );
        // A fix is reported, not called a regression.
        let fix = crate::bisect::result::tests::versions_fix();
        let text = render(&input(Some(&fix)));
        assert!(text.starts_with("Subject: [REPORT] fs/dax: "), "{text}");
        assert!(text.contains("  first fixed: 7.2.6-1~bpo13+1"), "{text}");
    }

    #[test]
    fn kernel_report_text_is_the_report_without_console_prefixes() {
        let r = kernel_report_text(CONSOLE_A);
        assert_eq!(r.len(), 1);
        assert!(
            r[0].starts_with("WARNING: CPU: 0 PID: 252 at fs/dax.c:390"),
            "{}",
            r[0]
        );
        assert!(!r[0].contains("[   74."), "{}", r[0]);
    }
}
