//! `daxdiff report --reply-to SERIES.mbox --campaign W`: gathers what a reply to the series'
//! cover letter says (the kernels, how the series applied, the suite, every finding of the
//! campaign with its triage and bisection) and writes it (`report::reply` renders it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::cli::ReportArgs;
use super::load_finding;
use super::state::Triage;
use crate::bisect::result::Bisection;
use crate::kbuild::series::{self, Patch, PatchReport};
use crate::kbuild::Built;
use crate::mail;
use crate::report::reply::{
    self, Class, Cover, Item, KernelLine, ReplyInput, SuiteTable, Verdicts,
};
use crate::setup::Env;
use crate::workdir::{FindingKind, Workdir};

pub fn run(env: &Env, args: &ReportArgs) -> Result<ExitCode> {
    let mbox = args.reply_to.as_ref().expect("--reply-to");
    let campaign = args
        .campaign
        .as_ref()
        .expect("--campaign (clap requires it)");
    // First, before any work: without a sender there is no message to write.
    let sender = mail::sender(args.from.as_deref())?;
    let text = std::fs::read(mbox).with_context(|| format!("read {}", mbox.display()))?;
    let text = String::from_utf8_lossy(&text);
    let cover = Cover::from_mbox(&text).with_context(|| mbox.display().to_string())?;
    let patches = series::from_mbox(&text).with_context(|| mbox.display().to_string())?;
    let verdicts = match &args.verdicts {
        Some(p) => Verdicts::parse(
            &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
            &p.display().to_string(),
        )?,
        None => Verdicts::default(),
    };
    let wd = Workdir::existing(campaign)?;
    let stats = wd.stats()?.with_context(|| {
        format!(
            "{} has no stats.json: not a fuzzing workdir (daxdiff fuzz --workdir)",
            campaign.display()
        )
    })?;
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for kind in [FindingKind::Divergence, FindingKind::Crash] {
        for (name, _) in wd.findings(kind)? {
            dirs.push((
                format!("{}/{name}", kind.dir()),
                campaign.join(kind.dir()).join(name),
            ));
        }
    }
    for d in &args.findings {
        let name = d
            .file_name()
            .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into());
        dirs.push((name, d.clone()));
    }
    let mut items = Vec::new();
    for (name, dir) in dirs {
        let mut it = item(&dir, name, &cover, &patches)?;
        it.classify(&verdicts);
        items.push(it);
    }
    for v in &verdicts.finding {
        if !items.iter().any(|i| i.finding.signature == v.signature) {
            eprintln!(
                "warning: a verdict names `{}`, which no finding has (`daxdiff show {}` lists them)",
                v.signature,
                campaign.display()
            );
        }
    }
    let unclassified = items
        .iter()
        .filter(|i| i.class == Class::Unclassified)
        .count();
    if unclassified > 0 {
        eprintln!(
            "note: {unclassified} finding(s) differ without one kernel alone showing a report; \
             they are listed as not yet classified until --verdicts says what they are"
        );
    }
    let env_kernel = |name: &str| -> Result<(KernelLine, Option<Built>)> {
        let entry = env.catalogue()?.get(name)?.clone();
        let k = crate::images::KernelStore::new(&env.cache).get(&entry)?;
        let built = built_record(&k.bzimage);
        let debug: Vec<&str> = ["KASAN", "KCOV"]
            .into_iter()
            .filter(|o| k.config_enabled(o) == Some(true))
            .collect();
        let mut origin = match &built {
            Some(b) => format!("built from {} with {}", b.source, b.compiler),
            None => format!("Debian package {}", k.version),
        };
        if !debug.is_empty() {
            origin.push_str(&format!(", {}", debug.join(" and ")));
        }
        Ok((
            KernelLine {
                name: name.to_string(),
                release: k.release.clone(),
                origin,
            },
            built,
        ))
    };
    let (base, _) = env_kernel(&stats.kernel_a)?;
    let (mut series_line, built_b) = env_kernel(&stats.kernel_b)?;
    let applied: Vec<PatchReport> = built_b.map(|b| b.patches).unwrap_or_default();
    if !applied.is_empty() {
        series_line
            .origin
            .push_str(&format!(", plus the {} patches", applied.len()));
    }
    let mut suite = Vec::new();
    for d in &args.suite {
        let p = d.join(crate::suite::report::JSON_FILE);
        let r: crate::suite::report::SuiteReport =
            serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| {
                format!("read {} (a `daxdiff suite --out` directory)", p.display())
            })?)
            .with_context(|| format!("{} is damaged", p.display()))?;
        suite.push(SuiteTable {
            table: r.mail_table(&["base", "series"]),
            ndctl: r.ndctl_version.clone(),
            tests: r.tests_run(),
        });
    }
    let note = match &args.note {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("read the note {} (--note)", p.display()))?,
        ),
        None => None,
    };
    let message = reply::message(
        &ReplyInput {
            cover: &cover,
            base,
            series: series_line,
            patches: &applied,
            suite,
            stats: Some(&stats),
            items: &items,
            note,
        },
        &sender,
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| campaign.join("reply.eml"));
    crate::cache::write_atomic(&out, &message.to_bytes())?;
    if args.json {
        let names =
            |l: &[crate::mail::Mailbox]| l.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        crate::output::print(
            crate::output::Schema::Report,
            &serde_json::json!({
                "reply": out,
                "from": message.from.to_string(),
                "to": names(&message.to),
                "cc": names(&message.cc),
                "subject": message.subject,
                "in_reply_to": message.in_reply_to.as_ref().map(|m| m.to_string()),
                "findings": items.len(),
                "text": message.body,
            }),
        )?;
    } else {
        print!("{}", message.preview());
        eprintln!("reply: {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A built kernel's record (source, compiler, how its series applied), kept beside its image.
fn built_record(bzimage: &Path) -> Option<Built> {
    let manifest = bzimage.parent()?.join("manifest.json");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).ok()?).ok()?;
    serde_json::from_str(m.get("facts")?.get("built")?.as_str()?).ok()
}

fn item(dir: &Path, name: String, cover: &Cover, patches: &[Patch]) -> Result<Item> {
    let finding = load_finding(dir)?;
    let triage = Triage::load(dir)?;
    let program = [super::MINIMIZED, "prog.txt"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_default();
    let bisect = dir.join("bisect.json");
    let (bisected, bisect_note) = if bisect.is_file() {
        let b = Bisection::load(&bisect)?;
        match &b.first_new {
            Some(p) => match patches.iter().find(|x| x.subject == p.title) {
                Some(x) => (
                    Some((cover.patch_name(x.index, &x.subject), b.confidence)),
                    None,
                ),
                None => (
                    None,
                    Some(format!(
                        "first {} at {} (\"{}\"), which is not a patch of this series",
                        if b.kind == crate::bisect::search::Kind::Fix {
                            "fixed"
                        } else {
                            "bad"
                        },
                        p.short(),
                        p.title
                    )),
                ),
            },
            None => (
                None,
                Some(format!(
                    "skipped revisions hide the patch; it is one of {}",
                    b.could_be
                        .iter()
                        .map(|p| format!("\"{}\"", p.title))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ),
        }
    } else {
        (None, None)
    };
    Ok(Item {
        class: Class::of(&finding),
        finding,
        dir: name,
        why: None,
        reliability: triage.reliability,
        minimized_differences: triage.differences,
        program,
        has_c: dir.join(super::creproducer::SOURCE).is_file(),
        not_shown_again: triage.not_shown_again,
        c_not_judged: triage.c_not_judged,
        bisected,
        bisect_note,
    })
}
