//! Choosing what to run next so that a campaign explores: a LibAFL `Scheduler` that picks
//! corpus entries by the rarity of their class (each class gets the same share of picks,
//! whatever its number of entries), and the choice among candidate programs of the one whose
//! class the campaign has executed least. Without these the first lineage that gains
//! features takes the corpus over (FIFO scheduling of a corpus that keeps every new feature).

use std::collections::{BTreeMap, HashMap};

use libafl::corpus::{Corpus, CorpusId};
use libafl::schedulers::{RemovableScheduler, Scheduler};
use libafl::state::{HasCorpus, HasRand};
use libafl::Error;
use libafl_bolts::rands::Rand;

use daxdiff_prog::class::{Class, Distribution};

use super::engine::ProgInput;

/// Picks corpus entries with probability inversely proportional to how many entries share
/// their class key (`target/pin/disturbance`).
#[derive(Debug, Default)]
pub struct ClassScheduler {
    keys: HashMap<CorpusId, String>,
    counts: BTreeMap<String, u64>,
}

impl ClassScheduler {
    pub fn new() -> Self {
        Self::default()
    }

    fn weights(&self, ids: &[CorpusId]) -> Vec<f64> {
        ids.iter()
            .map(|id| {
                let n = self
                    .keys
                    .get(id)
                    .and_then(|k| self.counts.get(k))
                    .copied()
                    .unwrap_or(1);
                1.0 / n.max(1) as f64
            })
            .collect()
    }
}

/// The index whose cumulative weight first exceeds `r` × the total (`r` in [0, 1)).
pub fn pick_weighted(weights: &[f64], r: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let mut at = r * total;
    for (i, w) in weights.iter().enumerate() {
        if at < *w {
            return i;
        }
        at -= w;
    }
    weights.len().saturating_sub(1)
}

fn key_of<S: HasCorpus<ProgInput>>(state: &S, id: CorpusId) -> Result<String, Error> {
    let tc = state.corpus().get(id)?.borrow();
    Ok(tc
        .input()
        .as_ref()
        .and_then(|i| super::engine::classify(&i.0))
        .map(|c| c.key())
        .unwrap_or_else(|| "-/-/-".into()))
}

impl<S> Scheduler<ProgInput, S> for ClassScheduler
where
    S: HasCorpus<ProgInput> + HasRand,
{
    fn on_add(&mut self, state: &mut S, id: CorpusId) -> Result<(), Error> {
        let current = *state.corpus().current();
        state
            .corpus()
            .get(id)?
            .borrow_mut()
            .set_parent_id_optional(current);
        let key = key_of(state, id)?;
        *self.counts.entry(key.clone()).or_default() += 1;
        self.keys.insert(id, key);
        Ok(())
    }

    fn next(&mut self, state: &mut S) -> Result<CorpusId, Error> {
        let ids: Vec<CorpusId> = state.corpus().ids().collect();
        if ids.is_empty() {
            return Err(Error::empty("the corpus is empty".to_owned()));
        }
        let r = state.rand_mut().next_float();
        let id = ids[pick_weighted(&self.weights(&ids), r)];
        self.set_current_scheduled(state, Some(id))?;
        Ok(id)
    }

    fn set_current_scheduled(
        &mut self,
        state: &mut S,
        next_id: Option<CorpusId>,
    ) -> Result<(), Error> {
        *state.corpus_mut().current_mut() = next_id;
        Ok(())
    }
}

impl<S> RemovableScheduler<ProgInput, S> for ClassScheduler {
    fn on_remove(
        &mut self,
        _state: &mut S,
        id: CorpusId,
        _testcase: &Option<libafl::corpus::Testcase<ProgInput>>,
    ) -> Result<(), Error> {
        if let Some(k) = self.keys.remove(&id) {
            if let Some(n) = self.counts.get_mut(&k) {
                *n = n.saturating_sub(1);
            }
        }
        Ok(())
    }
}

/// Of candidate programs (text and class), the one whose class is rarest among the programs
/// executed so far; the first of equals, so a seeded campaign stays deterministic.
pub fn rarest<'a>(executed: &Distribution, candidates: &'a [(String, Class)]) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for (text, class) in candidates {
        let r = executed.rarity(class);
        if best.is_none_or(|(_, b)| r > b) {
            best = Some((text, r));
        }
    }
    best.map(|(t, _)| t)
}

/// How often a fresh program is generated instead of a corpus entry mutated, in percent.
/// With KCOV, coverage guides mutation well and generation is a tenth; without (Debian's
/// kernels), the only guide is outcome features and half the programs are generated, as
/// syzkaller does when it runs without coverage.
pub fn generate_percent(kcov: bool) -> u64 {
    if kcov {
        10
    } else {
        50
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_gets_the_same_share_of_picks_whatever_its_size() {
        let mut s = ClassScheduler::new();
        let ids: Vec<CorpusId> = (0..11usize).map(CorpusId::from).collect();
        for (i, id) in ids.iter().enumerate() {
            let key = if i < 10 {
                "ext4/-/-"
            } else {
                "xfs/vmsplice/punch"
            };
            *s.counts.entry(key.into()).or_default() += 1;
            s.keys.insert(*id, key.into());
        }
        let w = s.weights(&ids);
        let mut rare = 0;
        let n = 10_000;
        for k in 0..n {
            if pick_weighted(&w, k as f64 / n as f64) == 10 {
                rare += 1;
            }
        }
        // Ten common entries share half the picks; the one rare entry gets the other half.
        assert!((rare as f64 / n as f64 - 0.5).abs() < 0.01, "{rare}");
    }

    #[test]
    fn picks_stay_in_range() {
        assert_eq!(pick_weighted(&[1.0, 1.0], 0.0), 0);
        assert_eq!(pick_weighted(&[1.0, 1.0], 0.99), 1);
        assert_eq!(pick_weighted(&[1.0], 0.9999999), 0);
        assert_eq!(pick_weighted(&[0.0, 0.0], 0.5), 1);
    }

    #[test]
    fn the_candidate_of_the_rarest_class_is_chosen() {
        let t = daxdiff_prog::Target::builtin();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../corpora/");
        let load = |n: &str| {
            let text = std::fs::read_to_string(format!("{dir}{n}")).unwrap();
            let p = daxdiff_prog::parse(t, &text).unwrap();
            (text, daxdiff_prog::class::classify(t, &p))
        };
        let common = load("punch_while_pinned_vmsplice.prog");
        let rare = load("devdax_disable_while_pinned.prog");
        let mut executed = Distribution::default();
        for _ in 0..20 {
            executed.add(&common.1);
        }
        let cands = vec![common.clone(), rare.clone()];
        assert_eq!(rarest(&executed, &cands), Some(rare.0.as_str()));
        assert_eq!(rarest(&executed, &[]), None);
    }

    #[test]
    fn generation_is_frequent_without_coverage() {
        assert!(generate_percent(false) > generate_percent(true));
    }
}
