//! Fuzz targets for every parser that reads text a user, a kernel or a disk can damage:
//! program text, console logs, mboxes, TOML (catalogue, suppressions, built.toml, verdicts,
//! recipes) and finding directories. Each mutates real seeds (see `fuzzing/`) for a few
//! seconds in `cargo test`; `DAXDIFF_FUZZ_SECS=60` or `DAXDIFF_HEAVY=1` runs longer, and
//! `--nocapture` shows the figures.

mod fuzzing;

use std::path::{Path, PathBuf};

use daxdiff::catalogue::Catalogue;
use daxdiff::diff::{CallOutcome, KernelReport, Outcome, Ret, Suppressions};
use daxdiff::images::guest::Recipe;
use daxdiff::kbuild::series;
use daxdiff::mail;
use daxdiff::report::reply::{Cover, Verdicts};
use daxdiff::workdir::{Finding, FindingKind, SideRecord, Stats, Workdir};
use daxdiff_observe::Signature;
use daxdiff_prog::wire::Status;
use daxdiff_prog::Target as Descriptions;
use fuzzing::{run, Target};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file in `dir` (of the repository) whose name ends in `ext`.
fn seeds_in(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn seed(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(input)
}

#[test]
fn fuzz_program_text() {
    let target = Target {
        name: "program-text",
        seeds: seeds_in("corpora", ".prog"),
        dictionary: &[
            "&{",
            "[{",
            "&\"",
            "&r0+0x",
            "&buf[0x",
            "nil",
            "r0 = ",
            "r99999999999",
            "[t1]",
            "[t0]",
            "0x",
            "0xffffffffffffffffff",
            "|",
            ", ",
            ")",
            "(",
            "# ",
            "$",
            "\"",
        ],
    };
    run(target, |input| {
        let text = text(input);
        if let Ok((prog, _)) = daxdiff_prog::encoding::parse_syntax(&text) {
            let printed = prog.to_text();
            let (again, _) = daxdiff_prog::encoding::parse_syntax(&printed)
                .unwrap_or_else(|e| panic!("printed program does not parse: {e}\n{printed}"));
            assert_eq!(again, prog, "printed program parses to another program");
            assert_eq!(again.to_text(), printed, "printing is not stable");
        }
        if let Ok(prog) = daxdiff_prog::parse(target_ref(), &text) {
            let back = daxdiff_prog::parse(target_ref(), &prog.to_text())
                .unwrap_or_else(|e| panic!("valid program prints invalid: {e}"));
            assert_eq!(back, prog);
            let json = serde_json::to_string(&prog).unwrap();
            assert_eq!(
                serde_json::from_str::<daxdiff_prog::Program>(&json).unwrap(),
                prog
            );
        }
    });
}

fn target_ref() -> &'static Descriptions {
    Descriptions::builtin()
}

#[test]
fn fuzz_console_logs() {
    let target = Target {
        name: "console",
        seeds: seeds_in("harness/observe/tests/reports", ".log"),
        dictionary: &[
            "Kernel panic - not syncing: ",
            "WARNING: CPU: 0 PID: 1 at fs/dax.c:460 dax_insert_entry+0x36e/0x380\n",
            "WARNING: fs/dax.c:1756 at dax_iomap_rw+0xe34/0xed0, CPU#0: x\n",
            "kernel BUG at mm/page_alloc.c:535!\n",
            "BUG: KASAN: slab-use-after-free in ",
            "BUG: Bad page state in process ",
            "percpu ref (css_release) <= 0 (-1) after switching to atomic\n",
            "refcount_t: underflow; use-after-free.\n",
            "INFO: task kworker/0:1:12 blocked for more than 120 seconds.\n",
            "Call Trace:\n",
            " <TASK>\n",
            " dax_fault_iter+0x286/0x6a0\n",
            "RIP: 0010:",
            "---[ end trace 0000000000000000 ]---\n",
            "---[ end Kernel panic - not syncing: ",
            "==================================================================\n",
            "[    2.031496] ",
            "[  T123] ",
            "6,1234,5678901,-;",
            "\x1b[31m",
        ],
    };
    run(target, |input| {
        let text = text(input);
        let lines = text.split('\n').count();
        for r in daxdiff_observe::parse(&text) {
            assert!(!r.title.chars().any(char::is_control), "{:?}", r.title);
            assert_eq!(
                Signature::try_from(r.signature.to_string()).as_ref(),
                Ok(&r.signature),
                "the signature of {:?} does not read back",
                r.title
            );
            assert_eq!(r.signature, Signature::from_title(&r.title));
            assert!(r.start_line <= r.end_line && r.end_line <= lines, "{r:?}");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(
                serde_json::from_str::<daxdiff_observe::Report>(&json).unwrap(),
                r
            );
        }
        // Any line at all, taken as a title.
        for line in text.lines().take(50) {
            let sig = Signature::from_title(line);
            assert_eq!(
                Signature::try_from(sig.to_string()).as_ref(),
                Ok(&sig),
                "{line:?}"
            );
            assert!(sig.dir_name().len() <= 100);
        }
        let _ = daxdiff_observe::normalize(&text);
    });
}

#[test]
fn fuzz_mbox() {
    let target = Target {
        name: "mbox",
        seeds: vec![
            seed("harness/daxdiff/tests/fuzzing/seeds/series.mbox"),
            seed("corpora/bisect-demo/0001-fs-dax-say-who-shares-the-entry-code.patch"),
            seed("vm-images/fixups/dax-gup-v2-6.1/0018-mm-gup-Drop-DAX-pgmap-accounting.patch"),
        ],
        dictionary: &[
            "\nFrom dev@example.org Fri Sep 16 03:35:08 2022\n",
            ">From ",
            ">>From ",
            "\nSubject: [PATCH v2 00/03] ",
            "[PATCH 99999999999999999999/3] ",
            "[PATCH v2 ",
            "[]",
            "]",
            "[",
            "Subject:",
            "Re: ",
            "\n ",
            "\nMessage-ID: <a@b>\n",
            "\n\n",
            "\ndiff --git a/x b/x\n",
            "\n--- a/x\n+++ b/x\n",
            "\r\n",
            "=?UTF-8?q?Ren=C3=A9?=",
            "=?utf-8?B?4oCm?=",
            "\nContent-Transfer-Encoding: quoted-printable\n",
            "\nContent-Transfer-Encoding: base64\n",
            "\nContent-Type: multipart/mixed; boundary=\"b\"\n",
            "\n--b\n",
            "=\n",
            "=E2=80=9C",
        ],
    };
    run(target, |input| {
        let text = text(input);
        let messages = mail::mbox_messages(&text);
        assert!(messages.len() <= text.matches("From ").count());
        for m in messages {
            if let Ok(m) = mail::Received::parse(m) {
                if let Some(s) = &m.subject {
                    let _ = series::split_subject(s);
                }
                let _ = (m.addresses("From"), m.addresses("Cc"));
            }
        }
        if let Ok(patches) = series::from_mbox(&text) {
            for (i, p) in patches.iter().enumerate() {
                assert_eq!(p.index, i + 1);
                let m = mail::Received::parse(p.text.clone()).expect("a patch parsed once");
                assert!(series::carries_diff(&m));
            }
        }
        if let Ok(cover) = Cover::from_mbox(&text) {
            assert!(!cover.message_id.as_str().is_empty());
            let _ = cover.patch_name(1, "x");
        }
    });
}

/// `built.toml` as `daxdiff kernel build` writes it.
const BUILT_TOML: &str = r#"# Kernels built by `daxdiff kernel build`, merged into the catalogue by every command.
[kernels.linux-7.3-kasan]
kind = "local"
bzimage = "built/linux-7.3-kasan/bzImage"
vmlinux = "built/linux-7.3-kasan/vmlinux"
config = "built/linux-7.3-kasan/config"
modules = "built/linux-7.3-kasan/modules/lib/modules/7.3.0"
"#;

const VERDICTS_TOML: &str = r#"[[finding]]
signature = "io_uring_register$buffers: 0 vs EOPNOTSUPP"
class = "intended"
why = "The series refuses long-term pins of DAX mappings."

[[finding]]
signature = "WARNING in dax_insert_entry"
class = "introduced"
why = "Only on B."
"#;

#[test]
fn fuzz_toml() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("kernels")).unwrap();
    let registry = daxdiff::kbuild::registry_path(cache.path());
    let target = Target {
        name: "toml",
        seeds: vec![
            seed("vm-images/kernels.toml"),
            seed("vm-images/suppressions.toml"),
            seed("vm-images/guest/recipe.toml"),
            seed("vm-images/suite/recipe.toml"),
            BUILT_TOML.as_bytes().to_vec(),
            VERDICTS_TOML.as_bytes().to_vec(),
        ],
        dictionary: &[
            "[",
            "[[",
            "{",
            "a = [",
            "a = {",
            "=",
            "\"",
            "'''",
            "\"\"\"",
            "\\u",
            "#",
            "\n",
            "[kernels.x]\n",
            "kind = \"local\"\n",
            "[[suppress]]\n",
            "[[finding]]\n",
            "reason = \"\"\n",
            "kernels = [\"a\", \"b\", \"c\"]\n",
            "1979-05-27T07:32:00Z",
        ],
    };
    run(target, |input| {
        let text = text(input);
        let _ = Catalogue::parse(&text, "fuzz.toml", Path::new("base"));
        if let Ok(s) = Suppressions::parse(&text, Path::new("fuzz.toml")) {
            for e in &s.entries {
                assert!(!e.reason.trim().is_empty());
            }
        }
        let _ = Verdicts::parse(&text, "fuzz.toml");
        let _ = Recipe::parse(&text);
        std::fs::write(&registry, input).unwrap();
        let _ = daxdiff::kbuild::registry(cache.path());
        let _ = daxdiff::kbuild::built_bzimage(cache.path(), "linux-7.3-kasan");
    });
}

fn outcome_seeds() -> (Finding, Outcome, Outcome) {
    let finding = Finding {
        kind: FindingKind::Crash,
        signature: "WARNING in dax_insert_entry".into(),
        kernel_a: "debian-6.12".into(),
        kernel_b: "debian-7.3".into(),
        differences: vec!["only on B (debian-7.3)".into()],
        runs: 1,
        found_at_exec: 42,
    };
    let call = |index, ret| CallOutcome {
        index,
        name: "mmap".into(),
        ret,
        checksum: Some(7),
    };
    let a = Outcome {
        status: Status::Completed,
        calls: vec![call(0, Ret::Fd), call(1, Ret::Errno("ENODEV".into()))],
        reports: vec![],
        hung_stack: vec![],
        detail: None,
        teardown: vec![],
        refcounts: None,
        integrity: vec![],
    };
    let b = Outcome {
        status: Status::Crashed,
        calls: vec![call(0, Ret::Fd), call(1, Ret::Address)],
        reports: vec![KernelReport {
            title: "WARNING in dax_insert_entry".into(),
            signature: Signature::from_title("WARNING in dax_insert_entry"),
        }],
        hung_stack: vec!["dax_insert_entry".into()],
        detail: Some("signal N".into()),
        teardown: vec![],
        refcounts: Some(vec![]),
        integrity: vec![],
    };
    (finding, a, b)
}

#[test]
fn fuzz_finding_json() {
    let dir = tempfile::tempdir().unwrap();
    let w = Workdir::open(dir.path()).unwrap();
    w.save_stats(&Stats::default()).unwrap();
    let (finding, a, b) = outcome_seeds();
    let console =
        ["[    1.0] WARNING: CPU: 0 PID: 1 at fs/dax.c:460 dax_insert_entry+0x1/0x2".to_string()];
    let found = w
        .save_finding(
            "warning",
            &finding,
            "getpid()\n",
            SideRecord {
                outcomes: std::slice::from_ref(&a),
                console: &console,
            },
            SideRecord {
                outcomes: std::slice::from_ref(&b),
                console: &console,
            },
        )
        .unwrap();
    let files = [
        "finding.json",
        "outcome-a.json",
        "outcome-b.json",
        "stats.json",
    ];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(file_of(&w, &found, f)).unwrap())
        .collect();
    let mut divergence = finding.clone();
    divergence.kind = FindingKind::Divergence;
    let mut seeds = originals.clone();
    seeds.push(serde_json::to_vec_pretty(&divergence).unwrap());
    seeds.push(serde_json::to_vec(&vec![a.clone(), b.clone()]).unwrap());
    let target = Target {
        name: "finding-json",
        seeds,
        dictionary: &[
            "{",
            "[",
            "\"",
            "\\u0000",
            "\\ud800",
            "null",
            "1e999",
            "-0",
            "18446744073709551616",
            "\"kind\": \"unstable\"",
            "\"status\": \"timeout\"",
            ",",
        ],
    };
    let mut round = 0usize;
    run(target, |input| {
        // Each input lands in one of the files, the others as written.
        round += 1;
        let which = round % files.len();
        for (i, f) in files.iter().enumerate() {
            let data = if i == which { input } else { &originals[i] };
            std::fs::write(file_of(&w, &found, f), data).unwrap();
        }
        if let Ok(summary) = w.summary() {
            let listed = summary.crashes.len() + summary.damaged.len();
            assert_eq!(listed, 1, "the one finding is listed once: {summary:?}");
            assert!(summary.divergences.len() + summary.unstable.len() + listed >= 1);
            let shown = summary.to_string();
            assert!(
                summary.has_findings()
                    || summary
                        .damaged
                        .iter()
                        .all(|d| d.kind == FindingKind::Unstable)
            );
            assert!(!shown.is_empty());
        } else {
            assert_eq!(which, 3, "only a damaged stats.json may stop `show`");
        }
        if let Ok(f) = daxdiff::repro::load_finding(&found) {
            let json = serde_json::to_string(&f).unwrap();
            let back: Finding = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
            let _ = daxdiff::repro::signal::Signal::of_finding(&found, &f);
        }
        let _ = daxdiff::bisect::signal::load_finding(&found);
        for side in ["outcome-a.json", "outcome-b.json"] {
            let text = std::fs::read(found.join(side)).unwrap();
            if let Ok(Some(o)) = serde_json::from_slice::<Option<Outcome>>(&text) {
                let json = serde_json::to_string(&o).unwrap();
                assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
            }
        }
    });
}

fn file_of(w: &Workdir, found: &Path, name: &str) -> PathBuf {
    if name == "stats.json" {
        w.root.join(name)
    } else {
        found.join(name)
    }
}
