//! Telling a hung program before its timeout: the kernel's own hung-task rule (a task in
//! uninterruptible sleep that has not been switched in since the last look) applied to every
//! task of the program's process group at once. When all of them have slept so, unwoken,
//! for a window, nothing in the program can wake them: the wait is on the kernel (or on a
//! reference the program itself holds, as a pipe of DAX pages does for an inode eviction
//! that waits for the pages to go idle), and the rest of the timeout would be spent waiting
//! for what cannot come.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use super::stacks::{group_members, stat_field};

/// How long every task of a program must sleep uninterruptibly without once being switched
/// in before the program is judged hung. Well above the longest single wait the programs
/// make legitimately (a delayed I/O on the slow disk or a wait for a pin to drop: 0.4–0.5 s,
/// 2 s for an fsync on the slow disk), and below the campaign's 10 s program timeout.
pub const HUNG_AFTER: Duration = Duration::from_secs(5);

/// One task's scheduling state: its state letter and its context switches so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskState {
    pub state: char,
    pub switches: u64,
}

/// The tasks of a group by thread id; exited tasks (zombies) are left out.
pub type Snapshot = BTreeMap<i32, TaskState>;

/// Reads the state of every live task of the process group `pgid`.
pub fn snapshot(pgid: i32) -> Snapshot {
    let mut snap = Snapshot::new();
    for pid in group_members(pgid) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let base = format!("/proc/{pid}/task/{tid}");
            let (Ok(stat), Ok(status)) = (
                fs::read_to_string(format!("{base}/stat")),
                fs::read_to_string(format!("{base}/status")),
            ) else {
                continue;
            };
            let Some(state) = stat_field(&stat, 3).and_then(|s| s.chars().next()) else {
                continue;
            };
            if matches!(state, 'Z' | 'X') {
                continue;
            }
            snap.insert(
                tid,
                TaskState {
                    state,
                    switches: context_switches(&status),
                },
            );
        }
    }
    snap
}

/// Voluntary plus involuntary context switches from a `/proc/…/status` text.
fn context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

/// Whether every task is in uninterruptible sleep (and there is one).
fn all_uninterruptible(snap: &Snapshot) -> bool {
    !snap.is_empty() && snap.values().all(|t| t.state == 'D')
}

/// Watches a program's group across samples.
#[derive(Debug, Default)]
pub struct HangWatch {
    /// Since when the group has looked the same (all tasks in D, the same switch counts).
    since: Option<(Instant, Snapshot)>,
}

impl HangWatch {
    /// Takes a sample at `now`; true when the group has been hung for `window`.
    pub fn observe(&mut self, snap: Snapshot, now: Instant, window: Duration) -> bool {
        if !all_uninterruptible(&snap) {
            self.since = None;
            return false;
        }
        match &self.since {
            Some((start, first)) if *first == snap => now.duration_since(*start) >= window,
            _ => {
                self.since = Some((now, snap));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(tasks: &[(i32, char, u64)]) -> Snapshot {
        tasks
            .iter()
            .map(|&(tid, state, switches)| (tid, TaskState { state, switches }))
            .collect()
    }

    #[test]
    fn a_group_asleep_in_d_and_unwoken_for_the_window_is_hung() {
        let w = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut h = HangWatch::default();
        let hung = snap(&[(10, 'D', 7), (11, 'D', 3)]);
        assert!(!h.observe(hung.clone(), t0, w));
        assert!(!h.observe(hung.clone(), t0 + Duration::from_secs(4), w));
        assert!(h.observe(hung, t0 + Duration::from_secs(5), w));
    }

    #[test]
    fn a_wakeup_a_running_task_or_a_new_task_starts_the_window_again() {
        let w = Duration::from_secs(5);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut h = HangWatch::default();
        assert!(!h.observe(snap(&[(10, 'D', 7)]), at(0), w));
        // Woken once (a delayed I/O completed, the next one waits): a new window.
        assert!(!h.observe(snap(&[(10, 'D', 8)]), at(4), w));
        assert!(!h.observe(snap(&[(10, 'D', 8)]), at(8), w));
        assert!(h.observe(snap(&[(10, 'D', 8)]), at(9), w));
        let mut h = HangWatch::default();
        assert!(!h.observe(snap(&[(10, 'D', 7), (11, 'S', 2)]), at(0), w));
        assert!(!h.observe(snap(&[(10, 'D', 7), (11, 'S', 2)]), at(6), w));
        assert!(!h.observe(snap(&[(10, 'D', 7)]), at(7), w));
        assert!(!h.observe(snap(&[(10, 'D', 7), (12, 'D', 0)]), at(10), w));
        assert!(h.observe(snap(&[(10, 'D', 7), (12, 'D', 0)]), at(15), w));
        assert!(!HangWatch::default().observe(Snapshot::new(), at(0), Duration::ZERO));
    }

    #[test]
    fn status_switch_counts_add_up() {
        let status = "Name:\tx\nState:\tD (disk sleep)\nvoluntary_ctxt_switches:\t12\n\
                      nonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(context_switches(status), 15);
    }

    #[test]
    fn a_sleeping_child_is_read_and_never_hung() {
        let _turn = super::super::FORK_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let mut h = HangWatch::default();
        let t0 = Instant::now();
        let mut seen = Snapshot::new();
        for i in 0..20 {
            seen = snapshot(pgid);
            if seen.values().any(|t| t.state == 'S') {
                break;
            }
            std::thread::sleep(Duration::from_millis(10 * i));
        }
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen.values().next().unwrap().state, 'S', "{seen:?}");
        assert!(!h.observe(seen.clone(), t0, Duration::ZERO));
        assert!(!h.observe(seen, t0 + Duration::from_secs(60), Duration::ZERO));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
