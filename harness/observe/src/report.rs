//! Finds every kernel report in a console log or kmsg dump: where each starts and ends,
//! its kind, title, signature, source position and primary stack.

use crate::console;
use crate::frames::{self, Frame, SourceLocation};
use crate::kinds::{self, Header, ReportKind};
use crate::signature::Signature;
use crate::title;
use serde::{Deserialize, Serialize};

/// One report the kernel printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub kind: ReportKind,
    /// syzkaller-style title: `WARNING in dax_insert_entry`, `INFO: task hung in …`.
    pub title: String,
    /// Dedup key derived from the title.
    pub signature: Signature,
    /// The report's lines, console prefixes removed, joined with `\n`.
    pub text: String,
    /// First and last line of the report in the input, 1-based and inclusive, as an editor
    /// numbers them.
    pub start_line: usize,
    pub end_line: usize,
    /// Source position named by the header (`fs/dax.c:460` of a WARNING, the file and line
    /// of a `kernel BUG at`), when the kernel printed one.
    pub location: Option<SourceLocation>,
    /// The stack the report is about: the faulting program counter first when printed,
    /// then the first call trace after the header (the blocked task's for a hung task, the
    /// access for KASAN, the `stack backtrace:` for lockdep).
    pub frames: Vec<Frame>,
    /// The console ended before the report did (no closing line, or no stack at all).
    pub truncated: bool,
}

/// Finds every report in `console` (a serial console log or `/dev/kmsg` dump, with or
/// without timestamp, caller-id, kmsg or host prefixes), in the order they were printed.
pub fn parse(console: &str) -> Vec<Report> {
    let lines = console::lines(console);
    let texts: Vec<&str> = lines.iter().map(|l| l.text).collect();
    segment(&texts)
        .into_iter()
        .map(|span| build(&lines, &texts, span))
        .collect()
}

/// Lines that are neither blank nor report-like, in a row, after which a report is over.
const GAP_LINES: usize = 3;
/// How far after its header a second header still belongs to the same splat (a WARNING
/// line after the `percpu ref` message, the non-inline repeat of a `BUG: KASAN` line).
const SAME_SPLAT: usize = 3;
/// How far after a finished report a `Kernel panic` line is that report's consequence.
const PANIC_REACH: usize = 5;
/// How far back from a header a `cut here` line still opens the same report.
const CUT_HERE_REACH: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inside the report: report-like lines extend it, a run of others ends it.
    Body,
    /// After the closing line: only what kernels print after it (registers again, the
    /// panic) extends it, and the first other line ends it.
    Tail,
}

#[derive(Debug, Clone)]
struct Span {
    kind: ReportKind,
    /// Index of the header that decided the kind.
    header: usize,
    start: usize,
    end: usize,
    phase: Phase,
    reached_end_of_input: bool,
    /// The kernel panicked as part of this report: nothing can follow, so it is complete.
    panicked: bool,
}

impl Span {
    fn open(header: &Header, at: usize, start: usize) -> Span {
        Span {
            kind: header.kind,
            header: at,
            start,
            end: at,
            phase: Phase::Body,
            reached_end_of_input: false,
            panicked: false,
        }
    }

    /// Takes in a header printed as part of this report, refining the kind when the new
    /// header says more (a `percpu ref` message inside a WARNING, a BUG after an Oops line).
    fn absorbs(&mut self, header: &Header, at: usize) -> bool {
        let near = at - self.header <= SAME_SPLAT;
        let absorbed = match (self.kind, header.kind) {
            (_, ReportKind::Panic | ReportKind::Oops) => true,
            (ReportKind::PercpuRef | ReportKind::Refcount, ReportKind::Warning) => near,
            (ReportKind::Warning, ReportKind::PercpuRef | ReportKind::Refcount) if near => {
                self.kind = header.kind;
                true
            }
            (ReportKind::Warning, ReportKind::Warning) | (ReportKind::Kasan, ReportKind::Kasan) => {
                near
            }
            (ReportKind::Oops, _) if near => {
                self.kind = header.kind;
                self.header = at;
                true
            }
            _ => false,
        };
        if absorbed {
            self.end = at;
            self.panicked |= header.kind == ReportKind::Panic;
        }
        absorbed
    }
}

fn segment(texts: &[&str]) -> Vec<Span> {
    let mut done: Vec<Span> = Vec::new();
    let mut current: Option<Span> = None;
    let mut gap = 0;
    for (i, &line) in texts.iter().enumerate() {
        if let Some(header) = kinds::detect(line) {
            if let Some(span) = current.as_mut() {
                if span.absorbs(&header, i) {
                    gap = 0;
                    continue;
                }
            } else if header.kind == ReportKind::Panic {
                if let Some(last) = done.last() {
                    if i - last.end <= PANIC_REACH {
                        let mut span = done.pop().expect("checked above");
                        span.end = i;
                        span.phase = Phase::Tail;
                        span.panicked = true;
                        current = Some(span);
                        continue;
                    }
                }
            }
            // The lines just before a header (`cut here`, the `=====` rule) open the new
            // report even when the previous one took them in as its own.
            let previous = current.take().or_else(|| done.pop());
            let floor = previous.as_ref().map_or(0, |p| p.header + 1);
            let start = start_of(texts, header.kind, i, floor);
            if let Some(mut previous) = previous {
                previous.end = previous.end.min(start - 1);
                while previous.end > previous.header && texts[previous.end].trim().is_empty() {
                    previous.end -= 1;
                }
                done.push(previous);
            }
            current = Some(Span::open(&header, i, start));
            gap = 0;
            continue;
        }
        let Some(span) = current.as_mut() else {
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let closes = kinds::is_end_marker(line)
            || (span.kind == ReportKind::Kasan && i > span.header && kinds::is_rule(line));
        if span.phase == Phase::Body && closes {
            span.end = i;
            span.phase = Phase::Tail;
            continue;
        }
        if kinds::is_report_body(line) {
            span.end = i;
            gap = 0;
            continue;
        }
        gap += 1;
        if span.phase == Phase::Tail || gap >= GAP_LINES {
            done.extend(current.take());
        }
    }
    if let Some(mut span) = current {
        span.reached_end_of_input = span.phase == Phase::Body;
        done.push(span);
    }
    done
}

/// Where the report whose header is at `at` starts: at a `cut here` line just before it,
/// at the `=====` rule that precedes KASAN and lockdep headers, or at the page dump that
/// precedes a `VM_BUG_ON_PAGE`; never before `floor`.
fn start_of(texts: &[&str], kind: ReportKind, at: usize, floor: usize) -> usize {
    let reach = at.saturating_sub(CUT_HERE_REACH).max(floor);
    if let Some(cut) = (reach..at).rev().find(|&j| kinds::is_cut_here(texts[j])) {
        return cut;
    }
    if at > floor && kinds::is_rule(texts[at - 1]) {
        return at - 1;
    }
    let mut start = at;
    if kind == ReportKind::Bug {
        while start > floor && kinds::is_page_dump(texts[start - 1]) {
            start -= 1;
        }
    }
    start
}

fn build(lines: &[console::ConsoleLine<'_>], texts: &[&str], span: Span) -> Report {
    let own = &texts[span.start..=span.end];
    let stack = primary_stack(&texts[span.header..=span.end]);
    let titled = title::build(span.kind, own, &stack);
    let truncated = span.reached_end_of_input
        && !span.panicked
        && (has_closing_line(span.kind) || stack.is_empty());
    Report {
        kind: span.kind,
        signature: Signature::from_title(&titled.title),
        title: titled.title,
        text: own.join("\n"),
        start_line: lines[span.start].number,
        end_line: lines[span.end].number,
        location: titled.location,
        frames: stack,
        truncated,
    }
}

/// Kinds whose complete report ends with a line of its own (`---[ end trace …`, the KASAN
/// `=====` rule, `---[ end Kernel panic …`).
fn has_closing_line(kind: ReportKind) -> bool {
    !matches!(
        kind,
        ReportKind::HungTask
            | ReportKind::RcuStall
            | ReportKind::Lockdep
            | ReportKind::BadPageState
    )
}

/// The program counter before the first call trace, then that trace's frames, including
/// the interrupted code's program counter where a trace crosses an interrupt.
fn primary_stack(lines: &[&str]) -> Vec<Frame> {
    let marker = lines.iter().position(|l| is_trace_marker(l));
    let before = marker.unwrap_or(lines.len());
    let mut stack: Vec<Frame> = lines[..before]
        .iter()
        .find_map(|l| Frame::parse_pc(l))
        .into_iter()
        .collect();
    let Some(marker) = marker else {
        // No "Call Trace:" line survived: the frames printed without one, if any.
        stack.extend(
            lines
                .iter()
                .skip_while(|l| Frame::parse(l).is_none())
                .map_while(|l| Frame::parse(l)),
        );
        return stack;
    };
    let trace = &lines[marker + 1..];
    for (i, line) in trace.iter().enumerate() {
        if let Some(pc) = Frame::parse_pc(line) {
            stack.push(pc);
        } else if let Some(frame) = Frame::parse_in_trace(line) {
            stack.push(frame);
        } else if frames::is_stack_context(line) {
            continue;
        } else if trace
            .get(i + 1)
            .is_some_and(|next| Frame::parse(next).is_some())
        {
            // A line another CPU printed into the middle of the trace.
            continue;
        } else {
            break;
        }
    }
    stack
}

fn is_trace_marker(line: &str) -> bool {
    matches!(
        line.trim().trim_end_matches(':'),
        "Call Trace" | "Call trace" | "Backtrace"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_report_do_not_reach_its_title_or_signature() {
        let console = "[    1.000000] Kernel panic - not syncing: \x1b[2Jbad\x07 state\n\
                       [    1.000100] ---[ end Kernel panic - not syncing: \x1b ]---\n";
        let reports = parse(console);
        assert_eq!(reports.len(), 1, "{reports:?}");
        let r = &reports[0];
        assert!(!r.title.chars().any(char::is_control), "{:?}", r.title);
        assert!(r.title.starts_with("kernel panic: "), "{:?}", r.title);
        let json = serde_json::to_string(r).unwrap();
        assert_eq!(&serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
