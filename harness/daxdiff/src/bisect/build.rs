//! Kernels for git mode built by the user's own command, in one worktree of the repository
//! that each revision is checked out into (so builds are incremental), one output
//! directory per revision (so a resumed bisection builds nothing twice).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::git::{BuildFailed, StepKernel, StepKernels};
use crate::process_group::Group;

/// Runs `sh -c CMD` in the checkout with `DAXDIFF_REV` (the commit) and `DAXDIFF_OUT` (where
/// it must leave `bzImage`, and optionally `config` and `lib/modules/<release>/`).
pub struct CommandKernels {
    pub repo: PathBuf,
    pub command: String,
    /// Holds `src/` (the worktree) and `builds/<rev>/`.
    pub dir: PathBuf,
    /// Called with a line of what is happening (progress).
    pub status: Box<dyn Fn(String)>,
}

impl CommandKernels {
    fn checkout(&self, rev: &str) -> Result<PathBuf, String> {
        let src = self.dir.join("src");
        let git = |args: &[&str], cwd: &Path| {
            let out = Command::new("git")
                .arg("-C")
                .arg(cwd)
                .args(args)
                .output()
                .map_err(|e| format!("run git: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        if src.join(".git").exists() {
            git(&["checkout", "-q", "--detach", "--force", rev], &src)?;
        } else {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("create {}: {e}", self.dir.display()))?;
            let _ = git(&["worktree", "prune"], &self.repo);
            let s = src.to_string_lossy().to_string();
            git(&["worktree", "add", "-q", "--detach", &s, rev], &self.repo)?;
        }
        Ok(src)
    }

    /// The kernel of `rev` and the seconds spent building it now (`None`: built before).
    fn build(&self, rev: &str) -> Result<StepKernel, String> {
        let out = self.dir.join("builds").join(rev);
        let done = out.join(".done");
        let mut build_secs = None;
        if !done.exists() {
            let started = Instant::now();
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
            let src = self.checkout(rev)?;
            (self.status)(format!("{}: building", &rev[..rev.len().min(12)]));
            let log_path = out.join("build.log");
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("create {}: {e}", log_path.display()))?;
            // In a process group of its own that goes with us: a build left running after a
            // killed daxdiff would write into the checkout and output the next run uses.
            let mut cmd =
                Group::command("sh", &[OsStr::new("-c"), OsStr::new(self.command.as_str())]);
            cmd.current_dir(&src)
                .env("DAXDIFF_REV", rev)
                .env("DAXDIFF_OUT", &out)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log);
            let status = Group::start(cmd)
                .and_then(|mut g| g.wait())
                .map_err(|e| format!("run the build command: {e}"))?;
            if !status.success() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                return Err(format!(
                    "the build command exited with {status} ({}): {}",
                    log_path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            if !out.join("bzImage").is_file() {
                return Err("the build command left no $DAXDIFF_OUT/bzImage".into());
            }
            std::fs::write(&done, b"").map_err(|e| e.to_string())?;
            build_secs = Some(started.elapsed().as_secs_f64());
        }
        let bzimage = out.join("bzImage");
        let modules = std::fs::read_dir(out.join("lib/modules"))
            .ok()
            .and_then(|rd| rd.flatten().map(|e| e.path()).find(|p| p.is_dir()));
        let config = Some(out.join("config")).filter(|p| p.is_file());
        Ok(StepKernel {
            rev: rev.to_string(),
            bzimage_sha256: crate::cache::sha256_file(&bzimage).map_err(|e| format!("{e:#}"))?,
            bzimage,
            modules,
            config,
            build_secs,
        })
    }
}

impl StepKernels for CommandKernels {
    fn kernel_at(&mut self, rev: &str) -> Result<StepKernel, BuildFailed> {
        let started = Instant::now();
        self.build(rev).map_err(|reason| BuildFailed {
            rev: rev.to_string(),
            reason,
            secs: started.elapsed().as_secs_f64(),
        })
    }
}

/// The name a git revision's kernel goes by (its build, its guest image, its probe).
pub fn step_kernel_name(rev: &str) -> crate::catalogue::KernelName {
    crate::catalogue::KernelName(format!("bisect-{}", &rev[..rev.len().min(12)]))
}

/// Kernels for git mode built by `daxdiff kernel build` itself: the same fragments and
/// cache as every other build, one shared output directory per repository and
/// configuration (consecutive revisions rebuild only what changed), each revision's result
/// cached by content so a resumed bisection builds nothing twice.
pub struct KbuildKernels {
    pub cache: PathBuf,
    pub repo: PathBuf,
    pub base: crate::kbuild::BaseConfig,
    pub fragments: Vec<PathBuf>,
    pub jobs: usize,
    /// `--reuse-build`: the output directory and tree the first build starts from.
    pub seed_from: Option<(PathBuf, PathBuf)>,
    /// Each kernel gets the reference-count probe: a kernel built before, whose probe is
    /// not built yet while the shared output directory has moved on to another revision,
    /// is built again (the probe needs the revision's own tree).
    pub probe: bool,
}

impl KbuildKernels {
    /// Whether the kernel's probe can be had: built already, or its tree still holds it.
    fn probe_ready(&self, k: &StepKernel) -> bool {
        let Some(modules) = &k.modules else {
            return true;
        };
        let entry = crate::catalogue::KernelEntry {
            name: step_kernel_name(&k.rev),
            source: crate::catalogue::KernelSource::Local {
                bzimage: k.bzimage.clone(),
                modules: Some(modules.clone()),
                config: k.config.clone(),
                vmlinux: None,
                scheme: None,
            },
        };
        let Ok(kernel) = crate::images::KernelStore::new(&self.cache).get(&entry) else {
            return true;
        };
        crate::images::probe::ProbeBuilder::new(&self.cache).local_cached(&kernel)
            || crate::images::probe::check_tree_holds(&modules.join("build"), &kernel).is_ok()
    }
}

impl StepKernels for KbuildKernels {
    fn kernel_at(&mut self, rev: &str) -> Result<StepKernel, BuildFailed> {
        let k = self.build_rev(rev)?;
        if !self.probe || self.probe_ready(&k) {
            return Ok(k);
        }
        eprintln!(
            "kernel {}: building it again: the reference-count probe needs its tree, \
             which now holds another revision",
            step_kernel_name(rev)
        );
        // Through the cache entry's lock: another process may be building or using it.
        if let Some(entry) = k.bzimage.parent().and_then(crate::cache::Entry::at) {
            entry.remove().map_err(|e| BuildFailed {
                rev: rev.to_string(),
                reason: format!("remove {} to rebuild it: {e:#}", entry.dir.display()),
                secs: 0.0,
            })?;
        }
        self.build_rev(rev)
    }
}

impl KbuildKernels {
    fn build_rev(&mut self, rev: &str) -> Result<StepKernel, BuildFailed> {
        let req = crate::kbuild::BuildRequest {
            name: step_kernel_name(rev),
            source: crate::kbuild::SourceSpec::Git {
                repo: self.repo.clone(),
                rev: rev.to_string(),
            },
            patches: None,
            fixups: None,
            base: self.base.clone(),
            fragments: self.fragments.clone(),
            jobs: self.jobs,
            // Revisions between the ends may lack options the ends have.
            allow_unmet: true,
            config_only: false,
            register: false,
            seed_from: self.seed_from.clone(),
        };
        let started = Instant::now();
        let built =
            crate::kbuild::build(&self.cache, &req, &crate::catalogue::Catalogue::default())
                .map_err(|e| BuildFailed {
                    rev: rev.to_string(),
                    reason: format!("{e:#}"),
                    secs: started.elapsed().as_secs_f64(),
                })?;
        Ok(StepKernel {
            rev: rev.to_string(),
            bzimage: built.bzimage(),
            bzimage_sha256: built.bzimage_sha256.clone(),
            modules: Some(built.dir.join("modules/lib/modules").join(&built.release))
                .filter(|m| m.join("modules.dep").exists()),
            config: Some(built.dir.join("config")),
            // Checkout, configuration and make: what the step cost beyond its boots.
            build_secs: built.build_secs.map(|_| started.elapsed().as_secs_f64()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn builds_each_revision_once_and_reports_failures_with_the_log() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        git(r, &["init", "-q", "-b", "main"]);
        std::fs::write(r.join("src.c"), "one\n").unwrap();
        git(r, &["add", "."]);
        git(r, &["commit", "-q", "-m", "one"]);
        let one = git(r, &["rev-parse", "HEAD"]);
        std::fs::write(r.join("src.c"), "two\nbroken\n").unwrap();
        git(r, &["commit", "-q", "-am", "two"]);
        let two = git(r, &["rev-parse", "HEAD"]);
        let work = tempfile::tempdir().unwrap();
        let mut k = CommandKernels {
            repo: r.to_path_buf(),
            command: "if grep -q broken src.c; then echo 'src.c:2: error: broken'; exit 1; fi; \
                      cp src.c \"$DAXDIFF_OUT/bzImage\"; echo CONFIG_FS_DAX=y > \"$DAXDIFF_OUT/config\"; \
                      echo built >> ../builds.txt"
                .into(),
            dir: work.path().to_path_buf(),
            status: Box::new(|_| {}),
        };
        let a = k.kernel_at(&one).unwrap();
        assert_eq!(std::fs::read_to_string(&a.bzimage).unwrap(), "one\n");
        assert!(a.config.is_some() && a.modules.is_none());
        assert_eq!(a.bzimage_sha256.len(), 64);
        assert!(a.build_secs.is_some());
        let again = k.kernel_at(&one).unwrap();
        assert_eq!(
            again.build_secs, None,
            "a built revision counted as a build"
        );
        assert_eq!(
            StepKernel {
                build_secs: a.build_secs,
                ..again
            },
            a
        );
        assert_eq!(
            std::fs::read_to_string(work.path().join("builds.txt")).unwrap(),
            "built\n",
            "a built revision was built again"
        );
        let e = k.kernel_at(&two).unwrap_err();
        assert!(e.reason.contains("src.c:2: error: broken"), "{e}");
        // The user's checkout is untouched.
        assert_eq!(git(r, &["rev-parse", "HEAD"]), two);
        assert_eq!(
            std::fs::read_to_string(r.join("src.c")).unwrap(),
            "two\nbroken\n"
        );
    }
}
