//! A patch series as a reviewer receives it — an mbox from the list or a directory of
//! `.patch` files — applied one commit per patch, with a report of how each patch went.
//!
//! Each patch is tried with `git am` first. When that fails, a fixup written for it (a
//! forward-ported version of the patch, kept in the repository) is applied instead; without
//! one, `patch -F3` is tried, as a reviewer would, and the fuzz is reported. A patch that
//! applies in none of these ways stops the series with its subject and failing hunks.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::mail::{self, Received};

/// One patch of a series, in application order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patch {
    /// 1-based position in the series (the `NN` of `[PATCH NN/MM]` when the subject has it).
    pub index: usize,
    /// The subject without the `[PATCH …]` prefix.
    pub subject: String,
    /// The whole message (mbox) or file (`git format-patch` output or a bare diff).
    pub text: String,
}

/// What happened to one patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Applied {
    /// `git am` applied it as is.
    Clean,
    /// Applied by `patch -F3`; `detail` lists the hunks that needed fuzz or an offset.
    Fuzz { detail: Vec<String> },
    /// `git am` failed and the fixup `file` (a forward port kept in the repository) was applied.
    Fixup { file: String, failed: Vec<String> },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchReport {
    pub index: usize,
    pub subject: String,
    #[serde(flatten)]
    pub applied: Applied,
}

impl fmt::Display for PatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.applied {
            Applied::Clean => "clean".to_string(),
            Applied::Fuzz { detail } => format!("fuzz ({})", detail.join("; ")),
            Applied::Fixup { file, failed } => {
                format!("conflict ({}) resolved by fixup {file}", failed.join("; "))
            }
        };
        write!(
            f,
            "{:02} {:<60} {what}",
            self.index,
            truncate(&self.subject, 60)
        )
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// A patch that applies in no way daxdiff knows; the series stops there.
#[derive(Debug, thiserror::Error)]
#[error(
    "patch {index:02} \"{subject}\" does not apply:\n{}\nwrite a fixup for it (a forward-ported version of the patch with a \
     `Daxdiff-Fixup-For: {subject}` trailer) in a --fixups directory, or drop it from the series",
    hunks.join("\n")
)]
pub struct ApplyError {
    pub index: usize,
    pub subject: String,
    /// `patch --dry-run` lines naming the files and hunks that failed.
    pub hunks: Vec<String>,
}

/// The patches of an mbox, ordered by their `[PATCH NN/MM]` numbers; cover letters, replies
/// and messages without a diff are dropped.
pub fn from_mbox(text: &str) -> Result<Vec<Patch>> {
    let messages = mail::mbox_messages(text);
    if messages.is_empty() {
        bail!("no messages found (an mbox starts each message with a `From ` line)");
    }
    let mut patches = Vec::new();
    for (pos, raw) in messages.into_iter().enumerate() {
        let msg =
            Received::parse(raw).with_context(|| format!("message {} of the mbox", pos + 1))?;
        let Some(subject) = msg.subject.as_deref() else {
            continue;
        };
        if subject.to_ascii_lowercase().starts_with("re:") || !carries_diff(&msg) {
            continue;
        }
        let (number, clean) = split_subject(subject);
        // The raw message, not the decoded text: `git am` does its own decoding.
        patches.push((number.unwrap_or(pos), clean, msg.raw));
    }
    patches.sort_by_key(|p| p.0);
    Ok(number_in_order(patches))
}

/// Whether a received message holds a diff, as sent or once its transfer encoding is undone.
pub fn carries_diff(msg: &Received) -> bool {
    has_diff(&msg.raw) || has_diff(&msg.body)
}

/// Reads a directory of `*.patch` / `*.diff` files, in file-name order.
pub fn from_dir(dir: &Path) -> Result<Vec<Patch>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read patch directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch" || x == "diff"))
        .collect();
    files.sort();
    let mut patches = Vec::new();
    for (pos, f) in files.iter().enumerate() {
        let text = fs::read_to_string(f).with_context(|| format!("read patch {}", f.display()))?;
        if !has_diff(&text) {
            bail!("{} holds no diff", f.display());
        }
        let subject = Received::parse(text.clone())
            .ok()
            .and_then(|m| m.subject)
            .map(|s| split_subject(&s).1)
            .unwrap_or_else(|| f.file_name().unwrap().to_string_lossy().into_owned());
        patches.push((pos, subject, text));
    }
    Ok(number_in_order(patches))
}

/// Reads a series from an mbox file or a directory of patches.
pub fn load(path: &Path) -> Result<Vec<Patch>> {
    let patches = if path.is_dir() {
        from_dir(path)?
    } else {
        let bytes =
            fs::read(path).with_context(|| format!("read patch series {}", path.display()))?;
        from_mbox(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("{} is not an mbox", path.display()))?
    };
    if patches.is_empty() {
        bail!(
            "{} holds no patches (messages with a diff); pass an mbox of the series or a directory of .patch files",
            path.display()
        );
    }
    Ok(patches)
}

fn number_in_order(sorted: Vec<(usize, String, String)>) -> Vec<Patch> {
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, (_, subject, text))| Patch {
            index: i + 1,
            subject,
            text,
        })
        .collect()
}

pub fn has_diff(msg: &str) -> bool {
    msg.contains("\ndiff --git ") || (msg.contains("\n--- ") && msg.contains("\n+++ "))
}

/// `[PATCH v2 07/18] mm: fix x` → (Some(7), "mm: fix x").
pub fn split_subject(subject: &str) -> (Option<usize>, String) {
    let mut rest = subject.trim();
    let mut number = None;
    while let Some(tag_end) = rest.strip_prefix('[').and_then(|r| r.find(']')) {
        let tag = &rest[1..tag_end + 1];
        for word in tag.split_whitespace() {
            if let Some((n, _)) = word.split_once('/') {
                if let Ok(n) = n.parse() {
                    number = Some(n);
                }
            }
        }
        rest = rest[tag_end + 2..].trim_start();
    }
    (number, rest.to_string())
}

/// Fixups in a directory: each a `git format-patch` file whose message carries
/// `Daxdiff-Fixup-For: <subject of the original patch>`.
#[derive(Clone, Debug)]
pub struct Fixup {
    pub file: PathBuf,
    pub for_subject: String,
    pub text: String,
}

pub fn load_fixups(dir: &Path) -> Result<Vec<Fixup>> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read fixup directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    files.sort();
    for file in files {
        let text =
            fs::read_to_string(&file).with_context(|| format!("read fixup {}", file.display()))?;
        let Some(for_subject) = text
            .lines()
            .find_map(|l| l.strip_prefix("Daxdiff-Fixup-For:"))
            .map(|s| s.trim().to_string())
        else {
            bail!(
                "fixup {} has no `Daxdiff-Fixup-For: <original subject>` line saying which patch it resolves",
                file.display()
            );
        };
        out.push(Fixup {
            file,
            for_subject,
            text,
        });
    }
    Ok(out)
}

/// Applies `patches` on top of the git tree `repo`, one commit each.
pub fn apply(repo: &Path, patches: &[Patch], fixups: &[Fixup]) -> Result<Vec<PatchReport>> {
    let scratch = tempfile::tempdir().context("create a temporary directory")?;
    let mut reports = Vec::new();
    for p in patches {
        let file = scratch.path().join(format!("{:04}.patch", p.index));
        fs::write(&file, &p.text)?;
        let fixup = fixups.iter().find(|f| f.for_subject == p.subject);
        let applied = if git_am(repo, &file)? {
            Applied::Clean
        } else if let Some(fx) = fixup {
            let failed = dry_run_failures(repo, &file, scratch.path())?;
            let fx_file = scratch.path().join(format!("{:04}-fixup.patch", p.index));
            fs::write(&fx_file, &fx.text)?;
            if !git_am(repo, &fx_file)? {
                bail!(
                    "fixup {} for patch {:02} \"{}\" does not apply either: it must be made against the tree with patches 1..{} applied",
                    fx.file.display(),
                    p.index,
                    p.subject,
                    p.index - 1
                );
            }
            Applied::Fixup {
                file: fx.file.file_name().unwrap().to_string_lossy().into_owned(),
                failed,
            }
        } else {
            match patch_fuzzy(repo, p, &file, scratch.path())? {
                Ok(detail) => Applied::Fuzz { detail },
                Err(hunks) => {
                    return Err(ApplyError {
                        index: p.index,
                        subject: p.subject.clone(),
                        hunks,
                    }
                    .into())
                }
            }
        };
        let report = PatchReport {
            index: p.index,
            subject: p.subject.clone(),
            applied,
        };
        eprintln!("  {report}");
        reports.push(report);
    }
    Ok(reports)
}

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(repo).env("LC_ALL", "C");
    for (k, v) in [
        ("GIT_COMMITTER_NAME", "daxdiff"),
        ("GIT_COMMITTER_EMAIL", "daxdiff@localhost"),
    ] {
        c.env(k, v);
    }
    c
}

/// `git am` of one file; on failure the am session is aborted and the tree left as it was.
fn git_am(repo: &Path, file: &Path) -> Result<bool> {
    let out = git(repo)
        .args(["am", "--keep-cr", "-q"])
        .arg(file)
        .output()
        .context("run git am (is git installed?)")?;
    if out.status.success() {
        return Ok(true);
    }
    let _ = git(repo).args(["am", "--abort"]).output();
    Ok(false)
}

/// The lines of `patch --dry-run` output that name failures, with the file they are in.
pub fn failure_lines(patch_output: &str) -> Vec<String> {
    let mut file = String::new();
    let mut out = Vec::new();
    for l in patch_output.lines() {
        if let Some(f) = l
            .strip_prefix("checking file ")
            .or_else(|| l.strip_prefix("patching file "))
        {
            file = f.trim().to_string();
        } else if l.contains("FAILED")
            || l.contains("Reversed (or previously applied)")
            || l.starts_with("can't find file")
        {
            out.push(format!("{file}: {}", l.trim()));
        }
    }
    out
}

fn dry_run_failures(repo: &Path, file: &Path, scratch: &Path) -> Result<Vec<String>> {
    let diff = split_diff(file, scratch)?;
    let out = run_patch(repo, &diff, &["--dry-run", "-F0"])?;
    Ok(failure_lines(&out.1))
}

/// `patch -p1 -F3`, committed with the mail's author, date and message. Ok(fuzz details) or
/// Err(failing hunks); on failure nothing is changed.
fn patch_fuzzy(
    repo: &Path,
    p: &Patch,
    file: &Path,
    scratch: &Path,
) -> Result<std::result::Result<Vec<String>, Vec<String>>> {
    let diff = split_diff(file, scratch)?;
    let (ok, text) = run_patch(repo, &diff, &["--dry-run", "-F3"])?;
    if !ok {
        return Ok(Err(failure_lines(&text)));
    }
    let (ok, text) = run_patch(repo, &diff, &["-F3", "--no-backup-if-mismatch"])?;
    if !ok {
        bail!("patch -F3 applied in a dry run but not for real:\n{text}");
    }
    let mut detail = Vec::new();
    let mut file_name = String::new();
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("patching file ") {
            file_name = f.trim().to_string();
        } else if l.contains("with fuzz") || l.contains("offset") {
            detail.push(format!("{file_name}: {}", l.trim()));
        }
    }
    let info = mailinfo(file, scratch)?;
    // Forced: Debian's source tarballs ship a .gitignore that ignores everything at the top
    // level, which would leave a file the patch creates out of the commit (and out of the
    // index the next patch's `git am` applies to).
    let add = git(repo).args(["add", "-A", "-f"]).status()?;
    if !add.success() {
        bail!("git add failed after applying patch {:02}", p.index);
    }
    let msg = scratch.join("msg.txt");
    fs::write(&msg, format!("{}\n\n{}", p.subject, info.body))?;
    let mut commit = git(repo);
    commit.args(["commit", "-q", "--no-verify", "-F"]).arg(&msg);
    if let Some(author) = &info.author {
        commit.arg(format!("--author={author}"));
    }
    if let Some(date) = &info.date {
        commit.arg(format!("--date={date}"));
    }
    let st = commit.status().context("run git commit")?;
    if !st.success() {
        bail!("git commit of patch {:02} failed", p.index);
    }
    Ok(Ok(detail))
}

struct MailInfo {
    author: Option<String>,
    date: Option<String>,
    body: String,
}

fn mailinfo(file: &Path, scratch: &Path) -> Result<MailInfo> {
    let msg = scratch.join("mi-msg");
    let patch = scratch.join("mi-patch");
    let out = Command::new("git")
        .args(["mailinfo", "-k"])
        .arg(&msg)
        .arg(&patch)
        .stdin(fs::File::open(file)?)
        .output()
        .context("run git mailinfo")?;
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .map(str::to_string)
    };
    let author = match (field("Author"), field("Email")) {
        (Some(a), Some(e)) => Some(format!("{a} <{e}>")),
        _ => None,
    };
    Ok(MailInfo {
        author,
        date: field("Date"),
        body: fs::read_to_string(&msg).unwrap_or_default(),
    })
}

/// The diff part of a mail or patch file, as `patch` wants it.
fn split_diff(file: &Path, scratch: &Path) -> Result<PathBuf> {
    let text = fs::read_to_string(file)?;
    let start = text
        .find("\ndiff --git ")
        .map(|i| i + 1)
        .or_else(|| text.find("\n--- ").map(|i| i + 1))
        .unwrap_or(0);
    let diff = scratch.join("diff-only.patch");
    fs::write(&diff, &text[start..])?;
    Ok(diff)
}

fn run_patch(repo: &Path, diff: &Path, extra: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("patch")
        .current_dir(repo)
        .args(["-p1", "--batch", "--forward", "-r", "-", "-i"])
        .arg(diff)
        .args(extra)
        .env("LC_ALL", "C")
        .output()
        .context("run patch (install it: apt-get install patch)")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, body: &str) -> String {
        format!(
            "From 0123 Mon Sep 17 00:00:00 2001\nFrom: A Dev <a@example.org>\nSubject: {subject}\nDate: Thu, 15 Sep 2022 20:35:00 -0700\n\n{body}\n"
        )
    }

    const DIFF: &str =
        "Body.\n---\n a | 1 +\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1,2 @@\n x\n+y\n";

    #[test]
    fn mbox_is_split_ordered_by_number_and_cover_letters_and_replies_dropped() {
        let mbox = [
            msg("[PATCH v2 02/03] fs: second", DIFF),
            msg("[PATCH v2 00/03] Fix the thing", "cover letter, no diff"),
            msg("Re: [PATCH v2 01/03] mm: first", DIFF),
            msg("[PATCH v2 01/03] mm: first", DIFF),
            msg("[PATCH v2 03/03]\n mm: folded subject", DIFF),
        ]
        .join("\n");
        let p = from_mbox(&mbox).unwrap();
        let subjects: Vec<_> = p.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(subjects, ["mm: first", "fs: second", "mm: folded subject"]);
        assert_eq!(p.iter().map(|p| p.index).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(p[0].text.contains("+y"));
    }

    #[test]
    fn mboxrd_quoting_is_undone() {
        let body = format!("{DIFF}\n>From the commit message\n");
        let p = from_mbox(&msg("[PATCH] one", &body)).unwrap();
        assert!(p[0].text.contains("\nFrom the commit message"));
        assert!(!p[0].text.contains(">From the commit"));
    }

    #[test]
    fn an_encoded_subject_is_decoded_and_the_raw_qp_mail_goes_to_git_am() {
        let repo = repo_with("a", "x=1\n");
        let mail = "From 0123 Mon Sep 17 00:00:00 2001\n\
From: =?UTF-8?q?Ren=C3=A9_M=C3=BCller?= <rene@example.org>\n\
Subject: [PATCH 1/1] =?UTF-8?q?a:_set_y_=E2=80=94_too?=\n\
Date: Thu, 15 Sep 2022 20:35:00 -0700\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
Sets y.\n\
---\n\
diff --git a/a b/a\n\
--- a/a\n\
+++ b/a\n\
@@ -1 +1,2 @@\n\
\x20x=3D1\n\
+y=3D2\n";
        let p = from_mbox(mail).unwrap();
        assert_eq!(p[0].subject, "a: set y — too");
        assert!(p[0].text.contains("+y=3D2"), "kept as sent for git am");
        let rep = apply(repo.path(), &p, &[]).unwrap();
        assert_eq!(rep[0].applied, Applied::Clean);
        assert_eq!(
            fs::read_to_string(repo.path().join("a")).unwrap(),
            "x=1\ny=2\n"
        );
        assert_eq!(log(repo.path()), ["a: set y — too"]);
    }

    #[test]
    fn text_without_from_lines_is_not_an_mbox() {
        assert!(from_mbox("just some text\n").is_err());
    }

    #[test]
    fn subjects_lose_every_bracket_tag() {
        assert_eq!(
            split_subject("[RFC][PATCH v3 12/25] fsdax: x"),
            (Some(12), "fsdax: x".into())
        );
        assert_eq!(split_subject("plain"), (None, "plain".into()));
    }

    #[test]
    fn patch_failures_name_file_and_hunk() {
        let out = "checking file mm/memremap.c\nHunk #2 FAILED at 502.\n1 out of 2 hunks FAILED\nchecking file mm/gup.c\n";
        assert_eq!(
            failure_lines(out),
            [
                "mm/memremap.c: Hunk #2 FAILED at 502.",
                "mm/memremap.c: 1 out of 2 hunks FAILED"
            ]
        );
    }

    fn repo_with(file: &str, content: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert!(git(r).args(["init", "-q"]).status().unwrap().success());
        fs::write(r.join(file), content).unwrap();
        git(r).args(["add", "-A"]).status().unwrap();
        let st = git(r)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "base",
            ])
            .status()
            .unwrap();
        assert!(st.success());
        d
    }

    fn log(repo: &Path) -> Vec<String> {
        let out = git(repo)
            .args(["log", "--format=%s", "--reverse"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(String::from)
            .collect()
    }

    #[test]
    fn series_applies_clean_fuzzy_and_by_fixup_one_commit_each() {
        let repo = repo_with("a", "1\n2\n3\n4\n5\n6\n7\n8\n");
        let r = repo.path();
        let clean = msg(
            "[PATCH 1/3] a: append nine",
            "Adds nine.\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -6,3 +6,4 @@\n 6\n 7\n 8\n+9\n",
        );
        // Context line "X" does not exist: git am refuses, patch -F3 applies with fuzz.
        let fuzzy = msg(
            "[PATCH 2/3] a: insert after two",
            "Inserts.\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,5 +1,6 @@\n X\n 2\n 3\n+3.5\n 4\n 5\n",
        );
        // Nothing matches: needs the fixup.
        let conflict = msg(
            "[PATCH 3/3] a: change a line that is not there",
            "Changes.\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n q\n-r\n+s\n t\n",
        );
        let patches = from_mbox(&[clean, fuzzy, conflict].join("\n")).unwrap();
        let fixup = Fixup {
            file: PathBuf::from("0003-fixup.patch"),
            for_subject: "a: change a line that is not there".into(),
            text: msg(
                "[PATCH] a: change a line that is not there",
                "Forward port.\n\nDaxdiff-Fixup-For: a: change a line that is not there\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n 1\n-2\n+two\n 3\n",
            ),
        };
        let rep = apply(r, &patches, &[fixup]).unwrap();
        assert_eq!(rep[0].applied, Applied::Clean);
        assert!(
            matches!(&rep[1].applied, Applied::Fuzz { detail } if !detail.is_empty()),
            "{:?}",
            rep[1]
        );
        assert!(
            matches!(&rep[2].applied, Applied::Fixup { failed, .. } if !failed.is_empty()),
            "{:?}",
            rep[2]
        );
        assert_eq!(
            fs::read_to_string(r.join("a")).unwrap(),
            "1\ntwo\n3\n3.5\n4\n5\n6\n7\n8\n9\n"
        );
        assert_eq!(log(r).len(), 3);
        assert_eq!(log(r)[1], "a: insert after two");
    }

    #[test]
    fn a_patch_that_does_not_apply_stops_with_subject_and_hunk() {
        let repo = repo_with("a", "1\n2\n3\n");
        let bad = msg(
            "[PATCH 1/1] a: impossible",
            "x\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,3 +1,3 @@\n q\n-r\n+s\n t\n",
        );
        let err = apply(repo.path(), &from_mbox(&bad).unwrap(), &[]).unwrap_err();
        let e = err.downcast_ref::<ApplyError>().expect("an ApplyError");
        assert_eq!(e.subject, "a: impossible");
        assert!(
            e.hunks.iter().any(|h| h.starts_with("a: Hunk #1 FAILED")),
            "{:?}",
            e.hunks
        );
        assert_eq!(
            fs::read_to_string(repo.path().join("a")).unwrap(),
            "1\n2\n3\n"
        );
    }

    #[test]
    fn a_file_created_with_fuzz_is_committed_despite_an_ignore_everything_gitignore() {
        // Debian's linux-source trees ignore everything at the top level.
        let repo = repo_with("a", "1\n2\n3\n4\n5\n");
        let r = repo.path();
        fs::write(r.join(".gitignore"), "/*\n!/debian/\n").unwrap();
        git(r).args(["add", "-f", ".gitignore"]).status().unwrap();
        let st = git(r)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(["commit", "-qm", "ignore"])
            .status()
            .unwrap();
        assert!(st.success());
        // Context line "X" is not in a: git am refuses, patch -F3 applies and creates b.
        let creates = msg(
            "[PATCH 1/2] b: new file",
            "New.\n---\ndiff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,5 +1,6 @@\n X\n 2\n 3\n+3.5\n 4\n 5\n\
             diff --git a/b b/b\nnew file mode 100644\n--- /dev/null\n+++ b/b\n@@ -0,0 +1 @@\n+one\n",
        );
        let edits = msg(
            "[PATCH 2/2] b: second line",
            "Edit.\n---\ndiff --git a/b b/b\n--- a/b\n+++ b/b\n@@ -1 +1,2 @@\n one\n+two\n",
        );
        let patches = from_mbox(&[creates, edits].join("\n")).unwrap();
        let rep = apply(r, &patches, &[]).unwrap();
        assert!(
            matches!(rep[0].applied, Applied::Fuzz { .. }),
            "{:?}",
            rep[0]
        );
        assert_eq!(rep[1].applied, Applied::Clean, "{:?}", rep[1]);
        let tracked = git(r).args(["ls-files", "b"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&tracked.stdout).trim(), "b");
        assert_eq!(fs::read_to_string(r.join("b")).unwrap(), "one\ntwo\n");
    }
}
