//! How reliably a program shows its signal: N runs on each kernel, counted per kernel (its
//! half of the signal, against the other kernel's usual outcome) and per pair (run i of A
//! against run i of B shows the whole signal).

use std::collections::HashMap;

use anyhow::Result;

use daxdiff_prog::Program;

use super::pair::Pair;
use super::signal::Signal;
use super::state::{Rate, Reliability};
use crate::diff::{Outcome, Side};

/// The measurement and the outcomes behind it.
pub struct Measured {
    pub reliability: Reliability,
    /// The most frequent outcome on each kernel: what the C reproducer is compared with.
    pub usual_a: Outcome,
    pub usual_b: Outcome,
}

pub fn measure(pair: &mut Pair, signal: &Signal, prog: &Program, n: usize) -> Result<Measured> {
    let text = prog.to_text();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n {
        pair.bar
            .set_message(format!("reliability: run {}/{n} on A and B", i + 1));
        a.push(pair.run(Side::A, &text)?.outcome);
        b.push(pair.run(Side::B, &text)?.outcome);
    }
    Ok(count(
        signal,
        &a,
        &b,
        (&pair.a.name, &pair.b.name),
        &pair.suppressions,
    ))
}

/// The counts over runs already made (`a[i]` and `b[i]` are the i-th run on each kernel).
pub fn count(
    signal: &Signal,
    a: &[Outcome],
    b: &[Outcome],
    kernels: (&str, &str),
    supp: &crate::diff::Suppressions,
) -> Measured {
    let usual_a = usual(a);
    let usual_b = usual(b);
    let rate = |k: usize| Rate { k, n: a.len() };
    let on_a = a
        .iter()
        .filter(|o| signal.shows(Side::A, o, &usual_b))
        .count();
    let on_b = b
        .iter()
        .filter(|o| signal.shows(Side::B, o, &usual_a))
        .count();
    let pair = a
        .iter()
        .zip(b)
        .filter(|(x, y)| {
            signal.holds(
                std::slice::from_ref(*x),
                std::slice::from_ref(*y),
                kernels,
                supp,
            )
        })
        .count();
    Measured {
        reliability: Reliability {
            a: rate(on_a),
            b: rate(on_b),
            pair: rate(pair),
            threshold: 0,
            fresh_boots: false,
        },
        usual_a,
        usual_b,
    }
}

/// The most frequent outcome (the first of the most frequent, for ties).
fn usual(runs: &[Outcome]) -> Outcome {
    let mut counts: HashMap<&Outcome, usize> = HashMap::new();
    for o in runs {
        *counts.entry(o).or_default() += 1;
    }
    let best = counts.values().copied().max().unwrap_or(0);
    runs.iter()
        .find(|o| counts[o] == best)
        .cloned()
        .expect("at least one run")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{normalize, Suppressions};
    use daxdiff_prog::wire::Response;

    fn run(ret: i64, warn: bool) -> Outcome {
        let json = format!(
            r#"{{"id":1,"status":"completed","stack":null,"detail":null,"calls":[
            {{"index":0,"name":"daxdiff_evict","thread":0,"ret":{ret},"errno":null,"errno_name":null,"duration_us":9,"checksum":null}}]}}"#
        );
        let console: Vec<String> = if warn {
            vec!["WARNING: CPU: 0 PID: 1 at fs/dax.c:390 dax_disassociate_entry+0x86/0xb0".into()]
        } else {
            vec![]
        };
        normalize(&serde_json::from_str::<Response>(&json).unwrap(), &console)
    }

    #[test]
    fn counts_each_kernel_and_each_pair() {
        let sig = Signal::Divergence {
            signature: "report only on A: WARNING in dax_disassociate_entry".into(),
        };
        // A warns in 2 of 3 runs; B stays quiet in all 3 but once returns something else,
        // which does not matter for this signal.
        let a = [run(0, true), run(0, false), run(0, true)];
        let b = [run(0, false), run(1, false), run(0, false)];
        let m = count(&sig, &a, &b, ("x", "y"), &Suppressions::default());
        assert_eq!(m.reliability.a, Rate { k: 2, n: 3 });
        assert_eq!(m.reliability.b, Rate { k: 3, n: 3 });
        assert_eq!(m.reliability.pair, Rate { k: 2, n: 3 });
        assert_eq!(m.usual_a, run(0, true));
        assert_eq!(m.usual_b, run(0, false));
    }
}
