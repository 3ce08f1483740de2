//! Running kbuild: at low priority, out of tree, with a progress bar whose length is the
//! object count of the last build of the same configuration, and the full log kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Build steps kbuild prints one line for (`  CC      mm/gup.o`).
fn is_step(line: &str) -> bool {
    let l = line.trim_start();
    ["CC ", "AS ", "LD ", "AR ", "CC [M] ", "LD [M] "]
        .iter()
        .any(|p| l.starts_with(p))
}

/// Variables that make the result depend on the sources and configuration only, so two
/// builds of the same tree are byte-identical (bisection flags culprits whose image equals
/// their parent's).
pub const REPRODUCIBLE: [(&str, &str); 4] = [
    ("KBUILD_BUILD_TIMESTAMP", "1970-01-01"),
    ("KBUILD_BUILD_USER", "daxdiff"),
    ("KBUILD_BUILD_HOST", "daxdiff"),
    ("KBUILD_BUILD_VERSION", "1"),
];

pub fn make_command(src: &Path, out: &Path, jobs: usize) -> Command {
    let mut c = Command::new("nice");
    c.args(["-n", "19", "make", "-C"])
        .arg(src)
        .arg(format!("O={}", out.display()))
        .arg("ARCH=x86_64")
        .arg(format!("-j{jobs}"))
        .env("LC_ALL", "C");
    for (k, v) in REPRODUCIBLE {
        c.env(k, v);
    }
    // A build outlives a killed controller otherwise (make ignores its closed pipe for as long
    // as its jobs run): it is told to stop, and stops its jobs in turn.
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Runs `make targets`, streaming steps into a progress bar and everything into `log`.
pub fn run(
    src: &Path,
    out: &Path,
    jobs: usize,
    targets: &[&str],
    log: &Path,
    estimates: &Path,
    estimate_key: &str,
) -> Result<()> {
    let mut known: BTreeMap<String, u64> = fs::read_to_string(estimates)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let pb = match known.get(estimate_key) {
        Some(&n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "kernel build {bar:30} {pos}/{len} steps, {elapsed_precise} (eta {eta}) {wide_msg}",
            )
            .unwrap(),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(
                "kernel build {spinner} {pos} steps, {elapsed_precise} {wide_msg}",
            )
            .unwrap(),
        ),
    };
    pb.enable_steady_tick(Duration::from_millis(500));
    let mut logf = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut child = make_command(src, out, jobs)
        .args(targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nice make (install make and gcc: see ci/setup.sh)")?;
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut steps = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        writeln!(logf, "{line}")?;
        if is_step(&line) {
            steps += 1;
            pb.set_position(steps);
            pb.set_message(line.split_whitespace().last().unwrap_or("").to_string());
        }
    }
    let status = child.wait()?;
    let err_lines = err_thread.join().unwrap_or_default();
    for l in &err_lines {
        writeln!(logf, "{l}")?;
    }
    pb.finish_and_clear();
    if !status.success() {
        let errors: Vec<&String> = err_lines
            .iter()
            .filter(|l| l.contains("error") || l.contains("Error"))
            .collect();
        let shown: Vec<&String> = if errors.is_empty() {
            err_lines.iter().rev().take(20).rev().collect()
        } else {
            errors.into_iter().take(20).collect()
        };
        bail!(
            "make {} failed ({status}):\n{}\nfull log: {}",
            targets.join(" "),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            log.display()
        );
    }
    if steps > 0 && known.get(estimate_key).is_none_or(|&n| n < steps) {
        known.insert(estimate_key.to_string(), steps);
        crate::cache::write_atomic(estimates, serde_json::to_string_pretty(&known)?.as_bytes())?;
    }
    Ok(())
}

/// `make -s kernelrelease` of a configured tree.
pub fn kernelrelease(src: &Path, out: &Path) -> Result<String> {
    let o = make_command(src, out, 1)
        .args(["-s", "kernelrelease"])
        .output()
        .context("run make kernelrelease")?;
    if !o.status.success() {
        bail!("make kernelrelease: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn steps_are_kbuild_action_lines() {
        assert!(super::is_step("  CC      mm/gup.o"));
        assert!(super::is_step("  CC [M]  lib/test_kasan.o"));
        assert!(!super::is_step("  HOSTCC  scripts/basic/fixdep"));
        assert!(!super::is_step("make[1]: Entering directory"));
    }
}
