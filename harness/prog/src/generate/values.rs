//! Value choices for scalar parameters: which flag combinations and sizes generation
//! favours, so that calls mostly succeed and reach DAX code paths.

use crate::program::Arg;
use crate::rng::Rng;
use crate::target::{FlagSet, IntRange};

/// Context that changes which values are likely.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bias {
    /// The call is meant to take pages away (shrink, punch): favour small sizes and holes.
    pub disrupt: bool,
    /// The file is opened for O_DIRECT pins: force O_DIRECT on opens.
    pub direct: bool,
}

fn flags(names: &[&str]) -> Arg {
    if names.is_empty() {
        Arg::Int(0)
    } else {
        Arg::Flags(names.iter().map(|s| s.to_string()).collect())
    }
}

/// A value for `flags[set]`.
pub(crate) fn flag_value(set: &FlagSet, bias: Bias, rng: &mut Rng) -> Arg {
    let num = |table: &[(u64, u32)], rng: &mut Rng| Arg::Int(rng.weighted_pick(table));
    match set.name.as_str() {
        "open_flags" => {
            let mut f = vec!["O_RDWR", "O_CREAT"];
            if bias.direct || rng.percent(55) {
                f.push("O_DIRECT");
            }
            match rng.below(20) {
                0 | 1 => f.push("O_SYNC"),
                2 => f.push("O_DSYNC"),
                3 => return random_subset(set, rng),
                _ => {}
            }
            flags(&f)
        }
        // The raw device: direct I/O is what it is there for.
        "blkdev_open_flags" => {
            if rng.percent(85) {
                flags(&["O_RDWR", "O_DIRECT"])
            } else {
                random_subset(set, rng)
            }
        }
        "mmap_flags" => {
            let mut f = match rng.weighted(&[60, 20, 20]) {
                0 => vec!["MAP_SHARED"],
                1 => vec!["MAP_SHARED_VALIDATE", "MAP_SYNC"],
                _ => vec!["MAP_PRIVATE"],
            };
            if rng.percent(30) {
                f.push("MAP_POPULATE");
            }
            flags(&f)
        }
        "mmap_prot_flags" => match rng.weighted(&[85, 10, 5]) {
            0 => flags(&["PROT_READ", "PROT_WRITE"]),
            1 => flags(&["PROT_READ"]),
            _ => random_subset(set, rng),
        },
        "falloc_flags" => {
            let combos: &[(&[&str], u32)] = if bias.disrupt {
                &[
                    (&["FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_KEEP_SIZE"], 40),
                    (&["FALLOC_FL_ZERO_RANGE"], 10),
                    (&["FALLOC_FL_ZERO_RANGE", "FALLOC_FL_KEEP_SIZE"], 5),
                    (&["FALLOC_FL_COLLAPSE_RANGE"], 20),
                    (&["FALLOC_FL_INSERT_RANGE"], 15),
                    (&[], 5),
                    (&["FALLOC_FL_KEEP_SIZE"], 5),
                ]
            } else {
                &[
                    (&[], 60),
                    (&["FALLOC_FL_KEEP_SIZE"], 15),
                    (&["FALLOC_FL_ZERO_RANGE"], 15),
                    (&["FALLOC_FL_PUNCH_HOLE", "FALLOC_FL_KEEP_SIZE"], 10),
                ]
            };
            let w: Vec<u32> = combos.iter().map(|c| c.1).collect();
            flags(combos[rng.weighted(&w)].0)
        }
        "fs_xflags" => match rng.weighted(&[60, 20, 20]) {
            0 => flags(&["FS_XFLAG_DAX"]),
            1 => Arg::Int(0),
            _ => random_subset(set, rng),
        },
        "fcntl_status_flags" => match rng.weighted(&[70, 15, 15]) {
            0 => flags(&["O_DIRECT"]),
            1 => Arg::Int(0),
            _ => random_subset(set, rng),
        },
        // Non-blocking pipes: a full or empty pipe must not hang the program.
        "pipe_flags" => match rng.weighted(&[90, 10]) {
            0 => flags(&["O_NONBLOCK"]),
            _ => random_subset(set, rng),
        },
        "splice_flags" => {
            if rng.percent(75) {
                Arg::Int(0)
            } else {
                random_subset(set, rng)
            }
        }
        "mremap_flags" => match rng.weighted(&[85, 10, 5]) {
            0 => flags(&["MREMAP_MAYMOVE"]),
            1 => Arg::Int(0),
            _ => flags(&["MREMAP_MAYMOVE", "MREMAP_DONTUNMAP"]),
        },
        "madvise_advice" => {
            let table: &[(&str, u32)] = &[
                ("MADV_DONTNEED", 25),
                ("MADV_REMOVE", 15),
                ("MADV_PAGEOUT", 10),
                ("MADV_WILLNEED", 10),
                ("MADV_COLD", 8),
                ("MADV_HUGEPAGE", 8),
                ("MADV_POPULATE_WRITE", 8),
                ("MADV_POPULATE_READ", 5),
                ("MADV_FREE", 3),
                ("MADV_DONTFORK", 2),
                ("MADV_COLLAPSE", 3),
                ("MADV_NORMAL", 1),
                ("MADV_SEQUENTIAL", 1),
                ("MADV_RANDOM", 1),
            ];
            flags(&[rng.weighted_pick(table)])
        }
        "map_lens" => num(
            &[
                (0x1000, 15),
                (0x2000, 10),
                (0x10000, 10),
                (0x200000, 45),
                (0x400000, 15),
                (0x40000000, 5),
            ],
            rng,
        ),
        "file_sizes" if bias.disrupt => num(
            &[(0x0, 40), (0x1000, 30), (0x3000, 15), (0x200000, 15)],
            rng,
        ),
        "file_sizes" => num(
            &[
                (0x1000, 10),
                (0x3000, 5),
                (0x200000, 45),
                (0x400000, 35),
                (0x40000000, 3),
                (0x0, 2),
            ],
            rng,
        ),
        "file_offsets" => num(&[(0x0, 70), (0x1000, 15), (0x200000, 15)], rng),
        _ if set.bitmask => random_subset(set, rng),
        _ => {
            let (label, v) = rng.pick(&set.values).clone();
            match label {
                Some(n) => Arg::Flags(vec![n]),
                None => Arg::Int(v),
            }
        }
    }
}

/// Zero to three distinct named values of a bit-mask set.
fn random_subset(set: &FlagSet, rng: &mut Rng) -> Arg {
    let named: Vec<&String> = set.values.iter().filter_map(|(l, _)| l.as_ref()).collect();
    let mut out: Vec<String> = Vec::new();
    for _ in 0..rng.below(4) {
        let n = rng.pick(&named);
        if !out.contains(n) {
            out.push((*n).clone());
        }
    }
    if out.is_empty() {
        Arg::Int(0)
    } else {
        Arg::Flags(out)
    }
}

/// A value in an integer range, favouring its low quarter (sleeps stay short).
pub(crate) fn int_value(range: Option<IntRange>, rng: &mut Rng) -> u64 {
    let Some(r) = range else {
        return rng.weighted_pick(&[(0u64, 50), (1, 20), (0x1000, 20), (0x200000, 10)]);
    };
    let steps = (r.max - r.min) / r.step;
    let top = if rng.percent(75) { steps / 4 } else { steps };
    r.min + rng.below(top + 1) * r.step
}

/// A buffer length in bytes, at most `room`.
pub(crate) fn io_len(room: u64, rng: &mut Rng) -> u64 {
    let want = rng.weighted_pick(&[
        (0x1000u64, 40),
        (0x2000, 15),
        (0x10000, 15),
        (0x200000, 25),
        (u64::MAX, 5),
    ]);
    want.min(room).max(1)
}
