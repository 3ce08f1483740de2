//! The messages daxdiff writes go to the lists as they are: `git send-email --dry-run` (the
//! real one, Debian's git-email) takes reply.eml and report.txt; without a sender, none is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use daxdiff::catalogue::{KernelName, Scheme};
use daxdiff::images::Kernel;
use daxdiff::mail::{Attachment, Mailbox};
use daxdiff::report::reply::{self, Cover, KernelLine, ReplyInput};
use daxdiff::report::{self, ReportInput};
use daxdiff::repro::state::Triage;
use daxdiff::workdir::{Finding, FindingKind};

const SENDER: &str = "Zoë Reviewer <zoe@example.org>";

fn seed_mbox() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzzing/seeds/series.mbox");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `git send-email --dry-run` of `file`, non-interactive; its output (stdout and stderr).
fn dry_run(file: &Path) -> String {
    let help = Command::new("git").args(["send-email", "-h"]).output();
    // Its usage names --dry-run; without git-email git says send-email is no git command.
    let installed = help.is_ok_and(|o| {
        String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).contains("--dry-run")
    });
    assert!(
        installed,
        "git send-email is not installed: run ci/setup.sh (it installs Debian's git-email)"
    );
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("git")
        .current_dir(home.path())
        // Only this test's settings: no user config may add recipients, hooks or a server.
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.path().join("gitconfig"))
        .args([
            "send-email",
            "--dry-run",
            "--confirm=never",
            "--no-validate",
        ])
        .args(["--from", SENDER, "--to", "linux-mm@kvack.org"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run git send-email");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git send-email failed:\n{text}");
    text
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn git_send_email_takes_the_reply_threaded_to_the_cover_letter() {
    let cover = Cover::from_mbox(&seed_mbox()).unwrap();
    let kernel = |name: &str| KernelLine {
        name: name.into(),
        release: "6.1.192".into(),
        origin: "built locally".into(),
    };
    let message = reply::message(
        &ReplyInput {
            cover: &cover,
            base: kernel("6.1-kasan"),
            series: kernel("6.1-kasan+dax-gup-v2"),
            patches: &[],
            suite: vec![],
            stats: None,
            items: &[],
            note: None,
        },
        &Mailbox::parse(SENDER).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dry_run(&write(dir.path(), "reply.eml", &message.to_bytes()));
    eprintln!("{out}");
    assert!(out.contains("Dry-OK. Log says:"), "{out}");
    assert!(
        out.contains("Subject: Re: [PATCH v2 00/03] Fix the DAX page reference counts"),
        "{out}"
    );
    assert!(
        out.contains("In-Reply-To: <1663299308.1@example.org>"),
        "{out}"
    );
    // The file's own To and Cc are read: the cover letter's author and recipients.
    assert!(
        out.contains("dev@example.org") && out.contains("one@example.org"),
        "{out}"
    );
}

#[test]
fn git_send_email_takes_a_report_with_its_attachments() {
    let finding = Finding {
        kind: FindingKind::Crash,
        signature: "WARNING in dax_disassociate_entry".into(),
        kernel_a: "debian-6.12".into(),
        kernel_b: "debian-7.3".into(),
        differences: vec!["only on B (debian-7.3)".into()],
        runs: 1,
        found_at_exec: 1,
    };
    let kernel = |name: &str, release: &str, scheme| Kernel {
        name: KernelName::from(name),
        version: format!("{release}-1"),
        release: release.into(),
        scheme,
        bzimage: PathBuf::from("bzImage"),
        modules_root: None,
        config: None,
        vmlinux: None,
        packages: vec![],
    };
    let (a, b) = (
        kernel("debian-6.12", "6.12.117+deb12-amd64", Scheme::Old),
        kernel("debian-7.3", "7.3.4+deb13-amd64", Scheme::New),
    );
    let attachments = vec![
        Attachment {
            name: "config-b".into(),
            content: b"CONFIG_FS_DAX=y\nCONFIG_ZONE_DEVICE=y\n".to_vec(),
        },
        Attachment {
            name: "repro.c".into(),
            content: b"int main(void) { return 0; }\n".to_vec(),
        },
    ];
    let names: Vec<String> = attachments.iter().map(|a| a.name.clone()).collect();
    let triage = Triage::default();
    let input = ReportInput {
        finding: &finding,
        triage: &triage,
        kernel_a: &a,
        kernel_b: &b,
        program: "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n",
        console_a: "",
        console_b: "",
        has_c: true,
        attachments: &names,
        bisection: None,
        qemu: "",
    };
    let message = report::message(&input, &Mailbox::parse(SENDER).unwrap(), attachments);
    let dir = tempfile::tempdir().unwrap();
    let out = dry_run(&write(dir.path(), report::REPORT_FILE, &message.to_bytes()));
    eprintln!("{out}");
    assert!(out.contains("Dry-OK. Log says:"), "{out}");
    assert!(
        out.contains(
            "Subject: [REPORT] fs/dax: WARNING in dax_disassociate_entry on 7.3.4+deb13-amd64"
        ),
        "{out}"
    );
    assert!(out.contains("Content-Type: multipart/mixed"), "{out}");
}

#[test]
fn without_from_or_git_identity_the_commands_stop_first_naming_both_ways() {
    let home = tempfile::tempdir().unwrap();
    let empty = write(home.path(), "gitconfig", b"");
    for args in [
        &["report", "--reply-to", "series.mbox", "--campaign", "camp"][..],
        &["report", "finding"][..],
        &["repro", "finding"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_daxdiff"))
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &empty)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Before anything else: the mbox, the campaign and the finding do not exist.
        assert!(
            err.contains("no sender for the message: pass --from \"Name <user@example.org>\"")
                && err.contains("git config --global user.email"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    }
}
