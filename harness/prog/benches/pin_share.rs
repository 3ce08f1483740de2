//! Share of generated programs that pin a DAX page (target: at least 50%), and generation
//! speed. `cargo bench -p daxdiff-prog --bench pin_share [-- N [SEED]]`.

use std::time::Instant;

use daxdiff_prog::analysis::generation_stats;
use daxdiff_prog::Target;

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = nums.first().copied().unwrap_or(10_000) as usize;
    let seed = nums.get(1).copied().unwrap_or(0);
    let target = Target::builtin();
    let start = Instant::now();
    let s = generation_stats(target, n, seed);
    let secs = start.elapsed().as_secs_f64();
    let pct = |x: usize| 100.0 * x as f64 / s.programs.max(1) as f64;
    println!("programs generated:        {}", s.programs);
    println!(
        "pin a DAX page:            {} ({:.1}%)",
        s.pinning,
        pct(s.pinning)
    );
    println!(
        "pin, then disrupt:         {} ({:.1}%)",
        s.pin_then_disrupt,
        pct(s.pin_then_disrupt)
    );
    println!(
        "use the second thread:     {} ({:.1}%)",
        s.concurrent,
        pct(s.concurrent)
    );
    println!(
        "mean calls per program:    {:.1}",
        s.calls as f64 / s.programs.max(1) as f64
    );
    println!(
        "generation rate:           {:.0} programs/s",
        s.programs as f64 / secs
    );
}
