//! The serial console: read from QEMU, stamped with host time, written to a log, and watched
//! for init's markers and for signs that the kernel died.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest line kept in memory (bytes): the rest goes only to the log file.
pub const MAX_LINE: usize = 64 * 1024;

/// The console text kept in memory (bytes): past it the oldest half is dropped (the log file
/// keeps everything). A guest that lives for days of programs, or a kernel that prints a
/// report per program, must not grow the controller without bound; what is looked at is
/// recent (a program's reports, the tail).
pub const MAX_KEPT: usize = 32 * 1024 * 1024;

/// One console line with the host time since QEMU started.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Duration,
    pub text: String,
}

#[derive(Default)]
struct State {
    /// Lines from number `dropped` on: line numbers (`from`, [`Console::len`]) count every
    /// line ever read.
    lines: Vec<Line>,
    dropped: usize,
    bytes: usize,
    closed: bool,
}

impl State {
    fn push(&mut self, line: Line, max_kept: usize) {
        self.bytes += line.text.len();
        self.lines.push(line);
        if self.bytes > max_kept {
            let n = self.lines.len() / 2;
            let freed: usize = self.lines.drain(..n).map(|l| l.text.len()).sum();
            self.bytes -= freed;
            self.dropped += n;
        }
    }

    /// The index into `lines` of line number `n` (clamped to what is kept).
    fn at(&self, n: usize) -> usize {
        n.saturating_sub(self.dropped).min(self.lines.len())
    }
}

/// A shared view of the console that any thread can wait on.
#[derive(Clone)]
pub struct Console {
    inner: Arc<(Mutex<State>, Condvar)>,
    start: Instant,
}

/// Lines that mean the kernel is dead or dying: bring-up stops at the first one.
pub const FATAL: &[&str] = &[
    "Kernel panic - not syncing",
    "BUG: kernel NULL pointer dereference",
    "BUG: unable to handle page fault",
    "general protection fault",
    "Oops: ",
    "BUG: KASAN:",
    "kernel BUG at",
];

impl Console {
    /// Starts a thread that copies `source` into `log` (each line prefixed with host time).
    pub fn spawn(
        source: impl Read + Send + 'static,
        log: &Path,
        start: Instant,
    ) -> std::io::Result<Console> {
        let file = fs::File::create(log)?;
        let c = Console {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            start,
        };
        let shared = c.clone();
        thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let mut r = BufReader::new(source);
                // Unbuffered: the log on disk keeps up with the guest (a killed controller
                // leaves every line it read).
                let mut split = Splitter::new(file, shared.start);
                let push = |line: Line| {
                    let (m, cv) = &*shared.inner;
                    m.lock().unwrap().push(line, MAX_KEPT);
                    cv.notify_all();
                };
                loop {
                    let chunk = match r.fill_buf() {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Ok([]) | Err(_) => break,
                        Ok(chunk) => chunk,
                    };
                    let used = match chunk.iter().position(|&b| b == b'\n') {
                        Some(nl) => {
                            split.take(&chunk[..nl]);
                            push(split.end());
                            nl + 1
                        }
                        None => {
                            split.take(chunk);
                            chunk.len()
                        }
                    };
                    r.consume(used);
                }
                if split.has_text() {
                    push(split.end());
                }
                let _ = split.log.flush();
                let (m, cv) = &*shared.inner;
                m.lock().unwrap().closed = true;
                cv.notify_all();
            })?;
        Ok(c)
    }

    /// Waits until a line satisfies `pred`, the console closes (QEMU exited) or `deadline`.
    pub fn wait_for(
        &self,
        from: usize,
        deadline: Instant,
        mut pred: impl FnMut(&Line) -> bool,
    ) -> Wait {
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap();
        let mut i = from.max(st.dropped);
        loop {
            // Lines dropped while we waited were looked at before they went.
            i = i.max(st.dropped);
            while i < st.dropped + st.lines.len() {
                let line = &st.lines[i - st.dropped];
                if pred(line) {
                    return Wait::Found(i, line.clone());
                }
                i += 1;
            }
            if st.closed {
                return Wait::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wait::TimedOut;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Lines read so far (including those no longer kept in memory).
    pub fn len(&self) -> usize {
        let st = self.inner.0.lock().unwrap();
        st.dropped + st.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let st = self.inner.0.lock().unwrap();
        let start = st.lines.len().saturating_sub(n);
        st.lines[start..]
            .iter()
            .map(|l| format!("[{:>9.3}] {}", l.at.as_secs_f64(), l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every line from number `from` on (those still kept in memory).
    pub fn since(&self, from: usize) -> Vec<Line> {
        let st = self.inner.0.lock().unwrap();
        st.lines[st.at(from)..].to_vec()
    }

    /// The first line at or after `from` that says the kernel died.
    pub fn first_fatal(&self, from: usize) -> Option<Line> {
        self.since(from).into_iter().find(|l| is_fatal(&l.text))
    }
}

/// Cuts the console's bytes into lines. A line keeps at most [`MAX_LINE`] bytes in memory
/// (a guest printing without newlines must not grow the controller without bound); the log
/// file gets every byte, each line stamped with host time.
struct Splitter<W: Write> {
    log: W,
    start: Instant,
    /// The current line, up to `MAX_LINE` bytes.
    line: Vec<u8>,
    /// When the current line went past `MAX_LINE`: from then on its bytes go straight to
    /// the log.
    cut_at: Option<Duration>,
    /// Bytes of the current line so far.
    total: usize,
    /// The end of what was streamed to the log that must wait for the next bytes: an
    /// incomplete UTF-8 sequence, or a `\r` that may end the line.
    carry: Vec<u8>,
}

impl<W: Write> Splitter<W> {
    fn new(log: W, start: Instant) -> Self {
        Splitter {
            log,
            start,
            line: Vec::new(),
            cut_at: None,
            total: 0,
            carry: Vec::new(),
        }
    }

    fn has_text(&self) -> bool {
        self.total > 0
    }

    /// Bytes of the current line (no newline among them).
    fn take(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        if self.cut_at.is_some() {
            self.stream(bytes);
            return;
        }
        let room = MAX_LINE - self.line.len();
        if bytes.len() <= room {
            self.line.extend_from_slice(bytes);
            return;
        }
        let at = self.start.elapsed();
        self.cut_at = Some(at);
        let _ = write!(self.log, "[{:>9.3}] ", at.as_secs_f64());
        let line = std::mem::take(&mut self.line);
        self.stream(&line);
        self.line = line;
        self.stream(bytes);
        self.line.extend_from_slice(&bytes[..room]);
    }

    /// Writes line bytes to the log as text, holding back what the next bytes may complete.
    fn stream(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        let mut hold = incomplete_utf8_tail(&self.carry);
        if self.carry[..self.carry.len() - hold].ends_with(b"\r") {
            hold += 1;
        }
        let done = self.carry.len() - hold;
        let _ = self
            .log
            .write_all(String::from_utf8_lossy(&self.carry[..done]).as_bytes());
        self.carry.drain(..done);
    }

    /// Ends the current line: logs it (or its rest) and returns what memory keeps of it.
    fn end(&mut self) -> Line {
        let line = std::mem::take(&mut self.line);
        let total = std::mem::take(&mut self.total);
        match self.cut_at.take() {
            None => {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                let at = self.start.elapsed();
                let _ = writeln!(self.log, "[{:>9.3}] {}", at.as_secs_f64(), text);
                Line { at, text }
            }
            Some(at) => {
                let carry = std::mem::take(&mut self.carry);
                let rest = String::from_utf8_lossy(&carry);
                let _ = writeln!(self.log, "{}", rest.trim_end_matches('\r'));
                let kept = &line[..line.len() - incomplete_utf8_tail(&line)];
                let mut text = String::from_utf8_lossy(kept).into_owned();
                let _ = write!(
                    text,
                    " [line cut: {} more bytes in the log]",
                    total - kept.len()
                );
                Line { at, text }
            }
        }
    }
}

/// How many bytes at the end of `b` start a UTF-8 sequence that the bytes do not finish.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let c = b[b.len() - back];
        if c & 0xc0 == 0x80 {
            continue;
        }
        let need = match c {
            0xf0.. => 4,
            0xe0.. => 3,
            0xc0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

pub fn is_fatal(text: &str) -> bool {
    FATAL.iter().any(|f| text.contains(f))
}

#[derive(Debug)]
pub enum Wait {
    Found(usize, Line),
    Closed,
    TimedOut,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logged_with_host_time_and_waitable() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let input =
            b"[    0.000000] Linux version 6.12\r\ndaxdiff-init: init-start\npartial".to_vec();
        let c = Console::spawn(std::io::Cursor::new(input), &log, Instant::now()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        match c.wait_for(0, deadline, |l| l.text.starts_with("daxdiff-init:")) {
            Wait::Found(i, l) => {
                assert_eq!(i, 1);
                assert_eq!(l.text, "daxdiff-init: init-start");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.wait_for(0, deadline, |l| l.text == "never"),
            Wait::Closed
        ));
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.lines().all(|l| l.starts_with('[')), "{text}");
        assert!(
            text.contains("] partial"),
            "an unterminated last line is kept"
        );
        assert!(c.tail(1).ends_with("partial"));
    }

    #[test]
    fn fatal_lines() {
        assert!(is_fatal(
            "[   12.1] Kernel panic - not syncing: VFS: Unable to mount root fs"
        ));
        assert!(is_fatal(
            "[    3.2] BUG: KASAN: use-after-free in dax_foo+0x1/0x2"
        ));
        assert!(!is_fatal(
            "[    1.0] nd_pmem namespace0.0: unable to guarantee persistence of writes"
        ));
    }

    #[test]
    fn an_endless_line_is_cut_in_memory_and_complete_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let long = "é".repeat(600 * 1024);
        let input = format!("first\n{long}\nnext\n");
        let c = Console::spawn(std::io::Cursor::new(input), &log, Instant::now()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(c.wait_for(0, deadline, |_| false), Wait::Closed));
        let lines = c.since(0);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.len(), 3, "{:?}", &texts[..]);
        assert_eq!((texts[0], texts[2]), ("first", "next"));
        assert!(
            texts[1].len() <= MAX_LINE + 100,
            "{} bytes kept",
            texts[1].len()
        );
        assert!(texts[1].starts_with("éé"));
        assert!(
            texts[1].ends_with(&format!(
                "[line cut: {} more bytes in the log]",
                long.len() - MAX_LINE
            )),
            "{}",
            &texts[1][texts[1].len() - 80..]
        );
        let text = fs::read_to_string(&log).unwrap();
        let logged: Vec<&str> = text.lines().collect();
        assert_eq!(logged.len(), 3);
        assert!(logged[1].starts_with('[') && logged[1].ends_with(&format!("] {long}")));
        assert!(logged[2].ends_with("] next"));
    }

    #[test]
    fn a_cut_line_logs_characters_and_line_ends_split_across_reads_whole() {
        let mut log = Vec::new();
        let mut split = Splitter::new(&mut log, Instant::now());
        let mut body = "a".repeat(MAX_LINE - 1).into_bytes();
        body.extend_from_slice("€ end\r".as_bytes());
        // Reads that cut the euro sign (3 bytes) right at the limit, and split "\r".
        for chunk in body.chunks(MAX_LINE) {
            split.take(chunk);
        }
        let line = split.end();
        assert_eq!(
            line.text,
            format!(
                "{} [line cut: 8 more bytes in the log]",
                "a".repeat(MAX_LINE - 1)
            )
        );
        let logged = String::from_utf8(log).unwrap();
        assert!(
            logged.ends_with(&format!("] {}€ end\n", "a".repeat(MAX_LINE - 1))),
            "{}",
            &logged[logged.len() - 20..]
        );
    }

    #[test]
    fn old_lines_are_dropped_past_the_limit_and_numbers_stay_absolute() {
        let mut st = State::default();
        let line = |i: usize| Line {
            at: Duration::ZERO,
            text: format!("line {i:04}"),
        };
        // 9 bytes a line, at most 90 kept.
        for i in 0..25 {
            st.push(line(i), 90);
        }
        assert!(st.bytes <= 90, "{}", st.bytes);
        assert_eq!(st.dropped + st.lines.len(), 25, "every line is counted");
        assert!(st.dropped > 0);
        assert_eq!(st.lines.last().unwrap().text, "line 0024");
        // Line number 24 is where it was; a number already dropped starts at the oldest kept.
        assert_eq!(st.lines[st.at(24)].text, "line 0024");
        assert_eq!(st.at(0), 0);
        assert_eq!(st.at(1000), st.lines.len());
    }
}
