//! The serial console: read from QEMU, stamped with host time, written to a log, and watched
//! for init's markers and for signs that the kernel died.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One console line with the host time since QEMU started.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Duration,
    pub text: String,
}

#[derive(Default)]
struct State {
    lines: Vec<Line>,
    closed: bool,
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
        let mut file = fs::File::create(log)?;
        let c = Console {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            start,
        };
        let shared = c.clone();
        thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let mut r = BufReader::new(source);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\r', '\n'])
                                .to_string();
                            let at = shared.start.elapsed();
                            let _ = writeln!(file, "[{:>9.3}] {}", at.as_secs_f64(), text);
                            let (m, cv) = &*shared.inner;
                            m.lock().unwrap().lines.push(Line { at, text });
                            cv.notify_all();
                        }
                    }
                }
                let _ = file.flush();
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
        let mut i = from;
        loop {
            while i < st.lines.len() {
                if pred(&st.lines[i]) {
                    return Wait::Found(i, st.lines[i].clone());
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

    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().lines.len()
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

    /// Every line from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Line> {
        self.inner.0.lock().unwrap().lines[from..].to_vec()
    }

    /// The first line at or after `from` that says the kernel died.
    pub fn first_fatal(&self, from: usize) -> Option<Line> {
        self.since(from).into_iter().find(|l| is_fatal(&l.text))
    }
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
}
