//! The report's bisection section: which kind, over what, the first bad (or first fixed)
//! kernel and the last one before it, how sure, what it cost, and each kernel tested.

use std::fmt::Write;

use crate::bisect::result::{short_label, Bisection, Mode};
use crate::bisect::search::Kind;
use crate::bisect::state::Role;

/// The report's line width.
pub const WIDTH: usize = 72;

/// `text` (one line) broken at spaces into lines of at most `width` columns (a word longer
/// than that stays whole), every line after the first indented by `indent` spaces. Spacing
/// within a line is kept, so table rows stay aligned.
pub fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut rest = text.trim_end().to_string();
    let lead = |l: &str| l.len() - l.trim_start().len();
    while rest.len() > width {
        let start = lead(&rest);
        // Bytes, not columns: a subject with non-ASCII letters wraps a little early.
        let mut end = width + 1;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let at = rest[..end]
            .rfind(' ')
            .filter(|&i| i > start)
            .or_else(|| rest[end..].find(' ').map(|i| i + end));
        let Some(at) = at else { break };
        out.push_str(rest[..at].trim_end());
        out.push('\n');
        rest = format!("{}{}", " ".repeat(indent), rest[at..].trim_start());
    }
    out.push_str(&rest);
    out.push('\n');
    out
}

/// `40s`, `2m30s`, `1h02m`: table cells that never wrap.
fn compact(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn kernel(b: &Bisection, label: &str, title: &str) -> String {
    match b.mode {
        Mode::Versions if title.is_empty() => label.to_string(),
        Mode::Versions => format!("{label} (Linux {title})"),
        Mode::Git => format!("{label} (\"{title}\")"),
    }
}

/// The section, wrapped at [`WIDTH`] columns, ending with a blank line.
pub fn render(b: &Bisection) -> String {
    let mut s = String::new();
    let over = match b.mode {
        Mode::Versions => format!("{} Debian kernel packages", b.candidates.len()),
        Mode::Git => match &b.repo {
            Some(r) => format!("the commits of a git tree ({r})"),
            None => "the commits of a git tree".into(),
        },
    };
    let what = match b.kind {
        Kind::Regression => "where the behaviour starts",
        Kind::Fix => "where the behaviour stops",
    };
    s.push_str(&wrap(
        &format!(
            "Bisection ({}, {what}) over {over}, running {}; {}.",
            b.kind, b.program, b.signal
        ),
        WIDTH,
        0,
    ));
    let (old, new) = b.kind.old_new(&b.good, &b.bad);
    s.push_str(&wrap(
        &format!(
            "  from {} to {}",
            kernel(b, old.short(), &old.title),
            kernel(b, new.short(), &new.title)
        ),
        WIDTH,
        4,
    ));
    s.push('\n');
    match &b.first_new {
        Some(first) => {
            s.push_str(&wrap(
                &format!(
                    "  {}: {}",
                    b.first_term(),
                    kernel(b, &first.label, &first.title)
                ),
                WIDTH,
                4,
            ));
            if let Some(last) = &b.last_old {
                s.push_str(&wrap(
                    &format!(
                        "  {}: {}",
                        b.last_term(),
                        kernel(b, &last.label, &last.title)
                    ),
                    WIDTH,
                    4,
                ));
            }
        }
        None => {
            s.push_str(&wrap(
                &format!(
                    "  Kernels that could not be judged hide the {}; it is one of:",
                    b.first_term()
                ),
                WIDTH,
                4,
            ));
            for p in &b.could_be {
                s.push_str(&wrap(
                    &format!("    {}", kernel(b, p.short(), &p.title)),
                    WIDTH,
                    6,
                ));
            }
        }
    }
    if let Some(w) = b.identical_warning() {
        s.push_str(&wrap(&format!("  WARNING: {w}."), WIDTH, 4));
    }
    s.push_str(&wrap(
        &format!(
            "  Confidence {:.3} that every verdict the result rests on is right; {}.",
            b.confidence,
            b.spent()
        ),
        WIDTH,
        4,
    ));
    s.push('\n');
    s.push_str("Each kernel tested, in order (runs bad/good/skip, guests, time):\n");
    let label_width = b
        .records
        .iter()
        .map(|r| short_label(&r.label).len())
        .max()
        .unwrap_or(0);
    for r in &b.records {
        let role = match r.role {
            Role::GoodEnd => "good end",
            Role::BadEnd => "bad end",
            Role::Step => "step",
            Role::Parent => "parent",
        };
        let verdict = match r.role {
            Role::Parent => "-".to_string(),
            _ => b.kind.verdict_word(r.verdict),
        };
        let mut line = format!(
            "  {role:<8} {:<label_width$} {verdict:<6} {}/{}/{} {} boot(s) {}",
            short_label(&r.label),
            r.tally.bad,
            r.tally.good,
            r.tally.skip,
            r.boots,
            compact(r.seconds)
        );
        if let Some(secs) = r.build_secs {
            let _ = write!(line, ", built in {}", compact(secs));
        }
        if let Some(n) = &r.note {
            let _ = write!(line, " [{}]", n.lines().next().unwrap_or(""));
        }
        s.push_str(&wrap(&line, WIDTH, 11));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::result::tests::{git_regression, versions_fix};

    fn assert_wrapped(text: &str) {
        for l in text.lines() {
            assert!(l.len() <= WIDTH, "longer than {WIDTH}: {l:?}\n{text}");
        }
    }

    #[test]
    fn a_fix_over_debian_kernels_reads_first_fixed_and_last_broken() {
        let text = render(&versions_fix());
        assert_wrapped(&text);
        assert!(
            text.starts_with(
                "Bisection (fix, where the behaviour stops) over 4 Debian kernel\npackages, running uring_fixed_devdax.prog; bad if call 5 fails.\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  first fixed: 7.2.6-1~bpo13+1 (Linux 7.2.6+deb13-amd64)\n"),
            "{text}"
        );
        assert!(
            text.contains("  last broken: 6.12.116-1 (Linux 6.12.116+deb13-amd64)\n"),
            "{text}"
        );
        assert!(
            text.contains("  from 6.1.170-3 (Linux 6.1.0-47-amd64) to 7.3.4-1~bpo13+1"),
            "{text}"
        );
        assert!(text.contains("Confidence 0.971"), "{text}");
        assert!(text.contains("14 min 12 s in all"), "{text}");
        // Step verdicts in the fix's words, with run counts.
        assert!(
            text.contains("  step     7.2.6-1~bpo13+1 fixed  0/2/0 1 boot(s) 40s\n"),
            "{text}"
        );
        assert!(
            text.contains("  bad end  6.1.170-3       broken 2/0/0"),
            "{text}"
        );
        assert!(!text.contains("built in"), "{text}");
    }

    #[test]
    fn a_git_regression_names_the_commit_its_builds_and_the_identical_image() {
        let text = render(&git_regression());
        assert_wrapped(&text);
        assert!(
            text.contains(&format!(
                "  first bad commit: {} (\"dax: stop\n    taking a page reference in dax_insert_entry\")\n",
                "3".repeat(40)
            )),
            "{text}"
        );
        assert!(
            text.contains("  last good commit: 2222222222222222"),
            "{text}"
        );
        assert!(
            text.contains("WARNING: its kernel image is byte-identical"),
            "{text}"
        );
        assert!(text.contains("4 build(s) in 32 min 20 s"), "{text}");
        assert!(
            text.contains("  step     333333333333 bad    2/0/0 1 boot(s) 40s, built in 2m30s\n"),
            "{text}"
        );
    }

    #[test]
    fn wrap_breaks_at_spaces_and_keeps_long_words() {
        assert_eq!(wrap("aa bb cc", 5, 1), "aa bb\n cc\n");
        assert_eq!(wrap("a 0123456789", 5, 0), "a\n0123456789\n");
        assert_eq!(wrap("  x y", 72, 4), "  x y\n");
        assert_eq!(wrap("  a  b  cc", 7, 4), "  a  b\n    cc\n");
        assert_eq!(wrap("ab … cd", 4, 0), "ab\n…\ncd\n");
    }
}
