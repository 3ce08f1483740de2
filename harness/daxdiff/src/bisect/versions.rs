//! Version-list mode: the Debian kernels the registry serves, ordered by upstream version
//! (one build per point release), bisected by fetching only the kernels a step needs.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::search::{Kind, ListSearch, Next};
use super::session::Session;
use super::state::{Role, StepRecord};
use super::trial::Tester;
use crate::images::apt::{compare_versions, Apt, Package, Suites};

/// One Debian kernel build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The package version (`6.12.95-1~bpo12+1`).
    pub version: String,
    /// `uname -r` (`6.12.95+deb12-amd64`).
    pub release: String,
    /// The upstream point release (`6.12.95`).
    pub upstream: String,
}

/// `debian:FROM..TO`: FROM and TO are upstream versions or prefixes (`6.1`, `6.12.95`, `7`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRange {
    pub from: String,
    pub to: String,
}

impl std::str::FromStr for VersionRange {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<VersionRange> {
        let spec = s.strip_prefix("debian:").unwrap_or(s);
        let (from, to) = spec.split_once("..").with_context(|| {
            format!("--versions '{s}': expected debian:FROM..TO, e.g. debian:6.1..7.3")
        })?;
        let ok = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.');
        if !ok(from) || !ok(to) {
            bail!(
                "--versions '{s}': FROM and TO are upstream versions such as 6.1, 6.12.95 or 7.3"
            );
        }
        Ok(VersionRange {
            from: from.into(),
            to: to.into(),
        })
    }
}

/// `6.12.95-1~bpo12+1` → `6.12.95`.
pub fn upstream_of(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, r)| r);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

/// Whether upstream `v` is `prefix` or lies within it (`6.12.95` is within `6.12`, `6.1` is
/// not within `6.12`).
fn within(v: &str, prefix: &str) -> bool {
    v == prefix || v.strip_prefix(prefix).is_some_and(|r| r.starts_with('.'))
}

/// Every served amd64 generic kernel build (both layouts), as candidates.
pub fn candidates_of(pkgs: &[Package]) -> Vec<Candidate> {
    pkgs.iter()
        .filter_map(|p| {
            let release = p.name.strip_prefix("linux-binary-unsigned-").or_else(|| {
                p.name
                    .strip_prefix("linux-image-")
                    .and_then(|r| r.strip_suffix("-unsigned"))
            })?;
            let generic = release.ends_with("-amd64")
                && !release.ends_with("-cloud-amd64")
                && !release.ends_with("-rt-amd64");
            generic.then(|| Candidate {
                version: p.version.clone(),
                release: release.to_string(),
                upstream: upstream_of(&p.version).to_string(),
            })
        })
        .collect()
}

/// The candidates within `range`, oldest first, one per upstream point release: the build
/// whose release carries `+<abi>` when `abi` is given and one exists, else the newest.
pub fn select(all: &[Candidate], range: &VersionRange, abi: Option<&str>) -> Vec<Candidate> {
    let mut v: Vec<Candidate> = all.to_vec();
    v.sort_by(|a, b| {
        compare_versions(&a.upstream, &b.upstream).then_with(|| {
            let pref = |c: &Candidate| abi.is_some_and(|x| c.release.contains(&format!("+{x}")));
            pref(a)
                .cmp(&pref(b))
                .then_with(|| compare_versions(&a.version, &b.version))
        })
    });
    v.dedup_by(|later, earlier| {
        // Keep the last (preferred) build of each point release.
        if later.upstream == earlier.upstream {
            *earlier = later.clone();
            true
        } else {
            false
        }
    });
    let first = v.iter().position(|c| within(&c.upstream, &range.from));
    let last = v.iter().rposition(|c| within(&c.upstream, &range.to));
    match (first, last) {
        (Some(f), Some(l)) if f <= l => v[f..=l].to_vec(),
        _ => Vec::new(),
    }
}

/// What the private apt root (the kernels' one) serves now.
pub fn served(cache: &Path) -> Result<Vec<Candidate>> {
    let apt = Apt::open(&cache.join("apt/kernels"), Suites::Kernels)?;
    apt.update(false)?;
    let mut pkgs = apt.search("^linux-image-[0-9].*-amd64-unsigned$")?;
    pkgs.extend(apt.search("^linux-binary-unsigned-[0-9].*-amd64$")?);
    Ok(candidates_of(&pkgs))
}

/// A versions file: one Debian package version per line, oldest (good) first; `#` comments.
/// Each must be served; a line may also name an upstream version when one build has it.
pub fn from_file(text: &str, origin: &str, all: &[Candidate]) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let exact: Vec<&Candidate> = all.iter().filter(|c| c.version == line).collect();
        let by_upstream: Vec<&Candidate> = all.iter().filter(|c| c.upstream == line).collect();
        let c = match (exact.as_slice(), by_upstream.as_slice()) {
            ([c, ..], _) => *c,
            ([], [c]) => *c,
            ([], []) => bail!(
                "{origin}:{}: no served kernel has version {line}; `daxdiff bisect --versions debian:6.1..7.3 --list` shows what the mirror serves",
                n + 1
            ),
            ([], many) => bail!(
                "{origin}:{}: {line} has several builds ({}); write the package version",
                n + 1,
                many.iter().map(|c| c.version.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        out.push(c.clone());
    }
    if out.len() < 2 {
        bail!("{origin}: a bisection needs at least two versions (good first, bad last)");
    }
    Ok(out)
}

/// How a bisection ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bisected {
    /// Labels of the last kernel like the old end and the first like the new one (last good
    /// and first bad of a regression, last broken and first fixed of a fix); `first_new` is
    /// `None` when skipped kernels hide it, and `could_be` lists where it may be.
    pub last_old: String,
    pub first_new: Option<String>,
    pub could_be: Vec<String>,
    pub confidence: f64,
    pub steps: Vec<StepRecord>,
}

/// Bisects `cands`, oldest first: for a regression the first must be good and the last bad,
/// for a fix ([`Session::kind`]) the other way round.
pub fn bisect(
    session: &mut Session,
    tester: &mut dyn Tester<Candidate>,
    cands: &[Candidate],
) -> Result<Bisected> {
    if cands.len() < 2 {
        bail!("a bisection needs at least two versions");
    }
    let (old, new) = (&cands[0], &cands[cands.len() - 1]);
    let (g, b) = match session.kind {
        Kind::Regression => (old, new),
        Kind::Fix => (new, old),
    };
    // The good end first: `--bad-if differs` compares with its outcome.
    let good = session.end(tester, g, &g.version, Role::GoodEnd)?;
    let bad = session.end(tester, b, &b.version, Role::BadEnd)?;
    session.calibrate(&good, &bad)?;
    let mut search = ListSearch::new(cands.len(), session.kind);
    loop {
        match search.next() {
            Next::Test { index } => {
                let c = &cands[index];
                let rec = session.step(tester, c, &c.version, Role::Step)?;
                search.record(index, rec.verdict);
            }
            Next::Found { first_new } => {
                return Ok(Bisected {
                    last_old: cands[first_new - 1].version.clone(),
                    first_new: Some(cands[first_new].version.clone()),
                    could_be: vec![],
                    confidence: session.confidence(),
                    steps: session.state.steps.clone(),
                })
            }
            Next::Range { first, last } => {
                return Ok(Bisected {
                    last_old: cands[first - 1].version.clone(),
                    first_new: None,
                    could_be: cands[first..=last]
                        .iter()
                        .map(|c| c.version.clone())
                        .collect(),
                    confidence: session.confidence(),
                    steps: session.state.steps.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::search::{RunVerdict, StepVerdict};
    use crate::bisect::session::Settings;
    use crate::bisect::signal::Signal;
    use crate::bisect::state::State;
    use crate::bisect::trial::{Classify, Stop, Trial};
    use crate::diff::{CallOutcome, Ret};
    use daxdiff_prog::wire::Status;

    fn p(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
        }
    }

    /// What `apt-cache madison` listed on the mirror this was written against (trimmed).
    fn served_here() -> Vec<Candidate> {
        candidates_of(&[
            p("linux-image-6.1.0-47-amd64-unsigned", "6.1.170-3"),
            p("linux-image-6.1.0-47-cloud-amd64-unsigned", "6.1.170-3"),
            p("linux-image-6.1.0-55-amd64-unsigned", "6.1.192-1"),
            p("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2"),
            p(
                "linux-image-6.12.95+deb12-amd64-unsigned",
                "6.12.95-1~bpo12+1",
            ),
            p(
                "linux-image-6.12.107+deb12-amd64-unsigned",
                "6.12.107-1~deb12u1",
            ),
            p("linux-image-6.12.107+deb13-amd64-unsigned", "6.12.107-1"),
            p("linux-image-6.12.116+deb13-amd64-unsigned", "6.12.116-1"),
            p("linux-image-6.12.116+deb13-rt-amd64-unsigned", "6.12.116-1"),
            p("linux-binary-unsigned-7.2.6+deb13-amd64", "7.2.6-1~bpo13+1"),
            p(
                "linux-binary-unsigned-7.2.12+deb13-amd64",
                "7.2.12-1~bpo13+1",
            ),
            p("linux-binary-unsigned-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
        ])
    }

    fn versions(v: &[Candidate]) -> Vec<&str> {
        v.iter().map(|c| c.version.as_str()).collect()
    }

    #[test]
    fn one_build_per_point_release_in_upstream_order() {
        let r: VersionRange = "debian:6.1..7.3".parse().unwrap();
        let l = select(&served_here(), &r, None);
        assert_eq!(
            versions(&l),
            [
                "6.1.170-3",
                "6.1.192-2",
                "6.12.95-1~bpo12+1",
                "6.12.107-1",
                "6.12.116-1",
                "7.2.6-1~bpo13+1",
                "7.2.12-1~bpo13+1",
                "7.3.4-1~bpo13+1"
            ]
        );
        assert_eq!(l[5].release, "7.2.6+deb13-amd64");
        let deb12 = select(&served_here(), &r, Some("deb12"));
        assert_eq!(deb12[3].release, "6.12.107+deb12-amd64");
    }

    #[test]
    fn ranges_take_prefixes_and_exact_point_releases() {
        let r: VersionRange = "6.12.107..7.2".parse().unwrap();
        assert_eq!(
            versions(&select(&served_here(), &r, None)),
            [
                "6.12.107-1",
                "6.12.116-1",
                "7.2.6-1~bpo13+1",
                "7.2.12-1~bpo13+1"
            ]
        );
        let none: VersionRange = "debian:5.10..6.1".parse().unwrap();
        assert!(select(&served_here(), &none, None).is_empty());
        assert!("debian:6.1-7.3".parse::<VersionRange>().is_err());
        assert!("debian:6.1..latest".parse::<VersionRange>().is_err());
        assert_eq!(upstream_of("1:6.12.95-1~bpo12+1"), "6.12.95");
    }

    #[test]
    fn versions_files_name_served_builds() {
        let all = served_here();
        let l = from_file(
            "# ends first and last\n6.1.170-3\n7.2.6\n7.3.4-1~bpo13+1\n",
            "v.txt",
            &all,
        )
        .unwrap();
        assert_eq!(
            versions(&l),
            ["6.1.170-3", "7.2.6-1~bpo13+1", "7.3.4-1~bpo13+1"]
        );
        let e = from_file("6.1.170-3\n6.12.107\n", "v.txt", &all)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("v.txt:2") && e.contains("6.12.107-1~deb12u1"),
            "{e}"
        );
        let e = from_file("6.1.170-3\n9.9.9-1\n", "v.txt", &all)
            .unwrap_err()
            .to_string();
        assert!(e.contains("v.txt:2") && e.contains("--list"), "{e}");
    }

    /// Kernels from `first_bad` on return 0 from call 0, older ones EFAULT (with `fixed`, the
    /// kernels before `first_bad` return 0 and later ones EFAULT); a kernel that returns 0
    /// does so in one run of `every`; `flaky` kernels alternate; `unbootable` ones never boot.
    struct Simulated {
        cands: Vec<Candidate>,
        first_bad: usize,
        fixed: bool,
        every: usize,
        unbootable: Vec<usize>,
        flaky: Vec<usize>,
        trials: Vec<String>,
    }

    impl Simulated {
        fn new(cands: &[Candidate], first_bad: usize) -> Simulated {
            Simulated {
                cands: cands.to_vec(),
                first_bad,
                fixed: false,
                every: 1,
                unbootable: vec![],
                flaky: vec![],
                trials: vec![],
            }
        }
    }

    impl Tester<Candidate> for Simulated {
        fn trial(&mut self, c: &Candidate, classify: Classify, stop: Stop) -> Result<Trial> {
            let started = std::time::Instant::now();
            self.trials.push(c.version.clone());
            let i = self.cands.iter().position(|x| x == c).unwrap();
            if self.unbootable.contains(&i) {
                return Ok(Trial::untestable(&c.release, "no boot".into(), started));
            }
            let mut tally = crate::bisect::search::Tally::default();
            let mut outcomes = Vec::new();
            let mut round = 1;
            let decision = loop {
                let bad = if self.flaky.contains(&i) {
                    outcomes.len() % 2 == 0
                } else {
                    (i >= self.first_bad) != self.fixed && outcomes.len() % self.every == 0
                };
                let o = crate::diff::Outcome {
                    status: Status::Completed,
                    calls: vec![CallOutcome {
                        index: 0,
                        name: "madvise".into(),
                        ret: if bad {
                            Ret::Value(0)
                        } else {
                            Ret::Errno("EFAULT".into())
                        },
                        checksum: None,
                    }],
                    reports: vec![],
                    hung_stack: vec![],
                    detail: None,
                    teardown: vec![],
                    refcounts: None,
                    integrity: vec![],
                };
                tally.add(classify(&o));
                outcomes.push(o);
                match stop(tally, round) {
                    None => {}
                    Some(d) if d.verdict == StepVerdict::Retest => round += 1,
                    Some(d) => break d,
                }
            };
            Ok(Trial {
                tally,
                decision,
                boots: round,
                outcomes,
                kernel: c.release.clone(),
                seconds: 0.0,
                note: None,
            })
        }
    }

    fn run(
        first_bad: usize,
        unbootable: &[usize],
        flaky: &[usize],
        signal: &str,
    ) -> (Bisected, Vec<String>) {
        let cands = select(&served_here(), &"6.1..7.3".parse().unwrap(), None);
        let mut sim = Simulated::new(&cands, first_bad);
        sim.unbootable = unbootable.to_vec();
        sim.flaky = flaky.to_vec();
        run_sim(sim, Kind::Regression, signal)
    }

    fn run_sim(mut sim: Simulated, kind: Kind, signal: &str) -> (Bisected, Vec<String>) {
        let t = tempfile::tempdir().unwrap();
        let cands = sim.cands.clone();
        let signal = Signal::BadIf(vec![signal.parse().unwrap()]);
        let state = State::open(&t.path().join("state.json"), "k").unwrap();
        let mut session = Session::new(&signal, Settings::default(), state);
        session.kind = kind;
        let out = bisect(&mut session, &mut sim, &cands).unwrap();
        // A second session on the same state file tests nothing again.
        let state = State::open(&t.path().join("state.json"), "k").unwrap();
        let mut again = Session::new(&signal, Settings::default(), state);
        again.kind = kind;
        let before = sim.trials.len();
        assert_eq!(bisect(&mut again, &mut sim, &cands).unwrap(), out);
        assert_eq!(
            sim.trials.len(),
            before,
            "a resumed bisection reran kernels"
        );
        (out, sim.trials)
    }

    #[test]
    fn finds_the_first_version_that_changed_and_resumes_without_rerunning() {
        let (out, trials) = run(5, &[], &[], "call 0 returns 0");
        assert_eq!(out.first_new.as_deref(), Some("7.2.6-1~bpo13+1"));
        assert_eq!(out.last_old, "6.12.116-1");
        assert_eq!(trials.len(), 2 + 3, "{trials:?}");
        assert!(out.confidence > 0.9, "{}", out.confidence);
        // The same bisection judged by "differs from the good end".
        let (out, _) = run(5, &[], &[], "differs");
        assert_eq!(out.first_new.as_deref(), Some("7.2.6-1~bpo13+1"));
    }

    #[test]
    fn a_fix_bisection_finds_the_first_version_without_the_bug() {
        let cands = select(&served_here(), &"6.1..7.3".parse().unwrap(), None);
        let mut sim = Simulated::new(&cands, 5);
        sim.fixed = true;
        let (out, trials) = run_sim(sim, Kind::Fix, "call 0 returns 0");
        assert_eq!(out.first_new.as_deref(), Some("7.2.6-1~bpo13+1"));
        assert_eq!(out.last_old, "6.12.116-1");
        assert_eq!(trials.len(), 2 + 3, "{trials:?}");
        // The old end is the bad one, the new end the good one.
        let end = |role| out.steps.iter().find(|s| s.role == role).unwrap();
        assert_eq!(end(Role::BadEnd).label, "6.1.170-3");
        assert_eq!(end(Role::GoodEnd).label, "7.3.4-1~bpo13+1");
        // "differs" compares with the good end, which is the new one here.
        let mut sim = Simulated::new(&cands, 5);
        sim.fixed = true;
        let (out, _) = run_sim(sim, Kind::Fix, "differs");
        assert_eq!(out.first_new.as_deref(), Some("7.2.6-1~bpo13+1"));
    }

    #[test]
    fn a_flaky_bug_is_called_fixed_only_after_enough_clean_runs() {
        // The bug shows in one run of three where it is present.
        let cands = select(&served_here(), &"6.1..7.3".parse().unwrap(), None);
        let mut sim = Simulated::new(&cands, 5);
        sim.fixed = true;
        sim.every = 3;
        let (out, _) = run_sim(sim, Kind::Fix, "call 0 returns 0");
        assert_eq!(out.first_new.as_deref(), Some("7.2.6-1~bpo13+1"));
        for s in out.steps.iter().filter(|s| s.role == Role::Step) {
            match s.verdict {
                StepVerdict::Good => assert!(s.tally.good >= 6, "{s:?}"),
                StepVerdict::Bad => assert!(s.tally.bad >= 2, "{s:?}"),
                v => panic!("{v} for {s:?}"),
            }
        }
    }

    #[test]
    fn unbootable_and_flaky_kernels_are_skipped_around() {
        // 7.2.6 (index 5) never boots: the first bad is 7.2.6 or 7.2.12.
        let (out, _) = run(5, &[5], &[], "call 0 returns 0");
        assert_eq!(out.first_new, None);
        assert_eq!(out.could_be, ["7.2.6-1~bpo13+1", "7.2.12-1~bpo13+1"]);
        // A kernel whose runs alternate is retested on a fresh guest, then skipped.
        let (out, _) = run(3, &[], &[3], "call 0 returns 0");
        let flaky = out.steps.iter().find(|s| s.label == "6.12.107-1").unwrap();
        assert_eq!(flaky.verdict, StepVerdict::Skip);
        assert_eq!(flaky.boots, 2);
        assert_eq!(out.could_be, ["6.12.107-1", "6.12.116-1"]);
        let _ = RunVerdict::Skip;
    }

    #[test]
    fn ends_that_do_not_fit_stop_the_bisection() {
        let t = tempfile::tempdir().unwrap();
        let cands = select(&served_here(), &"6.1..7.3".parse().unwrap(), None);
        let signal = Signal::BadIf(vec!["call 0 returns 0".parse().unwrap()]);
        let state = State::open(&t.path().join("state.json"), "k").unwrap();
        let mut session = Session::new(&signal, Settings::default(), state);
        let mut sim = Simulated::new(&cands, 0);
        let e = bisect(&mut session, &mut sim, &cands)
            .unwrap_err()
            .to_string();
        assert!(e.contains("good end 6.1.170-3 looks bad"), "{e}");
    }
}
