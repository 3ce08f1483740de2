//! Git mode: `git bisect` (without touching the user's checkout) picks the revisions, a
//! [`StepKernels`] builds each one, and the judged reproducer answers good, bad or skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::result::Point;
use super::search::{Kind, StepVerdict, Tally};
use super::session::{Provenance, Session};
use super::state::{Role, StepRecord};
use super::trial::Tester;

/// A kernel built from one revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepKernel {
    /// The full commit id.
    pub rev: String,
    pub bzimage: PathBuf,
    /// sha256 of `bzimage`: a culprit built byte-identical to its parent is flagged.
    pub bzimage_sha256: String,
    /// `lib/modules/<release>` with `modules.dep`, when the kernel has modules.
    pub modules: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// Seconds this call spent building it; `None` when it was built before (cached).
    #[serde(default)]
    pub build_secs: Option<f64>,
}

/// A revision whose kernel could not be built: the step is skipped.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{rev}: the kernel did not build: {reason}")]
pub struct BuildFailed {
    pub rev: String,
    pub reason: String,
    /// Seconds spent before the build failed.
    pub secs: f64,
}

/// Builds (or finds) the kernel of a revision.
pub trait StepKernels {
    fn kernel_at(&mut self, rev: &str) -> Result<StepKernel, BuildFailed>;
}

/// How a git bisection ended. Commits are named with their subject lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GitBisected {
    /// The first commit like the new end: the first bad one of a regression, the fix of a
    /// fix bisection.
    pub first_new: Option<Point>,
    /// Its first parent (like the old end).
    pub last_old: Option<Point>,
    /// When skipped revisions hide the culprit: every revision it may be.
    pub could_be: Vec<Point>,
    /// The culprit's kernel image is byte-identical to its first parent's: its verdict
    /// cannot come from its own change (flaky reproducer, or a cause outside the image).
    pub identical_to_parent: Option<bool>,
    pub confidence: f64,
    pub steps: Vec<StepRecord>,
}

pub struct GitBisect {
    repo: PathBuf,
}

impl GitBisect {
    pub fn new(repo: &Path) -> GitBisect {
        GitBisect {
            repo: repo.to_path_buf(),
        }
    }

    fn git_output(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .context("run git (package git)")
    }

    fn git(&self, args: &[&str]) -> Result<String> {
        let out = self.git_output(args)?;
        if !out.status.success() {
            bail!(
                "git {} in {}: {}",
                args.join(" "),
                self.repo.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn commit(&self, rev: &str) -> Result<String> {
        self.git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .with_context(|| format!("{rev} is not a commit of {}", self.repo.display()))
    }

    fn subject(&self, rev: &str) -> String {
        self.git(&["log", "-1", "--format=%s", rev])
            .unwrap_or_default()
    }

    fn point(&self, rev: &str) -> Point {
        Point {
            label: rev.to_string(),
            title: self.subject(rev),
        }
    }

    /// Bisects between `good` and `bad` (for a fix the bad revision is the older one). The
    /// repository's checkout is not touched (`--no-checkout`); its bisect state is reset when
    /// this returns.
    pub fn run(
        &self,
        session: &mut Session,
        kernels: &mut dyn StepKernels,
        tester: &mut dyn Tester<StepKernel>,
        good: &str,
        bad: &str,
    ) -> Result<GitBisected> {
        let kind = session.kind;
        let good = self.commit(good)?;
        let bad = self.commit(bad)?;
        let (old, new) = kind.old_new(&good, &bad);
        if self
            .git(&["merge-base", "--is-ancestor", old, new])
            .is_err()
        {
            match kind {
                Kind::Regression => bail!(
                    "the good revision {good} is not an ancestor of the bad revision {bad} \
                     (bisecting where a bug stopped? add --fix)"
                ),
                Kind::Fix => bail!(
                    "a fix bisection needs the bad revision {bad} (still broken) to be an ancestor \
                     of the good revision {good} (fixed); for a regression drop --fix"
                ),
            }
        }
        self.clear_interrupted()?;
        let g = self.build_end(kernels, &good, "good end")?;
        session.provenance = Some(self.provenance(&g));
        let good_rec = session.end(tester, &g, &good, Role::GoodEnd)?;
        let b = self.build_end(kernels, &bad, "bad end")?;
        session.provenance = Some(self.provenance(&b));
        let bad_rec = session.end(tester, &b, &bad, Role::BadEnd)?;
        session.calibrate(&good_rec, &bad_rec)?;

        let (old_term, new_term) = git_terms(kind);
        let mut start = vec!["bisect".to_string(), "start".into()];
        if kind == Kind::Fix {
            start.push(format!("--term-old={old_term}"));
            start.push(format!("--term-new={new_term}"));
        }
        start.extend(["--no-checkout".into(), new.clone(), old.clone()]);
        let out = self.git_output(&start.iter().map(String::as_str).collect::<Vec<_>>())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            let _ = self.git(&["bisect", "reset"]);
            bail!(
                "git {}: {}{}",
                start.join(" "),
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.mark_ours()?;
        // Adjacent ends: git names the culprit at once and leaves BISECT_HEAD where the
        // checkout was, which is no step of this bisection.
        let result = match parse_bisect_step(&text, new_term) {
            Some(done) => Ok(done),
            None => self.drive(session, kernels, tester),
        };
        self.reset()?;
        let (first_new, could_be) = result?;
        let identical_to_parent = match &first_new {
            Some(c) => self.identical_to_parent(session, kernels, c)?,
            None => None,
        };
        let last_old = match &first_new {
            Some(c) => Some(self.point(&self.git(&["rev-parse", &format!("{c}^")])?)),
            None => None,
        };
        Ok(GitBisected {
            first_new: first_new.as_deref().map(|c| self.point(c)),
            last_old,
            could_be: could_be.iter().map(|c| self.point(c)).collect(),
            identical_to_parent,
            confidence: session.confidence(),
            steps: session.state.steps.clone(),
        })
    }

    /// The file in the repository's git directory that says the bisect in progress is one
    /// this tool started (and so may be reset when a later run finds it left behind).
    fn marker(&self) -> Result<PathBuf> {
        let p = PathBuf::from(self.git(&["rev-parse", "--git-path", MARKER])?);
        Ok(if p.is_absolute() {
            p
        } else {
            self.repo.join(p)
        })
    }

    fn mark_ours(&self) -> Result<()> {
        let m = self.marker()?;
        std::fs::write(&m, "started by daxdiff bisect\n")
            .with_context(|| format!("write {}", m.display()))
    }

    fn reset(&self) -> Result<()> {
        let _ = self.git(&["bisect", "reset"]);
        let m = self.marker()?;
        match std::fs::remove_file(&m) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", m.display()))
            }
            _ => Ok(()),
        }
    }

    /// A bisect in progress that an earlier daxdiff run started and did not finish (it was
    /// killed) is reset: its steps are in the bisection's state and are not redone. Anybody
    /// else's is left alone.
    fn clear_interrupted(&self) -> Result<()> {
        if !self.git_output(&["bisect", "log"])?.status.success() {
            return Ok(());
        }
        if !self.marker()?.exists() {
            bail!(
                "a git bisect is already in progress in {}; finish it with `git -C {} bisect reset`",
                self.repo.display(),
                self.repo.display()
            );
        }
        eprintln!(
            "bisect: resetting the git bisect an earlier daxdiff run left in {} (it was interrupted)",
            self.repo.display()
        );
        self.reset()
    }

    fn build_end(
        &self,
        kernels: &mut dyn StepKernels,
        rev: &str,
        what: &str,
    ) -> Result<StepKernel> {
        kernels
            .kernel_at(rev)
            .with_context(|| format!("the {what} must build"))
    }

    fn provenance(&self, k: &StepKernel) -> Provenance {
        Provenance {
            label: k.rev.clone(),
            subject: self.subject(&k.rev),
            bzimage_sha256: k.bzimage_sha256.clone(),
            build_secs: k.build_secs,
        }
    }

    /// Steps until git names the first bad commit, or the skipped ones that may be it.
    fn drive(
        &self,
        session: &mut Session,
        kernels: &mut dyn StepKernels,
        tester: &mut dyn Tester<StepKernel>,
    ) -> Result<(Option<String>, Vec<String>)> {
        loop {
            let rev = self.git(&["rev-parse", "BISECT_HEAD"])?;
            let verdict = match session.state.lookup(&rev) {
                Some(r) => r.verdict,
                None => match kernels.kernel_at(&rev) {
                    Ok(k) => {
                        session.provenance = Some(self.provenance(&k));
                        session.step(tester, &k, &rev, Role::Step)?.verdict
                    }
                    Err(e) => {
                        session.record(StepRecord {
                            label: rev.clone(),
                            role: Role::Step,
                            kernel: self.subject(&rev),
                            tally: Tally::default(),
                            verdict: StepVerdict::Skip,
                            confidence: 1.0,
                            boots: 0,
                            seconds: 0.0,
                            note: Some(e.to_string()),
                            bzimage_sha256: None,
                            build_secs: Some(e.secs),
                        })?;
                        StepVerdict::Skip
                    }
                },
            };
            let (old_term, new_term) = git_terms(session.kind);
            let word = match verdict {
                StepVerdict::Skip | StepVerdict::Retest => "skip",
                v if v == session.kind.old_verdict() => old_term,
                _ => new_term,
            };
            let out = self.git_output(&["bisect", word, &rev])?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if let Some(done) = parse_bisect_step(&text, new_term) {
                return Ok(done);
            }
            if !out.status.success() {
                bail!(
                    "git bisect {word} {rev}: {}{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    fn identical_to_parent(
        &self,
        session: &mut Session,
        kernels: &mut dyn StepKernels,
        culprit: &str,
    ) -> Result<Option<bool>> {
        let Some(mine) = session
            .state
            .lookup(culprit)
            .and_then(|r| r.bzimage_sha256.clone())
        else {
            return Ok(None);
        };
        let parent = self.git(&["rev-parse", &format!("{culprit}^")])?;
        let theirs = match session
            .state
            .lookup(&parent)
            .and_then(|r| r.bzimage_sha256.clone())
        {
            Some(h) => h,
            None => match kernels.kernel_at(&parent) {
                Ok(k) => {
                    session.record(StepRecord {
                        label: parent.clone(),
                        role: Role::Parent,
                        kernel: self.subject(&parent),
                        tally: Tally::default(),
                        verdict: session.kind.old_verdict(),
                        confidence: 0.0,
                        boots: 0,
                        seconds: 0.0,
                        note: Some("built only to compare kernel images".into()),
                        bzimage_sha256: Some(k.bzimage_sha256.clone()),
                        build_secs: k.build_secs,
                    })?;
                    k.bzimage_sha256
                }
                Err(_) => return Ok(None),
            },
        };
        Ok(Some(mine == theirs))
    }
}

/// Marks a git bisect as daxdiff's own, in the repository's git directory.
const MARKER: &str = "daxdiff-bisect-in-progress";

/// The words `git bisect` is driven with: (old, new). A fix bisection marks revisions
/// `broken` or `fixed`, so that git names the first fixed commit.
pub fn git_terms(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Regression => ("good", "bad"),
        Kind::Fix => ("broken", "fixed"),
    }
}

/// What `git bisect <term>|skip` printed: `Some((first new, []))` when it named the
/// culprit, `Some((None, candidates))` when only skipped commits are left, `None` to go on.
pub fn parse_bisect_step(text: &str, new_term: &str) -> Option<(Option<String>, Vec<String>)> {
    let done = format!(" is the first {new_term} commit");
    if let Some(line) = text.lines().find(|l| l.ends_with(&done)) {
        let sha = line.split_whitespace().next()?.to_string();
        return Some((Some(sha), vec![]));
    }
    if text.contains("only 'skip'ped commits left to test") {
        let shas = text
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 40 && l[..40].chars().all(|c| c.is_ascii_hexdigit()))
            .map(|l| l[..40].to_string())
            .collect();
        return Some((None, shas));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::session::Settings;
    use crate::bisect::signal::Signal;
    use crate::bisect::state::State;
    use crate::bisect::trial::{Classify, Stop, Trial};
    use crate::diff::{CallOutcome, Outcome, Ret};
    use daxdiff_prog::wire::Status;

    /// A real repository of 16 commits: `src.c` is what a "build" turns into the kernel
    /// image, `Kconfig` travels beside it (into the config), `README` goes nowhere.
    struct Repo {
        dir: tempfile::TempDir,
        commits: Vec<String>,
    }

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
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commit `i` gets `(file, content)` from `change(i)`.
    fn repo(change: impl Fn(usize) -> (&'static str, String)) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("src.c"), "v0\n").unwrap();
        std::fs::write(dir.path().join("Kconfig"), "\n").unwrap();
        std::fs::write(dir.path().join("README"), "\n").unwrap();
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "commit 0"]);
        let mut commits = vec![git(dir.path(), &["rev-parse", "HEAD"])];
        for i in 1..16 {
            let (file, content) = change(i);
            let path = dir.path().join(file);
            let mut old = std::fs::read_to_string(&path).unwrap();
            old.push_str(&content);
            std::fs::write(&path, old).unwrap();
            git(dir.path(), &["commit", "-q", "-am", &format!("commit {i}")]);
            commits.push(git(dir.path(), &["rev-parse", "HEAD"]));
        }
        Repo { dir, commits }
    }

    /// "Builds" a revision: its src.c becomes the image, its Kconfig the config.
    struct Builder {
        repo: PathBuf,
        out: tempfile::TempDir,
        built: Vec<String>,
    }

    impl StepKernels for Builder {
        fn kernel_at(&mut self, rev: &str) -> Result<StepKernel, BuildFailed> {
            self.built.push(rev.to_string());
            let src = git(&self.repo, &["show", &format!("{rev}:src.c")]);
            if src.lines().last() == Some("broken") {
                return Err(BuildFailed {
                    rev: rev.into(),
                    reason: "src.c:1: error: expected ';'".into(),
                    secs: 2.0,
                });
            }
            let dir = self.out.path().join(rev);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("bzImage"), &src).unwrap();
            let cfg = git(&self.repo, &["show", &format!("{rev}:Kconfig")]);
            std::fs::write(dir.join("config"), cfg).unwrap();
            Ok(StepKernel {
                rev: rev.into(),
                bzimage: dir.join("bzImage"),
                bzimage_sha256: crate::cache::sha256_file(&dir.join("bzImage")).unwrap(),
                modules: None,
                config: Some(dir.join("config")),
                build_secs: Some(1.0),
            })
        }
    }

    /// The program's call 0 returns 1 on a kernel whose image or config says "regression"
    /// and whose image does not say "fixed".
    struct Simulated;

    impl Tester<StepKernel> for Simulated {
        fn trial(&mut self, k: &StepKernel, classify: Classify, stop: Stop) -> Result<Trial> {
            let image = std::fs::read_to_string(&k.bzimage)?;
            let config = std::fs::read_to_string(k.config.as_ref().unwrap())?;
            let bad = (image.contains("regression") || config.contains("regression"))
                && !image.contains("fixed");
            let o = Outcome {
                status: Status::Completed,
                calls: vec![CallOutcome {
                    index: 0,
                    name: "io_uring_register$REGISTER_BUFFERS".into(),
                    ret: Ret::Value(bad as i64),
                    checksum: None,
                }],
                reports: vec![],
                hung_stack: vec![],
                detail: None,
                teardown: vec![],
                refcounts: None,
                integrity: vec![],
            };
            let mut tally = Tally::default();
            let mut outcomes = vec![];
            let decision = loop {
                tally.add(classify(&o));
                outcomes.push(o.clone());
                if let Some(d) = stop(tally, 1) {
                    break d;
                }
            };
            Ok(Trial {
                tally,
                decision,
                boots: 1,
                outcomes,
                kernel: k.rev.clone(),
                seconds: 0.0,
                note: None,
            })
        }
    }

    fn bisect(r: &Repo) -> (GitBisected, Vec<String>) {
        let mut b = Builder {
            repo: r.dir.path().to_path_buf(),
            out: tempfile::tempdir().unwrap(),
            built: vec![],
        };
        let (res, _) = bisect_with(r, &mut b, Kind::Regression, &r.commits[0], "main");
        (res, b.built)
    }

    fn bisect_with(
        r: &Repo,
        kernels: &mut dyn StepKernels,
        kind: Kind,
        good: &str,
        bad: &str,
    ) -> (GitBisected, Vec<StepRecord>) {
        let signal = Signal::BadIf(vec!["call 0 returns 1".parse().unwrap()]);
        let state = State::open(&r.dir.path().join(".git/daxdiff-bisect.json"), "k").unwrap();
        let mut session = Session::new(&signal, Settings::default(), state);
        session.kind = kind;
        // What progress printed, record by record.
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = seen.clone();
        session.on_record = Box::new(move |r| sink.borrow_mut().push(r.clone()));
        let res = GitBisect::new(r.dir.path())
            .run(&mut session, kernels, &mut Simulated, good, bad)
            .unwrap();
        // The bisection leaves no bisect state and the checkout where it was.
        assert!(!r.dir.path().join(".git/BISECT_START").exists());
        assert!(!r.dir.path().join(".git").join(MARKER).exists());
        assert_eq!(git(r.dir.path(), &["rev-parse", "HEAD"]), r.commits[15]);
        let seen = seen.borrow().clone();
        (res, seen)
    }

    #[test]
    fn adjacent_ends_name_the_bad_end_without_building_anything_else() {
        let r = repo(|i| match i {
            9 => ("src.c", "regression\n".into()),
            _ => ("src.c", format!("v{i}\n")),
        });
        let mut b = Builder {
            repo: r.dir.path().to_path_buf(),
            out: tempfile::tempdir().unwrap(),
            built: vec![],
        };
        let (res, _) = bisect_with(&r, &mut b, Kind::Regression, &r.commits[8], &r.commits[9]);
        assert_eq!(res.first_new.unwrap().label, r.commits[9]);
        assert_eq!(res.last_old.unwrap().label, r.commits[8]);
        assert_eq!(res.identical_to_parent, Some(false));
        // Only the two ends: not the checkout's HEAD (commit 15), which is outside them.
        assert_eq!(b.built, vec![r.commits[8].clone(), r.commits[9].clone()]);
    }

    #[test]
    fn finds_the_commit_that_changed_the_image() {
        let r = repo(|i| match i {
            9 => ("src.c", "regression\n".into()),
            10 => ("README", "docs\n".into()),
            _ => ("src.c", format!("v{i}\n")),
        });
        let (res, built) = bisect(&r);
        let first = res.first_new.as_ref().unwrap();
        assert_eq!(first.label, r.commits[9]);
        assert_eq!(first.title, "commit 9");
        assert_eq!(res.last_old.as_ref().unwrap().label, r.commits[8]);
        assert_eq!(res.identical_to_parent, Some(false));
        assert!(built.len() <= 2 + 4 + 1, "{} builds", built.len());
        assert!(res.confidence > 0.9);
    }

    #[test]
    fn a_culprit_with_the_parents_image_is_flagged() {
        // Commit 9 changes only the config: the image is the parent's, byte for byte.
        let r = repo(|i| match i {
            9 => ("Kconfig", "regression\n".into()),
            _ => ("src.c", format!("v{i}\n")),
        });
        let (res, _) = bisect(&r);
        assert_eq!(res.first_new.unwrap().label, r.commits[9]);
        assert_eq!(res.identical_to_parent, Some(true));
    }

    #[test]
    fn build_failures_are_skipped_and_can_hide_the_culprit() {
        // Commit 9 brings the regression and does not build; 10 fixes the build.
        let r = repo(|i| match i {
            9 => ("src.c", "regression\nbroken\n".into()),
            _ => ("src.c", format!("v{i}\n")),
        });
        let (res, _) = bisect(&r);
        assert_eq!(res.first_new, None);
        let mut could_be: Vec<String> = res.could_be.iter().map(|p| p.label.clone()).collect();
        could_be.sort();
        let mut expected = vec![r.commits[9].clone(), r.commits[10].clone()];
        expected.sort();
        assert_eq!(could_be, expected);
        let skipped = res.steps.iter().find(|s| s.label == r.commits[9]).unwrap();
        assert_eq!(skipped.verdict, StepVerdict::Skip);
        assert!(skipped.note.as_deref().unwrap().contains("did not build"));
        assert_eq!(skipped.build_secs, Some(2.0));
    }

    #[test]
    fn a_fix_bisection_names_the_fixing_commit() {
        // The bug comes with commit 1 and goes with commit 11; each revision is built by a
        // real build command through CommandKernels: its image is src.c.
        let r = repo(|i| match i {
            1 => ("src.c", "regression\n".into()),
            11 => ("src.c", "fixed\n".into()),
            _ => ("src.c", format!("v{i}\n")),
        });
        let work = tempfile::tempdir().unwrap();
        let mut kernels = crate::bisect::build::CommandKernels {
            repo: r.dir.path().to_path_buf(),
            command: "cp src.c \"$DAXDIFF_OUT/bzImage\" && cp Kconfig \"$DAXDIFF_OUT/config\""
                .into(),
            dir: work.path().to_path_buf(),
            status: Box::new(|_| {}),
        };
        // --fix --bad <old, still broken> --good <new, fixed>
        let (res, printed) = bisect_with(&r, &mut kernels, Kind::Fix, "main", &r.commits[1]);
        let fix = res.first_new.as_ref().unwrap();
        assert_eq!(fix.label, r.commits[11]);
        assert_eq!(fix.title, "commit 11");
        assert_eq!(res.last_old.as_ref().unwrap().label, r.commits[10]);
        assert_eq!(res.identical_to_parent, Some(false));
        assert!(res.confidence > 0.9, "{}", res.confidence);
        // Every verdict speaks of the bug: bad before the fix, good from it on.
        let index = |label: &str| r.commits.iter().position(|c| c == label).unwrap();
        for s in &res.steps {
            let want = if index(&s.label) < 11 {
                StepVerdict::Bad
            } else {
                StepVerdict::Good
            };
            assert_eq!(s.verdict, want, "{} ({:?})", index(&s.label), s.role);
            assert!(s.build_secs.is_some(), "{s:?}");
        }
        assert_eq!(
            res.steps
                .iter()
                .find(|s| s.role == Role::BadEnd)
                .unwrap()
                .label,
            r.commits[1]
        );
        // Progress shows each revision's subject and build time as it is judged.
        assert_eq!(printed, res.steps);
        let line = crate::bisect::cli::format_record(&printed[2], Kind::Fix);
        assert!(
            line.contains("commit ") && line.contains(", built in ") && line.contains("(0."),
            "{line}"
        );
        assert!(
            line.contains("broken (") || line.contains("fixed ("),
            "{line}"
        );
    }

    /// A bisection from commit 0 to main that must fail: its error, and what it built.
    fn refused(r: &Repo, kind: Kind) -> (String, Vec<String>) {
        let signal = Signal::BadIf(vec!["call 0 returns 1".parse().unwrap()]);
        let state = State::open(&r.dir.path().join(".git/daxdiff-bisect.json"), "k").unwrap();
        let mut session = Session::new(&signal, Settings::default(), state);
        session.kind = kind;
        let mut b = Builder {
            repo: r.dir.path().to_path_buf(),
            out: tempfile::tempdir().unwrap(),
            built: vec![],
        };
        let e = GitBisect::new(r.dir.path())
            .run(&mut session, &mut b, &mut Simulated, &r.commits[0], "main")
            .unwrap_err()
            .to_string();
        (e, b.built)
    }

    #[test]
    fn a_fix_bisection_refuses_ends_the_wrong_way_round() {
        let r = repo(|i| ("src.c", format!("v{i}\n")));
        let (e, built) = refused(&r, Kind::Fix);
        assert!(e.contains("fix bisection needs the bad revision"), "{e}");
        assert!(built.is_empty(), "built before checking the ends");
    }

    #[test]
    fn a_bisect_an_earlier_run_left_behind_is_reset_and_the_bisection_goes_on() {
        let r = repo(|i| match i {
            9 => ("src.c", "regression\n".into()),
            _ => ("src.c", format!("v{i}\n")),
        });
        // A daxdiff bisect killed half way: git's state and the marker are still there.
        git(
            r.dir.path(),
            &["bisect", "start", "--no-checkout", "main", &r.commits[0]],
        );
        git(r.dir.path(), &["bisect", "bad", &r.commits[12]]);
        std::fs::write(r.dir.path().join(".git").join(MARKER), "").unwrap();
        let (res, _) = bisect(&r);
        assert_eq!(res.first_new.unwrap().label, r.commits[9]);
    }

    #[test]
    fn somebody_elses_bisect_in_progress_is_left_alone() {
        let r = repo(|i| ("src.c", format!("v{i}\n")));
        git(
            r.dir.path(),
            &["bisect", "start", "--no-checkout", "main", &r.commits[0]],
        );
        let (e, built) = refused(&r, Kind::Regression);
        assert!(e.contains("a git bisect is already in progress"), "{e}");
        assert!(e.contains("bisect reset"), "{e}");
        assert!(built.is_empty());
        assert!(r.dir.path().join(".git/BISECT_START").exists());
    }

    #[test]
    fn bisect_output_is_understood() {
        let done =
            "3f2a0c1e5b7d9f11223344556677889900aabbcc is the first bad commit\ncommit 3f2a…\n";
        assert_eq!(
            parse_bisect_step(done, "bad"),
            Some((
                Some("3f2a0c1e5b7d9f11223344556677889900aabbcc".into()),
                vec![]
            ))
        );
        let skipped = "There are only 'skip'ped commits left to test.\nThe first bad commit could be any of:\n\
            1111111111111111111111111111111111111111\n2222222222222222222222222222222222222222\nWe cannot bisect more!\n";
        let (first, could) = parse_bisect_step(skipped, "bad").unwrap();
        assert_eq!(first, None);
        assert_eq!(could.len(), 2);
        assert_eq!(
            parse_bisect_step(
                "Bisecting: 3 revisions left to test after this (roughly 2 steps)\n[abc] x\n",
                "bad"
            ),
            None
        );
        // As git 2.47 prints it with --term-old=broken --term-new=fixed.
        let fixed =
            "9ddccba447f2a0e7b68a5f068277077ffd53a326 is the first fixed commit\ncommit 9ddc…\n";
        assert_eq!(
            parse_bisect_step(fixed, "fixed").unwrap().0.as_deref(),
            Some("9ddccba447f2a0e7b68a5f068277077ffd53a326")
        );
        assert_eq!(parse_bisect_step(fixed, "bad"), None);
    }
}
