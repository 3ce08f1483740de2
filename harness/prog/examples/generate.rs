//! Print generated programs in the text form:
//! `cargo run -p daxdiff-prog --example generate -- [SEED [COUNT]]`.

use daxdiff_prog::generate::generate;
use daxdiff_prog::rng::Rng;
use daxdiff_prog::Target;

fn main() {
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seed = nums.first().copied().unwrap_or(0);
    let count = nums.get(1).copied().unwrap_or(1);
    let target = Target::builtin();
    for i in 0..count {
        let prog = generate(target, &mut Rng::new(seed + i));
        println!("# seed {}", seed + i);
        print!("{prog}");
        println!();
    }
}
