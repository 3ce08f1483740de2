//! The mutation loop behind `parsers_fuzz.rs`: inputs made from real seeds by byte flips,
//! control characters, deep nesting, truncations and splices, under a deterministic PRNG.
//!
//! `DAXDIFF_FUZZ_SEED=<n>` replays a run; `DAXDIFF_FUZZ_SECS=<n>` sets each target's length
//! (default 3 s; 120 s with `DAXDIFF_HEAVY=1`).

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use daxdiff_prog::rng::Rng;

/// Bytes a mutation inserts: what breaks line- and field-based parsers.
const CONTROL: &[u8] = b"\x00\x01\x07\x08\x0b\x0c\x1b\x7f\r\n\t";
/// Largest input a mutation may grow (deep nesting can make a few hundred KiB).
const MAX_LEN: usize = 1 << 20;

/// One fuzz target: its name, its seeds and the tokens that mean something to its parser.
pub struct Target<'a> {
    pub name: &'a str,
    pub seeds: Vec<Vec<u8>>,
    /// Parser vocabulary: inserted whole, and repeated many times for deep nesting.
    pub dictionary: &'a [&'a str],
}

/// Runs `check` on mutated inputs for the configured time. A panic fails the test with the
/// seed, the input's number and where the input was saved; at the end it prints
/// `fuzz <name>: N inputs in S s (X inputs/s), 0 crashes, seed Z`.
pub fn run(target: Target, mut check: impl FnMut(&[u8])) {
    assert!(!target.seeds.is_empty(), "{}: no seeds", target.name);
    let seed = std::env::var("DAXDIFF_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("DAXDIFF_FUZZ_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let budget = budget();
    println!("fuzz {}: seed {seed}, {} s", target.name, budget.as_secs());
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut inputs = 0u64;
    // The seeds themselves first: a real file that breaks a parser is the plainest failure.
    let mut pending: Vec<Vec<u8>> = target.seeds.clone();
    while start.elapsed() < budget {
        let input = pending
            .pop()
            .unwrap_or_else(|| mutate(&mut rng, &target.seeds, target.dictionary));
        inputs += 1;
        if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path =
                std::env::temp_dir().join(format!("daxdiff-fuzz-{}-{seed}-{inputs}", target.name));
            let _ = std::fs::write(&path, &input);
            panic!(
                "fuzz {}: input #{inputs} of seed {seed} failed ({msg}); it is in {} \
                 (replay: DAXDIFF_FUZZ_SEED={seed})",
                target.name,
                path.display()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz {}: {inputs} inputs in {secs:.1} s ({:.0} inputs/s), 0 crashes, seed {seed}",
        target.name,
        inputs as f64 / secs
    );
}

fn budget() -> Duration {
    let secs = match std::env::var("DAXDIFF_FUZZ_SECS") {
        Ok(s) => s.parse().expect("DAXDIFF_FUZZ_SECS is a number of seconds"),
        Err(_) if std::env::var("DAXDIFF_HEAVY").is_ok_and(|v| v == "1") => 120,
        Err(_) => 3,
    };
    Duration::from_secs(secs)
}

/// A seed with one to four mutations stacked.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dictionary: &[&str]) -> Vec<u8> {
    let mut data = rng.pick(seeds).clone();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut data, seeds, dictionary);
        data.truncate(MAX_LEN);
    }
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>], dictionary: &[&str]) {
    let at = |rng: &mut Rng, data: &Vec<u8>| rng.index(data.len() + 1);
    match rng.below(10) {
        // A flipped bit.
        0 if !data.is_empty() => {
            let i = rng.index(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        // A control character, or a byte that is not UTF-8.
        1 => {
            let b = if rng.percent(70) {
                *rng.pick(CONTROL)
            } else {
                0x80 + rng.below(0x80) as u8
            };
            let i = at(rng, data);
            data.insert(i, b);
        }
        // A token of the parser's vocabulary.
        2 | 3 if !dictionary.is_empty() => {
            let token = rng.pick(dictionary).as_bytes().to_vec();
            let i = at(rng, data);
            data.splice(i..i, token);
        }
        // Deep nesting: a token repeated thousands of times, sometimes closed again.
        4 if !dictionary.is_empty() => {
            let token = rng.pick(dictionary).as_bytes();
            let most = if rng.percent(5) { 50_000 } else { 200 };
            let n = 1 + rng.below(most) as usize;
            let mut deep = token.repeat(n);
            if rng.percent(50) {
                let close: Vec<u8> = token
                    .iter()
                    .rev()
                    .filter_map(|b| match b {
                        b'{' => Some(b'}'),
                        b'[' => Some(b']'),
                        b'(' => Some(b')'),
                        _ => None,
                    })
                    .collect();
                deep.extend(close.repeat(n));
            }
            let i = at(rng, data);
            data.splice(i..i, deep);
        }
        // Cut short, as by a full disk or an interrupted copy.
        5 => {
            let i = at(rng, data);
            data.truncate(i);
        }
        // A range gone.
        6 if !data.is_empty() => {
            let i = rng.index(data.len());
            let j = i + rng.index(data.len() - i + 1);
            data.drain(i..j);
        }
        // A range repeated.
        7 if !data.is_empty() => {
            let i = rng.index(data.len());
            let j = (i + 1 + rng.index(256)).min(data.len());
            let copy = data[i..j].repeat(1 + rng.index(8));
            data.splice(j..j, copy);
        }
        // A splice from another seed.
        _ => {
            let other = rng.pick(seeds);
            if other.is_empty() {
                return;
            }
            let i = rng.index(other.len());
            let j = (i + 1 + rng.index(4096)).min(other.len());
            let k = at(rng, data);
            if rng.percent(50) {
                let end = (k + j - i).min(data.len());
                data.splice(k..end, other[i..j].iter().copied());
            } else {
                data.splice(k..k, other[i..j].iter().copied());
            }
        }
    }
}
