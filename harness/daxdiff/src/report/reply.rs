//! The reply to a patch series' cover letter: what testing the series against its base
//! showed, for the reviewers on the thread. A message threaded under the cover letter
//! (In-Reply-To and References its Message-ID, "Re:" its subject, to its author, Cc its
//! recipients), saying how the series applied, the suite side by side, and the findings
//! sorted by what they mean for the series: introduced, fixed, intended change, present in both.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::bisection::{wrap, WIDTH};
use crate::kbuild::series::{self, Applied, PatchReport};
use crate::mail::{self, Mailbox, MessageId, Outgoing, Received};
use crate::repro::state::Reliability;
use crate::workdir::{Finding, FindingKind, Stats};

/// The cover letter of a series, as far as a reply needs it (names and text decoded).
#[derive(Clone, Debug, PartialEq)]
pub struct Cover {
    pub subject: String,
    pub from: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub message_id: MessageId,
    /// The thread above the cover letter (a series sent in reply to its earlier version).
    pub references: Vec<MessageId>,
    pub date: String,
    /// The lines of its body that speak of tests (quoted in the reply).
    pub test_claims: Vec<String>,
    /// `[PATCH v2 NN/18]` with NN to fill in, from the subject.
    pub tag: Option<(String, usize)>,
}

impl Cover {
    /// The cover letter in an mbox: the message numbered 0 (`[PATCH v2 00/18]`), or failing
    /// that the first one that is not a reply and carries no diff.
    pub fn from_mbox(text: &str) -> Result<Cover> {
        let is_cover = |m: &Received| {
            m.subject.as_deref().is_some_and(|s| {
                !s.to_ascii_lowercase().starts_with("re:")
                    && (series::split_subject(s).0 == Some(0) || !series::carries_diff(m))
            })
        };
        let Some(msg) = mail::mbox_messages(text)
            .into_iter()
            .filter_map(|m| Received::parse(m).ok())
            .find(is_cover)
        else {
            bail!(
                "no cover letter in the mbox (a message `[PATCH … 00/NN]` or one without a diff); \
                 reply to a single patch with `daxdiff report` on its findings instead"
            );
        };
        let Some(message_id) = msg.message_id.clone() else {
            bail!("the cover letter has no Message-ID header: a reply cannot be threaded to it");
        };
        let test_claims = msg
            .body
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("ndctl") || l.contains("passes") || l.contains("tested")
            })
            .map(|l| l.trim_end().to_string())
            .collect();
        let subject = msg.subject.clone().unwrap_or_default();
        let addresses = |h: &str| msg.addresses(h).context("the cover letter");
        Ok(Cover {
            tag: patch_tag(&subject),
            subject,
            from: addresses("From")?,
            to: addresses("To")?,
            cc: addresses("Cc")?,
            message_id,
            references: msg.references.clone(),
            date: msg.date.clone().unwrap_or_default(),
            test_claims,
        })
    }

    /// `[PATCH v2 04/18] subject` for patch 4 (just the subject without a numbered cover).
    pub fn patch_name(&self, index: usize, subject: &str) -> String {
        match &self.tag {
            Some((prefix, total)) => {
                let w = total.to_string().len();
                format!("[{prefix} {index:0w$}/{total}] {subject}")
            }
            None => subject.to_string(),
        }
    }
}

/// `[PATCH v2 00/18] …` → ("PATCH v2", 18).
fn patch_tag(subject: &str) -> Option<(String, usize)> {
    let inner = subject.trim().strip_prefix('[')?.split(']').next()?;
    let (prefix, counter) = inner.rsplit_once(' ')?;
    let (_, total) = counter.split_once('/')?;
    Some((prefix.to_string(), total.parse().ok()?))
}

/// One `daxdiff suite` run of the pair, as the reply shows it.
pub struct SuiteTable {
    /// Side by side, as `SuiteReport::mail_table` writes it.
    pub table: String,
    pub ndctl: String,
    /// How many tests the run covered.
    pub tests: usize,
}

/// What a finding means for the series.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A regression or crash the series brings.
    Introduced,
    /// A bug of the base the series removes.
    Fixed,
    /// A change of behaviour the series means to make.
    Intended,
    /// The same behaviour on both kernels (a bug the series leaves alone).
    Both,
    /// The kernels differ and nobody has said yet whether that is intended.
    Unclassified,
    /// Triage showed the difference is not the kernels' (the test machine's, or the
    /// harness's, since fixed): listed last, with the reason, so nobody chases it.
    Artefact,
}

impl Class {
    fn heading(self) -> &'static str {
        match self {
            Class::Introduced => "Introduced by the series",
            Class::Fixed => "Fixed by the series",
            Class::Intended => "Changed, as the series intends",
            Class::Both => "Present on both kernels (not the series' doing)",
            Class::Unclassified => "Changed, not yet classified",
            Class::Artefact => "Set aside: not a difference of the kernels",
        }
    }

    /// What the finding's record alone says (kernel A is the base, B the series): a kernel
    /// report or crash on one side only is introduced or fixed, on both sides present in
    /// both; any other difference is a change someone has to judge.
    pub fn of(f: &Finding) -> Class {
        let first = f.differences.first().map(String::as_str).unwrap_or("");
        let only_a = f.signature.starts_with("report only on A") || first.starts_with("only on A");
        let only_b = f.signature.starts_with("report only on B") || first.starts_with("only on B");
        match (f.kind, only_a, only_b) {
            (_, true, false) => Class::Fixed,
            (_, false, true) => Class::Introduced,
            (FindingKind::Crash, _, _) => Class::Both,
            _ => Class::Unclassified,
        }
    }
}

/// The reviewer's word on findings (`--verdicts FILE`), which overrides `Class::of`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdicts {
    #[serde(default)]
    pub finding: Vec<Verdict>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// The finding's signature (as `daxdiff show` lists it).
    pub signature: String,
    pub class: Class,
    /// Why, for the reviewers (one or two sentences).
    pub why: String,
}

impl Verdicts {
    pub fn parse(text: &str, origin: &str) -> Result<Verdicts> {
        let v: Verdicts = toml::from_str(text).with_context(|| {
            format!(
                "{origin}: expected [[finding]] tables with signature, class \
                 (introduced|fixed|intended|both) and why"
            )
        })?;
        for f in &v.finding {
            if f.why.trim().is_empty() {
                bail!("{origin}: the verdict on `{}` needs a why", f.signature);
            }
        }
        Ok(v)
    }

    fn get(&self, signature: &str) -> Option<&Verdict> {
        self.finding.iter().find(|v| v.signature == signature)
    }
}

/// One finding as the reply presents it.
#[derive(Clone, Debug)]
pub struct Item {
    pub finding: Finding,
    /// Where its files are, relative to what the reply attaches (e.g. `divergences/…`).
    pub dir: String,
    pub class: Class,
    pub why: Option<String>,
    pub reliability: Option<Reliability>,
    /// A against B with the minimized program (empty before triage).
    pub minimized_differences: Vec<String>,
    /// The program (minimized when triage ran).
    pub program: String,
    pub has_c: bool,
    /// `daxdiff repro` reran the recorded program and it did not show the signal (what ran).
    pub not_shown_again: Option<String>,
    /// Why the C reproducer cannot show it alone (refcount, teardown and data findings).
    pub c_not_judged: Option<String>,
    /// The patch a bisection inside the series named, and its confidence.
    pub bisected: Option<(String, f64)>,
    /// A bisection ran but could not name one patch: why.
    pub bisect_note: Option<String>,
}

impl Item {
    pub fn classify(&mut self, verdicts: &Verdicts) {
        match verdicts.get(&self.finding.signature) {
            Some(v) => {
                self.class = v.class;
                self.why = Some(v.why.clone());
            }
            None => self.class = Class::of(&self.finding),
        }
    }
}

/// The base and the series kernel, in words.
#[derive(Clone, Debug)]
pub struct KernelLine {
    pub name: String,
    pub release: String,
    pub origin: String,
}

pub struct ReplyInput<'a> {
    pub cover: &'a Cover,
    pub base: KernelLine,
    pub series: KernelLine,
    pub patches: &'a [PatchReport],
    /// The suite's side-by-side tables: the run, then any later runs of some of its tests.
    pub suite: Vec<SuiteTable>,
    pub stats: Option<&'a Stats>,
    pub items: &'a [Item],
    /// The reviewer's own text (`--note FILE`), placed as written before the fuzzing figures:
    /// what the tool cannot know, e.g. reference counts at rest from `daxdiff refcounts`.
    pub note: Option<String>,
}

fn applied_summary(cover: &Cover, patches: &[PatchReport]) -> String {
    let mut s = String::new();
    let num = |p: &PatchReport| format!("{:02}", p.index);
    let clean: Vec<String> = patches
        .iter()
        .filter(|p| matches!(p.applied, Applied::Clean))
        .map(num)
        .collect();
    let fuzz: Vec<String> = patches
        .iter()
        .filter(|p| matches!(p.applied, Applied::Fuzz { .. }))
        .map(num)
        .collect();
    let fixed: Vec<&PatchReport> = patches
        .iter()
        .filter(|p| matches!(p.applied, Applied::Fixup { .. }))
        .collect();
    let line = format!(
        "How the series applied: {} of {} as posted, {} only with fuzz{}, {} needed a forward \
         port{}.",
        clean.len(),
        patches.len(),
        fuzz.len(),
        if fuzz.is_empty() {
            String::new()
        } else {
            format!(" ({})", fuzz.join(", "))
        },
        fixed.len(),
        if fixed.is_empty() {
            String::new()
        } else {
            " (below; each is attached under fixups/, its message says what was resolved and why)"
                .to_string()
        }
    );
    s.push_str(&wrap(&line, WIDTH, 0));
    for p in fixed {
        if let Applied::Fixup { file, failed } = &p.applied {
            let _ = write!(
                s,
                "{}",
                wrap(
                    &format!("  {}", cover.patch_name(p.index, &p.subject)),
                    WIDTH,
                    4
                )
            );
            let hunks: Vec<&String> = failed.iter().filter(|l| l.contains("FAILED at")).collect();
            let _ = write!(
                s,
                "{}",
                wrap(
                    &format!(
                        "    did not apply ({}); fixups/{file}",
                        hunks
                            .iter()
                            .map(|h| h.trim_end_matches('.'))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    WIDTH,
                    4
                )
            );
        }
    }
    s
}

fn elapsed(secs: f64) -> String {
    let m = (secs / 60.0).round() as u64;
    if m >= 60 {
        format!("{} h {:02} min", m / 60, m % 60)
    } else {
        format!("{m} min")
    }
}

fn item_text(n: usize, it: &Item) -> String {
    let mut s = String::new();
    let f = &it.finding;
    s.push_str(&wrap(&format!("{n}. {}", f.signature), WIDTH, 3));
    // The minimized program's differences say more than the first run's, when triage ran.
    let diffs = if it.minimized_differences.is_empty() {
        &f.differences
    } else {
        &it.minimized_differences
    };
    for d in diffs.iter().filter(|d| **d != f.signature).take(5) {
        s.push_str(&wrap(&format!("   base vs series: {d}"), WIDTH, 5));
    }
    if let Some(why) = &it.why {
        s.push_str(&wrap(&format!("   {why}"), WIDTH, 3));
    }
    if it.class == Class::Artefact {
        // Its reproducer and bisection would only mislead: the reason above is the point.
        s.push('\n');
        return s;
    }
    match &it.reliability {
        Some(r) => s.push_str(&wrap(
            &format!(
                "   Reproducibility{}: base shows its side in {}, the series in {}, both in \
                 the same run pair {}{}.",
                if r.fresh_boots {
                    " (each run on a freshly booted guest)"
                } else {
                    ""
                },
                r.a,
                r.b,
                r.pair,
                if r.reliable() {
                    ""
                } else {
                    " (below the threshold: not presented as a reproducer)"
                }
            ),
            WIDTH,
            3,
        )),
        None => s.push_str(&wrap(
            &match &it.not_shown_again {
                Some(what) => format!(
                    "   Seen in {} run(s) per kernel while fuzzing; not shown again when the \
                     program was rerun on its own ({what}, daxdiff repro): it may need what \
                     earlier programs in the campaign's guest left behind.",
                    f.runs
                ),
                None => format!(
                    "   Seen in {} run(s) per kernel while fuzzing; reliability not measured (no daxdiff repro run).",
                    f.runs
                ),
            },
            WIDTH,
            3,
        )),
    }
    match (&it.bisected, &it.bisect_note) {
        (Some((patch, confidence)), _) => s.push_str(&wrap(
            &format!(
                "   Bisected inside the series to {patch} (confidence {:.2}).",
                confidence
            ),
            WIDTH,
            3,
        )),
        (None, Some(note)) => s.push_str(&wrap(&format!("   Bisection: {note}"), WIDTH, 3)),
        (None, None) => s.push_str("   Not bisected.\n"),
    }
    if it.has_c {
        s.push_str(&wrap(
            &format!(
                "   Reproducer (attached, from {}/): repro.c, repro.sh, setup.sh.",
                it.dir
            ),
            WIDTH,
            3,
        ));
        if let Some(why) = &it.c_not_judged {
            s.push_str(&wrap(
                &format!("   The C program alone does not show it: {why}."),
                WIDTH,
                3,
            ));
        }
    } else {
        s.push_str(&wrap(
            &format!(
                "   Program: {}/prog.txt (daxdiff's text form, {} calls).",
                it.dir,
                it.program.lines().filter(|l| !l.trim().is_empty()).count()
            ),
            WIDTH,
            3,
        ));
    }
    s.push('\n');
    s
}

/// The reply as a message from `sender`: to the cover letter's author, Cc its recipients,
/// threaded under it, "Re:" its subject.
pub fn message(i: &ReplyInput, sender: &Mailbox) -> Outgoing {
    let c = i.cover;
    let subject = if c.subject.to_ascii_lowercase().starts_with("re:") {
        c.subject.clone()
    } else {
        format!("Re: {}", c.subject)
    };
    // Reply to all, as a mail client does: each address once, the sender not copied.
    let same = |a: &Mailbox, b: &Mailbox| a.addr.eq_ignore_ascii_case(&b.addr);
    let mut cc: Vec<Mailbox> = Vec::new();
    for m in c.to.iter().chain(&c.cc) {
        if !c.from.iter().chain(&cc).any(|x| same(x, m)) && !same(m, sender) {
            cc.push(m.clone());
        }
    }
    let mut references = c.references.clone();
    references.push(c.message_id.clone());
    Outgoing {
        from: sender.clone(),
        to: c.from.clone(),
        cc,
        subject,
        in_reply_to: Some(c.message_id.clone()),
        references,
        body: body(i),
        attachments: vec![],
    }
}

/// The text of the reply: the cover letter's test claims quoted, then what daxdiff found.
pub fn body(i: &ReplyInput) -> String {
    let c = i.cover;
    let mut s = String::new();
    if !c.test_claims.is_empty() {
        let author = c.from.first().map_or("the author", Mailbox::display_name);
        let _ = writeln!(s, "On {}, {} wrote:", c.date, author);
        for l in &c.test_claims {
            let _ = writeln!(s, "> {l}");
        }
        s.push('\n');
    }
    s.push_str(&wrap(
        "daxdiff, a differential fuzzer for DAX page reference counting, ran this series \
         against its base: the same programs on both kernels, in QEMU (TCG) with emulated \
         NVDIMMs carrying ext4 -o dax, xfs -o dax=always and a device-dax instance, and \
         compared system call results, kernel reports, page and pgmap reference counts after \
         teardown, whether teardown completes, and data read back.",
        WIDTH,
        0,
    ));
    s.push('\n');
    for (tag, k) in [("base:  ", &i.base), ("series:", &i.series)] {
        s.push_str(&wrap(
            &format!("  {tag} {} = Linux {} ({})", k.name, k.release, k.origin),
            WIDTH,
            10,
        ));
    }
    s.push('\n');
    if !i.patches.is_empty() {
        s.push_str(&applied_summary(c, i.patches));
        s.push('\n');
    }
    for (n, t) in i.suite.iter().enumerate() {
        if n == 0 {
            let _ = writeln!(
                s,
                "ndctl's dax tests (ndctl {}), base and series:\n",
                t.ndctl
            );
        } else {
            let _ = writeln!(
                s,
                "A later run of {} of these tests (ndctl {}), base and series:\n",
                t.tests, t.ndctl
            );
        }
        for l in t.table.lines() {
            if l.starts_with("  ") {
                // Why a test did not pass: prose, wrapped like the rest of the mail.
                s.push_str(&wrap(&format!("  {}", l.trim()), WIDTH, 6));
            } else {
                let _ = writeln!(s, "  {}", l.trim_end());
            }
        }
        s.push('\n');
    }
    if let Some(note) = &i.note {
        s.push_str(note.trim_end());
        s.push_str("\n\n");
    }
    if let Some(st) = i.stats {
        s.push_str(&wrap(
            &format!(
                "Fuzzing: {} over {} program pairs (plus {} re-runs to check stability), \
                 corpus {}; stable differences kept: {}, kernel-report and refcount findings: \
                 {}; programs set apart as unstable (they differ from run to run on one \
                 kernel): {}.",
                elapsed(st.elapsed_secs),
                st.execs,
                st.reruns,
                st.corpus,
                st.divergences,
                st.crashes,
                st.unstable
            ),
            WIDTH,
            0,
        ));
        s.push('\n');
    }
    let mut by_class: BTreeMap<Class, Vec<&Item>> = BTreeMap::new();
    for it in i.items {
        by_class.entry(it.class).or_default().push(it);
    }
    if i.items.is_empty() {
        s.push_str("No finding: the two kernels behaved the same.\n\n");
    }
    let mut n = 0;
    for (class, items) in &by_class {
        let _ = writeln!(s, "{} ({}):\n", class.heading(), items.len());
        for it in items {
            n += 1;
            s.push_str(&item_text(n, it));
        }
    }
    s.push_str(&wrap(
        "Each finding's directory holds the program (prog.txt; prog.min.txt when minimized), \
         both kernels' outcomes and consoles, and where triaged the C reproducer, the scripts \
         that set up the file systems and the QEMU command lines.",
        WIDTH,
        0,
    ));
    s.push_str("\n-- \ndaxdiff\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repro::state::Rate;

    const MBOX: &str = "From a@b Fri Sep 16 03:35:08 2022\n\
Subject: [PATCH v2 00/18] Fix the DAX-gup mistake\n\
From: Dan Williams <dan.j.williams@intel.com>\n\
To: akpm@linux-foundation.org\n\
Cc: Jan Kara <jack@suse.cz>,\n linux-mm@kvack.org\n\
Date: Thu, 15 Sep 2022 20:35:08 -0700\n\
Message-ID: <166329930818.2786261.6086109734008025807.stgit@dwillia2-xfh.jf.intel.com>\n\
\n\
Rework the DAX page reference scheme.\n\
\n\
This passes the \"ndctl:dax\" suite of tests from the ndctl project.\n\
\n\
From a@b Fri Sep 16 03:35:14 2022\n\
Subject: [PATCH v2 04/18] ext4: Add ext4_break_layouts() to the inode eviction path\n\
Message-ID: <p4@x>\n\
\n\
text\n\
---\n\
diff --git a/fs/ext4/inode.c b/fs/ext4/inode.c\n\
--- a/fs/ext4/inode.c\n\
+++ b/fs/ext4/inode.c\n";

    /// The reviewer whose reply it is.
    fn reviewer() -> Mailbox {
        Mailbox::parse("Zoë Reviewer <zoe@example.org>").unwrap()
    }

    /// The reply as written, read back: its headers (decoded, addresses as a person reads
    /// them) and its text.
    fn sent(i: &ReplyInput) -> (BTreeMap<String, String>, String) {
        let bytes = message(i, &reviewer()).to_bytes();
        let m = mailparse::parse_mail(&bytes).unwrap();
        let mut headers = BTreeMap::new();
        for h in &m.headers {
            let v = match h.get_key().as_str() {
                k @ ("From" | "To" | "Cc") => {
                    let r = Received::parse(String::from_utf8(bytes.clone()).unwrap()).unwrap();
                    let l = r.addresses(k).unwrap();
                    l.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
                _ => h.get_value(),
            };
            headers.insert(h.get_key(), v);
        }
        (headers, m.get_body().unwrap())
    }

    fn bare(cover: &Cover) -> ReplyInput<'_> {
        let kernel = |name: &str| KernelLine {
            name: name.into(),
            release: "6.1.192".into(),
            origin: "built locally".into(),
        };
        ReplyInput {
            cover,
            base: kernel("6.1-kasan"),
            series: kernel("6.1-kasan+dax-gup-v2"),
            patches: &[],
            suite: vec![],
            stats: None,
            items: &[],
            note: None,
        }
    }

    /// A cover letter as many mailers send it: the author's name RFC 2047-encoded, the text
    /// quoted-printable (soft line breaks, `=3D`, UTF-8 quotes).
    const QP_MBOX: &str = "From rene@example.org Fri Sep 16 03:35:08 2022\n\
From: =?UTF-8?q?Ren=C3=A9_M=C3=BCller?= <rene@example.org>\n\
To: akpm@linux-foundation.org\n\
Cc: \"Williams, Dan\" <dan.j.williams@intel.com>, zoe@example.org\n\
Subject: [PATCH v2 00/01] fsdax: =?UTF-8?q?keep_the_refcount_=E2=80=94_a_test?=\n\
Date: Thu, 15 Sep 2022 20:35:08 -0700\n\
Message-ID: <cover.1663299308@example.org>\n\
References: <v1.cover@example.org>\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
Rework the page reference scheme.\n\
\n\
This passes the =E2=80=9Cndctl:dax=E2=80=9D suite of tests from the ndctl proj=\n\
ect, tested with =3Ddax.\n";

    #[test]
    fn the_authors_encoded_name_and_qp_text_are_quoted_decoded() {
        let cover = Cover::from_mbox(QP_MBOX).unwrap();
        let (headers, text) = sent(&bare(&cover));
        assert!(
            text.starts_with(
                "On Thu, 15 Sep 2022 20:35:08 -0700, René Müller wrote:\n\
                 > This passes the “ndctl:dax” suite of tests from the ndctl project, tested \
                 with =dax.\n\n"
            ),
            "{text}"
        );
        assert_eq!(
            headers["Subject"],
            "Re: [PATCH v2 00/01] fsdax: keep the refcount — a test"
        );
        assert_eq!(headers["To"], "René Müller <rene@example.org>");
        // Reply to all, the reviewer not copied to herself.
        assert_eq!(
            headers["Cc"],
            "akpm@linux-foundation.org, Williams, Dan <dan.j.williams@intel.com>"
        );
    }

    #[test]
    fn the_reply_is_a_message_git_send_email_and_mail_clients_take() {
        let cover = Cover::from_mbox(QP_MBOX).unwrap();
        let (headers, _) = sent(&bare(&cover));
        assert_eq!(headers["From"], "Zoë Reviewer <zoe@example.org>");
        assert!(
            mailparse::dateparse(&headers["Date"]).is_ok(),
            "{}",
            headers["Date"]
        );
        let id = &headers["Message-ID"];
        assert!(id.starts_with('<') && id.ends_with("@example.org>"), "{id}");
        assert_ne!(id, "<cover.1663299308@example.org>");
        assert_eq!(headers["In-Reply-To"], "<cover.1663299308@example.org>");
        // The whole thread above, so threading survives a missing message.
        assert_eq!(
            headers["References"],
            "<v1.cover@example.org> <cover.1663299308@example.org>"
        );
        assert_eq!(headers["MIME-Version"], "1.0");
        let ct = mailparse::parse_content_type(&headers["Content-Type"]);
        assert_eq!(
            (ct.mimetype.as_str(), ct.charset.as_str()),
            ("text/plain", "utf-8")
        );
        assert_eq!(headers["Content-Transfer-Encoding"], "8bit");
    }

    fn finding(kind: FindingKind, sig: &str, diffs: &[&str]) -> Finding {
        Finding {
            kind,
            signature: sig.into(),
            kernel_a: "6.1-kasan".into(),
            kernel_b: "6.1-kasan+dax-gup-v2".into(),
            differences: diffs.iter().map(|d| d.to_string()).collect(),
            runs: 3,
            found_at_exec: 7,
        }
    }

    fn item(f: Finding) -> Item {
        Item {
            class: Class::of(&f),
            finding: f,
            dir: "divergences/x".into(),
            why: None,
            reliability: None,
            minimized_differences: vec![],
            program: "r0 = openat$ext4()\n".into(),
            has_c: false,
            not_shown_again: None,
            c_not_judged: None,
            bisected: None,
            bisect_note: None,
        }
    }

    #[test]
    fn the_cover_letter_is_found_and_its_test_claim_quoted() {
        let c = Cover::from_mbox(MBOX).unwrap();
        assert_eq!(c.subject, "[PATCH v2 00/18] Fix the DAX-gup mistake");
        assert_eq!(
            c.message_id.to_string(),
            "<166329930818.2786261.6086109734008025807.stgit@dwillia2-xfh.jf.intel.com>"
        );
        let names = |l: &[Mailbox]| l.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&c.cc),
            ["Jan Kara <jack@suse.cz>", "linux-mm@kvack.org"]
        );
        assert_eq!(
            c.test_claims,
            vec!["This passes the \"ndctl:dax\" suite of tests from the ndctl project."]
        );
        assert_eq!(
            c.patch_name(
                4,
                "ext4: Add ext4_break_layouts() to the inode eviction path"
            ),
            "[PATCH v2 04/18] ext4: Add ext4_break_layouts() to the inode eviction path"
        );
        assert!(Cover::from_mbox(
            &MBOX[MBOX.find("\nFrom a@b Fri Sep 16 03:35:14").unwrap() + 1..]
        )
        .is_err());
    }

    #[test]
    fn classes_follow_which_kernel_shows_it_and_verdicts_override() {
        let d = |sig: &str| finding(FindingKind::Divergence, sig, &[sig]);
        assert_eq!(
            Class::of(&d("report only on B: WARNING in dax_zap")),
            Class::Introduced
        );
        assert_eq!(
            Class::of(&d("report only on A: WARNING in dax_disassociate_entry")),
            Class::Fixed
        );
        assert_eq!(
            Class::of(&d("status completed vs timeout in ext4_break_layouts")),
            Class::Unclassified
        );
        let crash = finding(
            FindingKind::Crash,
            "general protection fault in check_vma",
            &["only on B: general protection fault in check_vma"],
        );
        assert_eq!(Class::of(&crash), Class::Introduced);
        let both = finding(FindingKind::Crash, "refcount bug in release_nodes", &[]);
        assert_eq!(Class::of(&both), Class::Both);

        let v = Verdicts::parse(
            "[[finding]]\nsignature = \"status completed vs timeout in ext4_break_layouts\"\n\
             class = \"introduced\"\nwhy = \"unlink of a pinned file hangs\"\n",
            "verdicts.toml",
        )
        .unwrap();
        let mut it = item(d("status completed vs timeout in ext4_break_layouts"));
        it.classify(&v);
        assert_eq!(it.class, Class::Introduced);
        assert!(Verdicts::parse(
            "[[finding]]\nsignature = \"x\"\nclass = \"introduced\"\nwhy = \"\"\n",
            "v.toml"
        )
        .is_err());
        assert!(Verdicts::parse(
            "[[finding]]\nsignature = \"x\"\nclass = \"bad\"\nwhy = \"y\"\n",
            "v.toml"
        )
        .is_err());
    }

    #[test]
    fn the_reply_threads_to_the_cover_and_sorts_findings_by_class() {
        let cover = Cover::from_mbox(MBOX).unwrap();
        let mut hang = item(finding(
            FindingKind::Divergence,
            "status completed vs timeout in ext4_break_layouts",
            &["status completed vs timeout in ext4_break_layouts"],
        ));
        hang.class = Class::Introduced;
        hang.reliability = Some(Reliability {
            a: Rate { k: 10, n: 10 },
            b: Rate { k: 10, n: 10 },
            pair: Rate { k: 10, n: 10 },
            threshold: 3,
            fresh_boots: true,
        });
        hang.c_not_judged = Some("only the teardown steps that daxdiff runs can show this".into());
        hang.bisected = Some((
            cover.patch_name(
                4,
                "ext4: Add ext4_break_layouts() to the inode eviction path",
            ),
            0.99,
        ));
        hang.has_c = true;
        let mut fixed = item(finding(
            FindingKind::Divergence,
            "report only on A: WARNING in dax_disassociate_entry",
            &["report only on A: WARNING in dax_disassociate_entry"],
        ));
        fixed.not_shown_again = Some("1 run(s) per kernel in a freshly booted guest".into());
        let patches = vec![PatchReport {
            index: 16,
            subject: "mm/memremap_pages: Support initializing pages to a zero reference count"
                .into(),
            applied: Applied::Fixup {
                file: "0016-mm-memremap_pages.patch".into(),
                failed: vec!["mm/memremap.c: Hunk #2 FAILED at 505.".into()],
            },
        }];
        let mut harness = item(finding(
            FindingKind::Divergence,
            "status completed vs crashed",
            &["status completed vs crashed"],
        ));
        harness.class = Class::Artefact;
        harness.why = Some("a munmap one page too long hit the executor's KCOV area".into());
        let items = vec![harness, fixed, hang];
        let (headers, text) = sent(&ReplyInput {
            cover: &cover,
            base: KernelLine {
                name: "6.1-kasan".into(),
                release: "6.1.192".into(),
                origin: "built locally".into(),
            },
            series: KernelLine {
                name: "6.1-kasan+dax-gup-v2".into(),
                release: "6.1.192+".into(),
                origin: "built locally".into(),
            },
            patches: &patches,
            suite: vec![
                SuiteTable {
                    table:
                        "test     base  series\nmmap.sh  pass  pass\n  6.1-kasan revoke-devmem: \
                            fail: exit 254: test_devmem: failed to open /dev/mem: No such file \
                            or directory\n"
                            .into(),
                    ndctl: "81-1".into(),
                    tests: 13,
                },
                SuiteTable {
                    table: "test           base  series\nrevoke-devmem  pass  pass\n".into(),
                    ndctl: "81-1".into(),
                    tests: 1,
                },
            ],
            stats: None,
            items: &items,
            note: Some("At rest, base: fsdax pages at 1; series: at 0.\n".into()),
        });
        assert_eq!(
            headers["Subject"],
            "Re: [PATCH v2 00/18] Fix the DAX-gup mistake"
        );
        assert!(text.contains("ndctl's dax tests (ndctl 81-1), base and series:\n\n  test"));
        let first = text.find("  mmap.sh  pass  pass").unwrap();
        let later = text
            .find("A later run of 1 of these tests (ndctl 81-1), base and series:\n\n  test")
            .unwrap();
        assert!(first < later && text[later..].contains("  revoke-devmem  pass  pass"));
        // The reviewer's note, as written, after the suite and before the findings.
        let note = text
            .find("\nAt rest, base: fsdax pages at 1; series: at 0.\n\n")
            .unwrap();
        assert!(later < note && note < text.find("Introduced by the series").unwrap());
        let cover_id = "<166329930818.2786261.6086109734008025807.stgit@dwillia2-xfh.jf.intel.com>";
        assert_eq!(headers["In-Reply-To"], cover_id);
        assert_eq!(headers["References"], cover_id);
        assert_eq!(headers["To"], "Dan Williams <dan.j.williams@intel.com>");
        assert_eq!(
            headers["Cc"],
            "akpm@linux-foundation.org, Jan Kara <jack@suse.cz>, linux-mm@kvack.org"
        );
        assert!(text.contains("> This passes the \"ndctl:dax\" suite"));
        let introduced = text.find("Introduced by the series (1):").unwrap();
        let fixed = text.find("Fixed by the series (1):").unwrap();
        assert!(introduced < fixed, "{text}");
        // Set aside after triage: last, with its reason, and no reproducer or bisection line.
        let aside = text
            .find("Set aside: not a difference of the kernels (1):")
            .unwrap();
        assert!(fixed < aside, "{text}");
        let tail = &text[aside..];
        assert!(tail.contains("KCOV area"), "{tail}");
        assert!(
            !tail.contains("Not bisected") && !tail.contains("reliability not measured"),
            "{tail}"
        );
        // Wrapping may break these anywhere between words.
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(
            "Bisected inside the series to [PATCH v2 04/18] ext4: Add ext4_break_layouts() to the inode eviction path (confidence 0.99)"
        ));
        assert!(flat.contains(
            "Reproducibility (each run on a freshly booted guest): base shows its side in 10/10"
        ));
        assert!(flat.contains(
            "The C program alone does not show it: only the teardown steps that daxdiff runs can show this."
        ));
        assert!(flat.contains("[PATCH v2 16/18] mm/memremap_pages"));
        assert!(flat.contains(
            "not shown again when the program was rerun on its own (1 run(s) per kernel in a freshly booted guest, daxdiff repro)"
        ));
        assert!(flat.contains("mm/memremap.c: Hunk #2 FAILED at 505"));
        // The body stays within the mail width.
        for l in text.lines() {
            assert!(l.len() <= WIDTH || !l.contains(' '), "too long: {l:?}");
        }
    }
}
