//! Report titles in syzkaller's style ("KASAN: use-after-free Read in dax_foo", "INFO: task
//! hung in bar"): the kind of report and the one function it is about, nothing run-specific.

use crate::frames::{self, Frame, SourceLocation};
use crate::guilty;
use crate::kinds::{self, ReportKind};
use regex::Regex;
use std::sync::LazyLock;

/// A report's title and the source position its header named, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Titled {
    pub title: String,
    pub location: Option<SourceLocation>,
}

/// Builds the title of a report of `kind` from its lines (prefixes stripped, first line the
/// first of the report) and its primary stack.
pub(crate) fn build(kind: ReportKind, lines: &[&str], stack: &[Frame]) -> Titled {
    let headers: Vec<kinds::Header> = lines.iter().filter_map(|l| kinds::detect(l)).collect();
    let of_kind = |k: ReportKind| headers.iter().filter(move |h| h.kind == k);
    let detail = |k: ReportKind| of_kind(k).find_map(|h| h.detail.clone());
    let location = |k: ReportKind| of_kind(k).find_map(|h| h.location.clone());
    let guilty = || guilty::guilty(stack).map(|f| f.name().to_string());
    let titled = |title: String, location: Option<SourceLocation>| Titled { title, location };
    let with_function = |base: &str, function: Option<String>| match function {
        Some(f) => format!("{base} in {f}"),
        None => base.to_string(),
    };

    match kind {
        ReportKind::Kasan => {
            let bug = detail(kind).unwrap_or_else(|| "bug".to_string());
            let mut base = format!("KASAN: {bug}");
            if let Some(access) = kasan_access(lines) {
                base = format!("{base} {access}");
            }
            let named: Vec<&Frame> = of_kind(kind).filter_map(|h| h.frame.as_ref()).collect();
            let function = named
                .iter()
                .find(|f| !f.inline && !guilty::is_infrastructure(f.name()))
                .map(|f| f.name().to_string())
                .or_else(guilty)
                .or_else(|| {
                    let fallback = named.iter().find(|f| !f.inline).or(named.first());
                    fallback.map(|f| f.name().to_string())
                });
            titled(with_function(&base, function), None)
        }
        ReportKind::Warning => {
            let function = warning_function(lines, &headers)
                .or_else(|| stack.first().map(|f| f.name().to_string()));
            let at = location(kind);
            let title = match (&function, &at) {
                (Some(f), _) => format!("WARNING in {f}"),
                (None, Some(at)) => format!("WARNING at {at}"),
                (None, None) => "WARNING".to_string(),
            };
            titled(title, at)
        }
        ReportKind::PercpuRef => {
            let release = detail(kind).map(|r| frames::base_name(&r).to_string());
            titled(
                with_function("percpu ref underflow", release),
                location(ReportKind::Warning),
            )
        }
        ReportKind::Refcount => titled(
            with_function("refcount bug", guilty()),
            location(ReportKind::Warning),
        ),
        ReportKind::Bug => {
            let at = location(kind);
            let title = match (guilty(), &at) {
                (Some(f), _) => format!("kernel BUG in {f}"),
                (None, Some(at)) => format!("kernel BUG at {at}"),
                (None, None) => "kernel BUG".to_string(),
            };
            titled(title, at)
        }
        ReportKind::BadPageState => {
            let what = detail(kind).unwrap_or_else(|| "state".to_string());
            titled(
                with_function(&format!("BUG: Bad page {what}"), guilty()),
                None,
            )
        }
        ReportKind::HungTask => titled(with_function("INFO: task hung", guilty()), None),
        ReportKind::RcuStall => titled(with_function("INFO: rcu detected stall", guilty()), None),
        ReportKind::Lockdep => {
            let finding = detail(kind).unwrap_or_else(|| "possible deadlock".to_string());
            let function = lockdep_function(lines).or_else(guilty);
            titled(with_function(&finding, function), None)
        }
        ReportKind::GeneralProtectionFault => {
            titled(with_function("general protection fault", guilty()), None)
        }
        ReportKind::PageFault => titled(
            with_function("BUG: unable to handle page fault", guilty()),
            None,
        ),
        ReportKind::NullPointerDereference => titled(
            with_function("BUG: kernel NULL pointer dereference", guilty()),
            None,
        ),
        ReportKind::Oops => titled(with_function("Oops", guilty()), None),
        ReportKind::Panic => {
            let reason = detail(kind).filter(|r| !r.is_empty());
            let title = match reason {
                Some(r) => format!("kernel panic: {r}"),
                None => "kernel panic".to_string(),
            };
            titled(title, None)
        }
    }
}

fn kasan_access(lines: &[&str]) -> Option<&'static str> {
    static ACCESS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\s*(Read|Write) of size \d+").expect("kasan access"));
    lines.iter().find_map(|l| {
        ACCESS.captures(l).map(|c| match &c[1] {
            "Read" => "Read",
            _ => "Write",
        })
    })
}

/// The function a WARNING line names, or, when the kernel put it on the next line (as
/// syzkaller's symbolizer does for inlined code), that line's.
fn warning_function(lines: &[&str], headers: &[kinds::Header]) -> Option<String> {
    let named: Vec<&Frame> = headers
        .iter()
        .filter(|h| h.kind == ReportKind::Warning)
        .filter_map(|h| h.frame.as_ref())
        .collect();
    if let Some(f) = named.iter().find(|f| !f.inline).or(named.first()) {
        return Some(f.name().to_string());
    }
    let at = lines
        .iter()
        .position(|l| kinds::detect(l).is_some_and(|h| h.kind == ReportKind::Warning))?;
    let next = lines.get(at + 1)?;
    Frame::parse(next).map(|f| f.name().to_string())
}

/// The function taking the lock lockdep complains about: the `at:` of the lock the task
/// "is trying to acquire", non-inline if printed both ways.
fn lockdep_function(lines: &[&str]) -> Option<String> {
    static AT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r", at: (?P<frame>.+)$").expect("lockdep at"));
    let from = lines
        .iter()
        .position(|l| l.contains("is trying to acquire lock") || l.contains(" takes:"))
        .map_or(0, |p| p + 1);
    let acquiring: Vec<Frame> = lines[from..]
        .iter()
        .skip_while(|l| !AT.is_match(l))
        .take_while(|l| AT.is_match(l))
        .filter_map(|l| {
            AT.captures(l)
                .and_then(|c| Frame::parse_in_trace(&c["frame"]))
        })
        .collect();
    acquiring
        .iter()
        .find(|f| !f.inline)
        .or(acquiring.first())
        .filter(|f| !guilty::is_infrastructure(f.name()))
        .map(|f| f.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title_of(kind: ReportKind, text: &str, stack: &[&str]) -> String {
        let lines: Vec<&str> = text.lines().collect();
        let stack: Vec<Frame> = stack
            .iter()
            .filter_map(|l| Frame::parse_in_trace(l))
            .collect();
        build(kind, &lines, &stack).title
    }

    #[test]
    fn kasan_takes_access_and_skips_helpers_in_the_header() {
        let text = "BUG: KASAN: slab-use-after-free in memcpy+0x1/0x2\nWrite of size 8 at addr ffff888012345678 by task a/1";
        assert_eq!(
            title_of(
                ReportKind::Kasan,
                text,
                &[
                    " kasan_report+0x1/0x2",
                    " memcpy+0x1/0x2",
                    " dax_insert_entry+0x1/0x2"
                ]
            ),
            "KASAN: slab-use-after-free Write in dax_insert_entry"
        );
    }

    #[test]
    fn warning_on_the_next_line_when_the_header_has_no_function() {
        let text = "WARNING: CPU: 0 PID: 8691 at lib/refcount.c:190\nrefcount_sub_and_test_checked lib/refcount.c:190 [inline]";
        assert_eq!(
            title_of(ReportKind::Warning, text, &[]),
            "WARNING in refcount_sub_and_test_checked"
        );
    }

    #[test]
    fn lockdep_recursive_locking_names_the_acquirer() {
        let text = "WARNING: possible recursive locking detected\nsyz/1 is trying to acquire lock:\nffff8880 (&mapping->i_mmap_rwsem){++++}-{3:3}, at: dax_iomap_fault+0x1/0x2\n\nbut task is already holding lock:";
        assert_eq!(
            title_of(ReportKind::Lockdep, text, &[]),
            "possible deadlock in dax_iomap_fault"
        );
    }

    #[test]
    fn fallbacks_when_no_function_is_known() {
        assert_eq!(
            title_of(ReportKind::Bug, "kernel BUG at mm/memremap.c:123!", &[]),
            "kernel BUG at mm/memremap.c:123"
        );
        assert_eq!(
            title_of(
                ReportKind::HungTask,
                "INFO: task a:1 blocked for more than 120 seconds.",
                &[]
            ),
            "INFO: task hung"
        );
        assert_eq!(
            title_of(
                ReportKind::Bug,
                "kernel BUG at mm/memremap.c:123!",
                &[" free_zone_device_page+0x1/0x2"]
            ),
            "kernel BUG in free_zone_device_page"
        );
    }
}
