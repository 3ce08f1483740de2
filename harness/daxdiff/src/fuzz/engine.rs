//! The LibAFL pieces: a program `Input`, a VM-backed `Executor` per kernel (combined with
//! `DiffExecutor`), an `Observer` carrying each side's outcome, a "new outcome features"
//! `Feedback`, a KCOV edge map per kernel (`StdMapObserver`, fed to a max-map feedback), an
//! objective that confirms and records stable divergences, kernel reports and oracle
//! problems, and a `Mutator` over the program model.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use crate::fuzz::side::GuestCost;
use libafl::corpus::{Corpus, CorpusId, Testcase};
use libafl::executors::{Executor, ExitKind, HasObservers};
use libafl::feedbacks::{Feedback, StateInitializer};
use libafl::inputs::Input;
use libafl::mutators::{MutationResult, Mutator};
use libafl::observers::{Observer, StdMapObserver};
use libafl::state::HasCorpus;
use libafl::Error;
use libafl_bolts::tuples::{Handle, MatchNameRef, RefIndexable};
use libafl_bolts::Named;
use serde::{Deserialize, Serialize};

use daxdiff_observe::Signature;
use daxdiff_prog::rng::Rng;
use daxdiff_prog::wire::{Status, COVERAGE_MAP_SIZE};
use daxdiff_prog::Target;

use super::campaign::Campaign;
use super::side::{KernelSide, Run, GUEST_STOPPED};
use crate::diff::{compare, judge, Outcome, Verdict};
use crate::workdir::{Finding, FindingKind, SideRecord};

/// The class of a program in text form (`None` for text that does not parse, which the
/// executor reports on its own).
pub(crate) fn classify(text: &str) -> Option<daxdiff_prog::class::Class> {
    let target = daxdiff_prog::Target::builtin();
    let prog = daxdiff_prog::parse(target, text).ok()?;
    Some(daxdiff_prog::class::classify(target, &prog))
}

/// A program in its text form (what the executor takes and what lands in `corpus/`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgInput(pub String);

impl Input for ProgInput {}

/// Carries one kernel's run of the current program.
#[derive(Debug, Serialize, Deserialize)]
pub struct OutcomeObserver {
    name: Cow<'static, str>,
    #[serde(skip)]
    pub run: Option<Run>,
}

impl OutcomeObserver {
    pub fn new(name: &'static str) -> OutcomeObserver {
        OutcomeObserver {
            name: Cow::Borrowed(name),
            run: None,
        }
    }
}

impl Named for OutcomeObserver {
    fn name(&self) -> &Cow<'static, str> {
        &self.name
    }
}

impl<I, S> Observer<I, S> for OutcomeObserver {
    fn pre_exec(&mut self, _state: &mut S, _input: &I) -> Result<(), Error> {
        self.run = None;
        Ok(())
    }
}

/// Which side of the pair an executor drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    A,
    B,
}

/// One kernel's KCOV edges of the current program, one byte per slot of the edge map.
pub type CoverageObserver = StdMapObserver<'static, u8, false>;

pub fn coverage_observer(name: &'static str) -> CoverageObserver {
    StdMapObserver::owned(name, vec![0u8; COVERAGE_MAP_SIZE])
}

type VmObservers = (OutcomeObserver, (CoverageObserver, ()));

/// One kernel's guest, shared by its executor and the objective's confirmation runs.
pub type SharedSide = Arc<Mutex<KernelSide>>;

/// B's run of the program A's executor is running, made on a second thread at the same time
/// (each guest is a process of its own: two cores run the pair in the time of one side), and
/// taken by B's executor, which `DiffExecutor` calls next with the same input.
#[derive(Clone, Default)]
pub struct Prefetch(Arc<Mutex<Option<Prefetched>>>);

/// A program and B's run of it.
type Prefetched = (String, anyhow::Result<Run>);

impl Prefetch {
    fn take(&self, program: &str) -> Option<anyhow::Result<Run>> {
        let mut slot = self.0.lock().unwrap();
        match slot.take() {
            Some((p, run)) if p == program => Some(run),
            _ => None,
        }
    }
}

/// The thread kernel B's side works on, for as long as the pair lives. A guest's QEMU gets
/// SIGKILL when the thread that started it ends (its parent-death signal, which Linux ties to
/// the thread), so B's guests must be started, booted or restored, on a thread that outlives
/// them: a thread per program would take B's guest down as soon as the program was done.
pub struct SideThread {
    side: SharedSide,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Job = Box<dyn FnOnce(&mut KernelSide) + Send>;

impl SideThread {
    pub fn new(side: SharedSide) -> SideThread {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let worker = side.clone();
        let thread = std::thread::spawn(move || {
            for job in rx {
                job(&mut worker.lock().unwrap());
            }
        });
        SideThread {
            side,
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn side(&self) -> &SharedSide {
        &self.side
    }

    /// Starts `f` on the side's thread; the receiver gets its result.
    pub fn start<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut KernelSide) -> T + Send + 'static,
    ) -> std::sync::mpsc::Receiver<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |side| {
            let _ = tx.send(f(side));
        });
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
        rx
    }
}

impl Drop for SideThread {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `program` on both sides at once (B on its thread); each result is that side's.
pub fn run_pair(
    a: &SharedSide,
    b: &SideThread,
    program: &str,
) -> (anyhow::Result<Run>, anyhow::Result<Run>) {
    let text = program.to_string();
    let rb = b.start(move |side| side.run(&text));
    let ra = a.lock().unwrap().run(program);
    let rb = rb
        .recv()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("kernel B's thread ended during a run")));
    (ra, rb)
}

/// Runs programs in one kernel's guest.
pub struct VmExecutor {
    side: SharedSide,
    observers: VmObservers,
    campaign: Arc<Mutex<Campaign>>,
    role: Role,
    seen: GuestCost,
    /// A: B's side, run beside A into the slot; B: the slot it takes its run from.
    partner: Option<Arc<SideThread>>,
    prefetch: Prefetch,
}

impl VmExecutor {
    pub fn new(
        side: SharedSide,
        observer: OutcomeObserver,
        coverage: CoverageObserver,
        campaign: Arc<Mutex<Campaign>>,
        role: Role,
    ) -> VmExecutor {
        VmExecutor {
            side,
            observers: (observer, (coverage, ())),
            campaign,
            role,
            seen: GuestCost::default(),
            partner: None,
            prefetch: Prefetch::default(),
        }
    }

    /// A pair whose B runs at the same time as A, on `b_thread`: `self` is A's executor, the
    /// result is B's.
    pub fn pair_with(&mut self, b: VmExecutor, b_thread: Arc<SideThread>) -> VmExecutor {
        let mut b = b;
        self.partner = Some(b_thread);
        b.prefetch = self.prefetch.clone();
        b
    }
}

impl HasObservers for VmExecutor {
    type Observers = VmObservers;

    fn observers(&self) -> RefIndexable<&Self::Observers, Self::Observers> {
        RefIndexable::from(&self.observers)
    }

    fn observers_mut(&mut self) -> RefIndexable<&mut Self::Observers, Self::Observers> {
        RefIndexable::from(&mut self.observers)
    }
}

impl<EM, S, Z> Executor<EM, ProgInput, S, Z> for VmExecutor {
    fn run_target(
        &mut self,
        _fuzzer: &mut Z,
        _state: &mut S,
        _mgr: &mut EM,
        input: &ProgInput,
    ) -> Result<ExitKind, Error> {
        let result = match (&self.partner, self.prefetch.take(&input.0)) {
            (_, Some(prefetched)) => prefetched,
            (Some(b), None) => {
                let (ra, rb) = run_pair(&self.side, b, &input.0);
                *self.prefetch.0.lock().unwrap() = Some((input.0.clone(), rb));
                ra
            }
            // Not prefetched (no partner): on the job's thread, which lives as long as the
            // pair, so the guests it starts do too.
            (None, None) => self.side.lock().unwrap().run(&input.0),
        };
        let side = self.side.lock().unwrap();
        let run = result.map_err(|e| Error::unknown(format!("{}: {e:#}", side.name)))?;
        let kind = match run.outcome.status {
            Status::Crashed => ExitKind::Crash,
            Status::Timeout => ExitKind::Timeout,
            Status::Completed | Status::Error => ExitKind::Ok,
        };
        // Restarts also happen during stability re-runs; count them all here.
        let cost = side.cost();
        let new = cost - self.seen;
        self.seen = cost;
        drop(side);
        let mut c = self.campaign.lock().unwrap();
        match self.role {
            Role::A => {
                c.stats.execs += 1;
                c.stats.vm_restarts_a += new.restarts;
                c.stats.time_a.add(&new);
                if let Some(class) = classify(&input.0) {
                    c.stats.classes_executed.add(&class);
                }
            }
            Role::B => {
                c.stats.vm_restarts_b += new.restarts;
                c.stats.time_b.add(&new);
            }
        }
        if let Some(edges) = &run.coverage {
            c.add_edges(self.role == Role::A, edges);
        }
        // Coverage of a program that took the guest down does not make it corpus material.
        if let (Some(edges), false) = (&run.coverage, disrupts_guest(&run.outcome)) {
            let map: &mut [u8] = &mut self.observers.1 .0;
            for &e in edges {
                if let Some(slot) = map.get_mut(e as usize) {
                    *slot = 1;
                }
            }
        }
        c.tick().map_err(|e| Error::unknown(format!("{e:#}")))?;
        self.observers.0.run = Some(run);
        Ok(kind)
    }
}

/// Outcome features: each call's result class (value classes, not values, so that sizes
/// do not flood the corpus), call-to-call transitions, status, reports, hung function.
pub fn features(side: &str, o: &Outcome) -> Vec<String> {
    let class = |c: &crate::diff::CallOutcome| match &c.ret {
        crate::diff::Ret::Errno(e) => format!("{}={e}", c.name),
        crate::diff::Ret::Value(0) => format!("{}=0", c.name),
        _ => format!("{}=ok", c.name),
    };
    let mut f: Vec<String> = o
        .calls
        .iter()
        .map(|c| format!("{side}:{}", class(c)))
        .collect();
    f.extend(
        o.calls
            .windows(2)
            .map(|w| format!("{side}:{}>{}", class(&w[0]), class(&w[1]))),
    );
    f.push(format!("{side}:status={:?}", o.status));
    f.extend(
        o.reports
            .iter()
            .map(|r| format!("{side}:report={}", r.signature)),
    );
    f.extend(o.hung_stack.first().map(|h| format!("{side}:hung={h}")));
    f.extend(
        o.teardown
            .iter()
            .filter(|s| s.result != "ok")
            .map(|s| format!("{side}:teardown:{}={}", s.step, s.result)),
    );
    f.extend(
        o.refcounts
            .iter()
            .flatten()
            .map(|d| format!("{side}:refcounts:{}={}", d.role, d.summary())),
    );
    f.extend(
        o.problems()
            .into_iter()
            .map(|p| format!("{side}:problem={p}")),
    );
    f
}

/// A kernel report, a blocked teardown step, or the guest stopped answering (see
/// `KernelSide::run`).
fn disrupts_guest(o: &Outcome) -> bool {
    !o.reports.is_empty()
        || o.teardown_blocked()
        || o.detail
            .as_deref()
            .is_some_and(|d| d.starts_with(GUEST_STOPPED))
}

fn runs_of<'a, OT: MatchNameRef>(
    observers: &'a OT,
    a: &Handle<OutcomeObserver>,
    b: &Handle<OutcomeObserver>,
) -> Option<(&'a Run, &'a Run)> {
    Some((
        observers.get(a)?.run.as_ref()?,
        observers.get(b)?.run.as_ref()?,
    ))
}

/// Corpus-worthy: a program that showed an outcome feature not seen before on either kernel.
pub struct NewOutcomeFeedback {
    pub a: Handle<OutcomeObserver>,
    pub b: Handle<OutcomeObserver>,
    pub campaign: Arc<Mutex<Campaign>>,
}

impl Named for NewOutcomeFeedback {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("new-outcome");
        &NAME
    }
}

impl<S> StateInitializer<S> for NewOutcomeFeedback {}

impl<EM, OT: MatchNameRef, S> Feedback<EM, ProgInput, OT, S> for NewOutcomeFeedback {
    fn is_interesting(
        &mut self,
        _state: &mut S,
        _mgr: &mut EM,
        _input: &ProgInput,
        observers: &OT,
        _exit: &ExitKind,
    ) -> Result<bool, Error> {
        let Some((ra, rb)) = runs_of(observers, &self.a, &self.b) else {
            return Ok(false);
        };
        // As in syzkaller, programs that oops or take the guest down are findings, not
        // corpus: mutating them would mostly cost guest restarts.
        if [ra, rb].iter().any(|r| disrupts_guest(&r.outcome)) {
            return Ok(false);
        }
        let mut feats = features("a", &ra.outcome);
        feats.extend(features("b", &rb.outcome));
        Ok(self.campaign.lock().unwrap().add_features(feats))
    }

    /// Called for every program the corpus takes (for new outcome features or new KCOV
    /// edges): it goes to the workdir's `corpus/` too.
    fn append_metadata(
        &mut self,
        _state: &mut S,
        _manager: &mut EM,
        _observers: &OT,
        testcase: &mut Testcase<ProgInput>,
    ) -> Result<(), Error> {
        let Some(input) = testcase.input() else {
            return Ok(());
        };
        let mut c = self.campaign.lock().unwrap();
        if c.workdir
            .add_corpus(&input.0)
            .map_err(|e| Error::unknown(format!("{e:#}")))?
        {
            c.stats.corpus += 1;
            if let Some(class) = classify(&input.0) {
                c.stats.classes_corpus.add(&class);
            }
        }
        Ok(())
    }
}

/// Objective: a kernel report on either side (one `crashes/` entry per report signature) or
/// a divergence that holds over `runs` runs on each kernel (one `divergences/` entry per
/// divergence signature). Programs that disagree with themselves go to `unstable/`.
pub struct FindingObjective {
    pub a: Handle<OutcomeObserver>,
    pub b: Handle<OutcomeObserver>,
    pub side_a: SharedSide,
    pub side_b: Arc<SideThread>,
    pub campaign: Arc<Mutex<Campaign>>,
}

impl Named for FindingObjective {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("stable-divergence-or-report");
        &NAME
    }
}

impl<S> StateInitializer<S> for FindingObjective {}

fn lib_err(e: anyhow::Error) -> Error {
    Error::unknown(format!("{e:#}"))
}

impl<EM, OT: MatchNameRef, S> Feedback<EM, ProgInput, OT, S> for FindingObjective {
    fn is_interesting(
        &mut self,
        _state: &mut S,
        _mgr: &mut EM,
        input: &ProgInput,
        observers: &OT,
        _exit: &ExitKind,
    ) -> Result<bool, Error> {
        let Some((ra, rb)) = runs_of(observers, &self.a, &self.b) else {
            return Ok(false);
        };
        let (ra, rb) = (ra.clone(), rb.clone());
        let program = &input.0;
        let mut found = self.record_reports(program, &ra, &rb).map_err(lib_err)?;
        let kernels = {
            let mut c = self.campaign.lock().unwrap();
            let kernels = (c.stats.kernel_a.clone(), c.stats.kernel_b.clone());
            let (v, _) = judge(
                std::slice::from_ref(&ra.outcome),
                std::slice::from_ref(&rb.outcome),
                (&kernels.0, &kernels.1),
                &c.suppressions,
            );
            match v {
                // A divergence already recorded needs no confirmation runs.
                Verdict::Divergence { signature } => {
                    if c.workdir
                        .has_finding(FindingKind::Divergence, &signature.dir_name())
                    {
                        return Ok(found);
                    }
                    kernels
                }
                _ => {
                    if compare(&ra.outcome, &rb.outcome) != Verdict::Same {
                        c.stats.suppressed += 1;
                    }
                    return Ok(found);
                }
            }
        };
        // A candidate: confirm on both kernels before calling it a divergence.
        let runs = self.campaign.lock().unwrap().runs;
        let (mut runs_a, mut runs_b) = (vec![ra], vec![rb]);
        for _ in 1..runs {
            let (ra, rb) = run_pair(&self.side_a, &self.side_b, program);
            runs_a.push(ra.map_err(lib_err)?);
            runs_b.push(rb.map_err(lib_err)?);
            self.campaign.lock().unwrap().stats.reruns += 1;
        }
        let oa: Vec<Outcome> = runs_a.iter().map(|r| r.outcome.clone()).collect();
        let ob: Vec<Outcome> = runs_b.iter().map(|r| r.outcome.clone()).collect();
        let mut c = self.campaign.lock().unwrap();
        let (verdict, diffs) = judge(&oa, &ob, (&kernels.0, &kernels.1), &c.suppressions);
        let (kind, name, sig) = match verdict {
            Verdict::Same => {
                c.stats.suppressed += 1;
                return Ok(found);
            }
            // One entry per way of being unstable, not per program: mutants of a racy
            // program would otherwise fill the directory.
            Verdict::Unstable { kernel } => {
                let what = diffs
                    .first()
                    .map(|d| d.signature_text())
                    .unwrap_or_default();
                let sig = format!("unstable on {kernel}: {what}");
                let name = Signature::of_text(&sig).dir_name();
                (FindingKind::Unstable, name, sig)
            }
            Verdict::Divergence { signature } => (
                FindingKind::Divergence,
                signature.dir_name(),
                signature.to_string(),
            ),
        };
        if c.workdir.has_finding(kind, &name) {
            return Ok(found);
        }
        let finding = Finding {
            kind,
            signature: sig,
            kernel_a: kernels.0.clone(),
            kernel_b: kernels.1.clone(),
            differences: diffs.iter().map(|d| d.describe()).collect(),
            runs,
            found_at_exec: c.stats.execs,
        };
        let (ca, cb) = (&runs_a[0].console, &runs_b[0].console);
        c.workdir
            .save_finding(
                &name,
                &finding,
                program,
                SideRecord {
                    outcomes: &oa,
                    console: ca,
                },
                SideRecord {
                    outcomes: &ob,
                    console: cb,
                },
            )
            .map_err(lib_err)?;
        match kind {
            FindingKind::Unstable => c.stats.unstable += 1,
            _ => {
                c.stats.divergences += 1;
                found = true;
            }
        }
        c.announce(format!("{}: {}", kind.dir(), finding.signature));
        c.save().map_err(lib_err)?;
        Ok(found)
    }
}

impl FindingObjective {
    /// Each kernel report, and each oracle problem (reference counts left changed after
    /// teardown, a blocked teardown step, data that does not match), not seen before gets
    /// `crashes/<title>/`.
    fn record_reports(&self, program: &str, ra: &Run, rb: &Run) -> anyhow::Result<bool> {
        let mut c = self.campaign.lock().unwrap();
        let mut found = false;
        let titled = |run: &Run| -> Vec<(String, Signature)> {
            let mut v: Vec<(String, Signature)> = run
                .outcome
                .reports
                .iter()
                .map(|r| (r.title.clone(), r.signature.clone()))
                .collect();
            v.extend(run.outcome.problems().into_iter().map(|p| {
                let sig = Signature::of_text(&p);
                (p, sig)
            }));
            v
        };
        let (ta, tb) = (titled(ra), titled(rb));
        for (title, sig) in ta.iter().chain(&tb) {
            let name = sig.dir_name();
            if c.workdir.has_finding(FindingKind::Crash, &name) {
                continue;
            }
            let on_a = ta.iter().any(|x| &x.1 == sig);
            let on_b = tb.iter().any(|x| &x.1 == sig);
            let finding = Finding {
                kind: FindingKind::Crash,
                signature: title.clone(),
                kernel_a: c.stats.kernel_a.clone(),
                kernel_b: c.stats.kernel_b.clone(),
                differences: vec![match (on_a, on_b) {
                    (true, true) => "on both kernels".to_string(),
                    (true, false) => format!("only on A ({})", c.stats.kernel_a),
                    _ => format!("only on B ({})", c.stats.kernel_b),
                }],
                runs: 1,
                found_at_exec: c.stats.execs,
            };
            c.workdir.save_finding(
                &name,
                &finding,
                program,
                SideRecord {
                    outcomes: std::slice::from_ref(&ra.outcome),
                    console: &ra.console,
                },
                SideRecord {
                    outcomes: std::slice::from_ref(&rb.outcome),
                    console: &rb.console,
                },
            )?;
            c.stats.crashes += 1;
            c.announce(format!("crashes: {title} ({})", finding.differences[0]));
            found = true;
        }
        if found {
            c.save()?;
        }
        Ok(found)
    }
}

/// Mutates programs with the program model's own mutator, or generates a fresh one
/// ([`super::schedule::generate_percent`] of the time); of [`CANDIDATES`] such programs it
/// keeps the one whose class the campaign has executed least. Once the budget is spent it
/// skips, so the stage ends without running anything.
pub struct ProgMutator {
    pub rng: Rng,
    pub campaign: Arc<Mutex<Campaign>>,
}

/// Programs made per mutation, of which the rarest runs (making one costs microseconds,
/// running one seconds).
pub const CANDIDATES: usize = 8;

impl Named for ProgMutator {
    fn name(&self) -> &Cow<'static, str> {
        static NAME: Cow<'static, str> = Cow::Borrowed("daxdiff-prog");
        &NAME
    }
}

impl<S: HasCorpus<ProgInput>> Mutator<ProgInput, S> for ProgMutator {
    fn mutate(&mut self, state: &mut S, input: &mut ProgInput) -> Result<MutationResult, Error> {
        let (executed, kcov) = {
            let c = self.campaign.lock().unwrap();
            if c.should_stop() {
                return Ok(MutationResult::Skipped);
            }
            let kcov = c.stats.edges_a.is_some() || c.stats.edges_b.is_some();
            (c.stats.classes_executed.clone(), kcov)
        };
        let target = Target::builtin();
        let parsed = daxdiff_prog::parse(target, &input.0).ok();
        let n = state.corpus().count();
        let generate =
            parsed.is_none() || self.rng.percent(super::schedule::generate_percent(kcov));
        let mut candidates = Vec::with_capacity(CANDIDATES);
        for _ in 0..CANDIDATES {
            let next = match &parsed {
                Some(p) if !generate => {
                    let other = if n > 0 {
                        let id = state.corpus().nth(self.rng.index(n));
                        let tc = state.corpus().get(id)?.borrow();
                        tc.input()
                            .as_ref()
                            .and_then(|i| daxdiff_prog::parse(target, &i.0).ok())
                    } else {
                        None
                    };
                    daxdiff_prog::mutate::mutate(target, p, other.as_ref(), &mut self.rng).0
                }
                _ => daxdiff_prog::generate::generate(target, &mut self.rng),
            };
            let class = daxdiff_prog::class::classify(target, &next);
            candidates.push((next.to_text(), class));
        }
        if let Some(best) = super::schedule::rarest(&executed, &candidates) {
            input.0 = best.to_string();
        }
        Ok(MutationResult::Mutated)
    }

    fn post_exec(&mut self, _state: &mut S, _new_corpus_id: Option<CorpusId>) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::normalize;
    use daxdiff_prog::wire::Response;

    fn outcome(json: &str) -> Outcome {
        normalize(&serde_json::from_str::<Response>(json).unwrap(), &[])
    }

    const READ: &str = r#"{"id":1,"status":"completed","stack":null,"detail":null,"calls":[
        {"index":0,"name":"openat$ext4","thread":0,"ret":3,"errno":null,"errno_name":null,"duration_us":9,"checksum":null},
        {"index":1,"name":"pread64","thread":0,"ret":4096,"errno":null,"errno_name":null,"duration_us":9,"checksum":1}]}"#;

    #[test]
    fn features_see_result_classes_not_values() {
        let a = features("a", &outcome(READ));
        assert_eq!(a, features("a", &outcome(&READ.replace("4096", "8192"))));
        let failed = READ.replace(
            r#""ret":4096,"errno":null,"errno_name":null"#,
            r#""ret":-1,"errno":14,"errno_name":"EFAULT""#,
        );
        let b = features("a", &outcome(&failed));
        assert!(b.contains(&"a:pread64=EFAULT".to_string()), "{b:?}");
        assert!(
            b.contains(&"a:openat$ext4=ok>pread64=EFAULT".to_string()),
            "{b:?}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn guest_deaths_and_reports_are_not_corpus_material() {
        assert!(!disrupts_guest(&outcome(READ)));
        let dead = format!(
            r#"{{"id":0,"status":"crashed","calls":[],"stack":null,"detail":"{GUEST_STOPPED}: the guest executor exited"}}"#
        );
        assert!(disrupts_guest(&outcome(&dead)));
        let killed = r#"{"id":0,"status":"crashed","calls":[],"stack":null,"detail":"program child killed by signal 9 (Killed)"}"#;
        assert!(!disrupts_guest(&outcome(killed)));
    }
}
