//! Kernel stacks of a hung program: every thread of every process in its process group
//! (the program, its second thread, forked children, ndctl/daxctl it started).

use std::fs;

/// Pids whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            if stat_field(&stat, 5).and_then(|f| f.parse::<i32>().ok()) == Some(pgid) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// Field `n` (1-based, as in proc(5)) of a stat line; the command name may contain spaces.
pub(super) fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let close = stat.rfind(')')?;
    match n {
        1 => stat.split_whitespace().next(),
        2 => stat.get(stat.find('(')? + 1..close),
        _ => stat[close + 1..].split_whitespace().nth(n - 3),
    }
}

/// A readable dump: one block per thread with its command, state and kernel stack.
pub fn dump_group(pgid: i32) -> String {
    let mut out = String::new();
    for pid in group_members(pgid) {
        let tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut tids = tids;
        tids.sort_unstable();
        for tid in tids {
            let base = format!("/proc/{pid}/task/{tid}");
            let stat = fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
            let comm = stat_field(&stat, 2).unwrap_or("?");
            let state = stat_field(&stat, 3).unwrap_or("?");
            let stack = fs::read_to_string(format!("{base}/stack"))
                .unwrap_or_else(|e| format!("(stack unreadable: {e})\n"));
            let wchan = fs::read_to_string(format!("{base}/wchan")).unwrap_or_default();
            out.push_str(&format!(
                "== pid {pid} tid {tid} ({comm}) state {state} wchan {wchan}\n{stack}"
            ));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stat_fields_survive_spaces_in_names() {
        let stat = "1234 (my prog) S 1 1234 1234 0 -1 4194560";
        assert_eq!(stat_field(stat, 1), Some("1234"));
        assert_eq!(stat_field(stat, 2), Some("my prog"));
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 5), Some("1234"));
    }

    #[test]
    fn dumps_a_sleeping_group() {
        let _turn = super::super::FORK_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(100));
        let dump = dump_group(pgid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            dump.contains(&format!("== pid {pgid} tid {pgid} (sleep) state S")),
            "{dump}"
        );
    }
}
