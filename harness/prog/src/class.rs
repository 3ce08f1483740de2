//! What kind of DAX test a program is: which targets it maps, at what granularity it asks
//! for, how it holds DAX pages (the pin kind), what it does to them while they are held, and
//! whether two threads race. The fuzzer counts programs by class to show what a campaign
//! explores and what it never reaches.
//!
//! A class is read from the program text alone, with [`crate::analysis::State`]: what the
//! program asks for, not what the kernel did (a 2 MiB mapping may still be PTE-mapped).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::analysis::State;
use crate::program::{Arg, Program, ResId, ThreadId};
use crate::target::{FileTarget, Target};

/// The size of mapping a program asks for: what page-table level can map it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// Shorter than 2 MiB: 4 KiB pages only.
    Pte,
    /// 2 MiB or more: a PMD fault is possible.
    Pmd,
    /// 1 GiB or more: a PUD fault is possible.
    Pud,
}

/// How a program holds a DAX page beyond its mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinKind {
    /// Direct I/O whose buffer is a DAX mapping, for the duration of the call (gup, short term).
    ODirect,
    /// Direct I/O submitted through io_uring (non-fixed buffers): the pin lasts while the
    /// I/O is in flight, past the submitting call.
    AsyncIo,
    /// vmsplice of a DAX mapping into a pipe: the pipe holds the pages until it is read or
    /// closed.
    Vmsplice,
    /// io_uring fixed buffers (FOLL_LONGTERM) registered over a DAX mapping: held until
    /// unregistered or the ring goes away.
    UringFixed,
    /// process_vm_readv/writev (gup on another process, short term).
    ProcessVm,
    /// A forked child that touches the mapping and stays alive (`DAXDIFF_TOUCH_WRITE_HOLD`).
    ForkHeld,
}

/// What a program does to DAX pages while some pin of it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disturbance {
    Truncate,
    /// fallocate PUNCH_HOLE or ZERO_RANGE.
    Punch,
    /// fallocate COLLAPSE_RANGE or INSERT_RANGE.
    CollapseInsert,
    /// unlink, or inode eviction (`daxdiff_evict`).
    UnlinkEvict,
    /// FS_IOC_FSSETXATTR, which can switch an inode's DAX flag.
    DaxToggle,
    DevdaxDisable,
    NsReconfigure,
    /// munmap, mremap or madvise of a mapping.
    Unmap,
}

/// A program's class, dimension by dimension. Sets are empty when the program has none
/// (no DAX mapping, no pin, nothing disturbed while pinned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Class {
    pub targets: BTreeSet<FileTarget>,
    pub granularity: BTreeSet<Granularity>,
    pub pins: BTreeSet<PinKind>,
    pub disturbed_while_pinned: BTreeSet<Disturbance>,
    /// Some call runs on the second thread.
    pub concurrent: bool,
}

fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Class {
    /// Every class label this program counts under: one per value of each dimension
    /// (`target:ext4`, `granularity:pmd`, `pin:vmsplice`, `disturbed:truncate`,
    /// `threads:2`), with `pin:none` and `disturbed:none` for a program without.
    pub fn labels(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(
            self.targets
                .iter()
                .map(|t| format!("target:{}", t.suffix())),
        );
        v.extend(
            self.granularity
                .iter()
                .map(|g| format!("granularity:{}", name(g))),
        );
        if self.pins.is_empty() {
            v.push("pin:none".into());
        }
        v.extend(self.pins.iter().map(|p| format!("pin:{}", name(p))));
        if self.disturbed_while_pinned.is_empty() {
            v.push("disturbed:none".into());
        }
        v.extend(
            self.disturbed_while_pinned
                .iter()
                .map(|d| format!("disturbed:{}", name(d))),
        );
        v.push(
            if self.concurrent {
                "threads:2"
            } else {
                "threads:1"
            }
            .into(),
        );
        v
    }

    /// The one label a program is counted under when the corpus's balance is judged: its
    /// first target, pin kind and disturbance (`ext4/vmsplice/truncate`, `devdax/-/-`).
    pub fn key(&self) -> String {
        let first = |s: Vec<String>| s.into_iter().next().unwrap_or_else(|| "-".into());
        format!(
            "{}/{}/{}",
            first(
                self.targets
                    .iter()
                    .map(|t| t.suffix().to_string())
                    .collect()
            ),
            first(self.pins.iter().map(name).collect()),
            first(self.disturbed_while_pinned.iter().map(name).collect()),
        )
    }

    /// Every label the descriptions allow (what a campaign could reach), for naming the
    /// ones it never did.
    pub fn all_labels() -> Vec<String> {
        let mut v: Vec<String> = DAX_TARGETS
            .iter()
            .map(|t| format!("target:{}", t.suffix()))
            .collect();
        v.extend(
            Granularity::ALL
                .iter()
                .map(|g| format!("granularity:{}", name(g))),
        );
        v.push("pin:none".into());
        v.extend(PinKind::ALL.iter().map(|p| format!("pin:{}", name(p))));
        v.push("disturbed:none".into());
        v.extend(
            Disturbance::ALL
                .iter()
                .map(|d| format!("disturbed:{}", name(d))),
        );
        v.push("threads:1".into());
        v.push("threads:2".into());
        v
    }
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Pte, Granularity::Pmd, Granularity::Pud];
}

impl PinKind {
    pub const ALL: [PinKind; 6] = [
        PinKind::ODirect,
        PinKind::AsyncIo,
        PinKind::Vmsplice,
        PinKind::UringFixed,
        PinKind::ProcessVm,
        PinKind::ForkHeld,
    ];
}

impl Disturbance {
    pub const ALL: [Disturbance; 8] = [
        Disturbance::Truncate,
        Disturbance::Punch,
        Disturbance::CollapseInsert,
        Disturbance::UnlinkEvict,
        Disturbance::DaxToggle,
        Disturbance::DevdaxDisable,
        Disturbance::NsReconfigure,
        Disturbance::Unmap,
    ];
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.labels().join(" "))
    }
}

/// How many programs fell under each class label, and under each class key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub programs: u64,
    /// Per label ([`Class::labels`]): a program counts once under each of its labels.
    pub labels: std::collections::BTreeMap<String, u64>,
    /// Per key ([`Class::key`]): a program counts under one key.
    pub keys: std::collections::BTreeMap<String, u64>,
}

impl Distribution {
    pub fn add(&mut self, class: &Class) {
        self.programs += 1;
        for l in class.labels() {
            *self.labels.entry(l).or_default() += 1;
        }
        *self.keys.entry(class.key()).or_default() += 1;
    }

    /// How rare `class` is here: the sum over its labels of 1/(1 + programs with that
    /// label). A program that reaches labels few programs had scores high; one made only of
    /// common labels scores low.
    pub fn rarity(&self, class: &Class) -> f64 {
        class
            .labels()
            .iter()
            .map(|l| 1.0 / (1.0 + self.labels.get(l).copied().unwrap_or(0) as f64))
            .sum()
    }

    /// The labels the descriptions allow that no program had.
    pub fn never(&self) -> Vec<String> {
        Class::all_labels()
            .into_iter()
            .filter(|l| !self.labels.contains_key(l))
            .collect()
    }

    /// The most common key and its share of the programs.
    pub fn largest(&self) -> Option<(&str, f64)> {
        let (k, n) = self.keys.iter().max_by_key(|(_, n)| **n)?;
        Some((k.as_str(), *n as f64 / self.programs.max(1) as f64))
    }
}

impl fmt::Display for Distribution {
    /// One line per dimension (`pin: none 40, vmsplice 12, …`), then the largest key and the
    /// labels never reached.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut dims: Vec<(&str, Vec<(&str, u64)>)> = Vec::new();
        for (label, n) in &self.labels {
            let (dim, value) = label.split_once(':').unwrap_or((label, ""));
            match dims.iter_mut().find(|(d, _)| *d == dim) {
                Some((_, v)) => v.push((value, *n)),
                None => dims.push((dim, vec![(value, *n)])),
            }
        }
        for (dim, mut values) in dims {
            values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = values.iter().map(|(v, n)| format!("{v} {n}")).collect();
            writeln!(f, "  {dim}: {}", list.join(", "))?;
        }
        if let Some((k, share)) = self.largest() {
            writeln!(
                f,
                "  largest class {k}: {:.0}% of {}",
                share * 100.0,
                self.programs
            )?;
        }
        let never = self.never();
        if !never.is_empty() {
            writeln!(f, "  never: {}", never.join(" "))?;
        }
        Ok(())
    }
}

/// The targets a program can map as DAX memory (the others are the non-DAX ends of direct
/// I/O, never mapped as DAX).
const DAX_TARGETS: [FileTarget; 3] = [FileTarget::Ext4, FileTarget::Xfs, FileTarget::Devdax];

/// A pin the program holds, and what ends it.
struct Held {
    kind: PinKind,
    /// The resource whose end releases it (pipe, ring, child); `None`: only the call itself
    /// (or, for a racing call, the other thread's calls) see it.
    until_dies: Option<ResId>,
    thread: ThreadId,
}

fn disturbance(target: &Target, call: &crate::program::Call) -> Option<Disturbance> {
    let desc = target.call(&call.name)?;
    let flag = |param: &str, flag: &str| {
        let i = desc.params.iter().position(|p| p.name == param);
        target.has_flag(i.and_then(|i| call.args.get(i)), flag)
    };
    Some(match call.base_name() {
        "ftruncate" | "truncate" => Disturbance::Truncate,
        "fallocate"
            if flag("mode", "FALLOC_FL_COLLAPSE_RANGE")
                || flag("mode", "FALLOC_FL_INSERT_RANGE") =>
        {
            Disturbance::CollapseInsert
        }
        "fallocate"
            if flag("mode", "FALLOC_FL_PUNCH_HOLE") || flag("mode", "FALLOC_FL_ZERO_RANGE") =>
        {
            Disturbance::Punch
        }
        "unlink" | "unlinkat" | "daxdiff_evict" => Disturbance::UnlinkEvict,
        "ioctl" if call.name.contains("FSSETXATTR") => Disturbance::DaxToggle,
        "daxdiff_devdax_disable" => Disturbance::DevdaxDisable,
        "daxdiff_ns_reconfigure" => Disturbance::NsReconfigure,
        "munmap" | "mremap" | "madvise" => Disturbance::Unmap,
        _ => return None,
    })
}

fn pin_kind(call: &crate::program::Call) -> Option<PinKind> {
    Some(match call.base_name() {
        "vmsplice" => PinKind::Vmsplice,
        "process_vm_readv" | "process_vm_writev" => PinKind::ProcessVm,
        "io_uring_register" | "daxdiff_uring_update_buffers" => PinKind::UringFixed,
        "daxdiff_uring_submit" | "daxdiff_aio_submit" => PinKind::AsyncIo,
        // io_uring read/write that waits for its completion: a pin for the call's duration.
        "daxdiff_uring_rw" | "read" | "write" | "pread64" | "pwrite64" | "readv" | "writev"
        | "preadv" | "pwritev" => PinKind::ODirect,
        _ => return None,
    })
}

/// The resource argument named `param` of `call`.
fn res(target: &Target, call: &crate::program::Call, params: &[&str]) -> Option<ResId> {
    let desc = target.call(&call.name)?;
    params.iter().find_map(|p| {
        let i = desc.params.iter().position(|d| d.name == *p)?;
        match call.args.get(i) {
            Some(Arg::Res(r)) => Some(*r),
            _ => None,
        }
    })
}

/// Classifies `prog` (see the module docs).
pub fn classify(target: &Target, prog: &Program) -> Class {
    let mut class = Class::default();
    let mut st = State::default();
    let mut held: Vec<Held> = Vec::new();
    for (i, call) in prog.calls.iter().enumerate() {
        if call.thread != ThreadId::MAIN {
            class.concurrent = true;
        }
        // A disturbance counts while a pin is held: one with a resource that is still live,
        // a transient one only from the other thread (the racing case).
        if let Some(d) = disturbance(target, call) {
            let pinned = held.iter().any(|h| match h.until_dies {
                Some(r) => st.other(r).is_some_and(|o| o.live),
                None => h.thread != call.thread,
            });
            if pinned {
                class.disturbed_while_pinned.insert(d);
            }
        }
        // Reading the pipe gives its pages back; unregistering gives fixed buffers back.
        let releases = match call.name.as_str() {
            "read$pipe" => res(target, call, &["rfd"]).map(|r| (PinKind::Vmsplice, r)),
            "io_uring_register$UNREGISTER_BUFFERS" => {
                res(target, call, &["fd"]).map(|r| (PinKind::UringFixed, r))
            }
            // Waiting for a ring's or an AIO context's requests ends their pins.
            "daxdiff_uring_wait" | "daxdiff_aio_wait" | "io_destroy" => {
                res(target, call, &["fd", "ctx"]).map(|r| (PinKind::AsyncIo, r))
            }
            _ => None,
        };
        if let Some((kind, r)) = releases {
            held.retain(|h| !(h.kind == kind && h.until_dies == Some(r)));
        }
        let pins_before = st.pins.len();
        st.apply(target, i, call);
        if st.pins.len() > pins_before {
            if let Some(kind) = pin_kind(call) {
                class.pins.insert(kind);
                let until_dies = match kind {
                    PinKind::Vmsplice => res(target, call, &["wfd"]),
                    PinKind::UringFixed | PinKind::AsyncIo => res(target, call, &["fd", "ctx"]),
                    _ => None,
                };
                held.push(Held {
                    kind,
                    until_dies,
                    thread: call.thread,
                });
            }
        }
        if call.name == "daxdiff_fork_touch" {
            let holds = target
                .call(&call.name)
                .and_then(|d| d.params.iter().position(|p| p.name == "mode"))
                .and_then(|i| call.args.get(i))
                .is_some_and(|a| match a {
                    Arg::Flags(n) => n.iter().any(|x| x == "DAXDIFF_TOUCH_WRITE_HOLD"),
                    a @ Arg::Int(_) => {
                        target.scalar_value(a)
                            == target.consts.get("DAXDIFF_TOUCH_WRITE_HOLD").copied()
                    }
                    _ => false,
                });
            let on_dax = matches!(
                call.args.first(),
                Some(Arg::Buf(b)) if st.is_dax_buf(b)
            );
            if holds && on_dax {
                class.pins.insert(PinKind::ForkHeld);
                held.push(Held {
                    kind: PinKind::ForkHeld,
                    until_dies: call.ret,
                    thread: call.thread,
                });
            }
        }
    }
    // A transient pin held by nothing: only a racing disturbance counted above.
    held.retain(|h| h.kind != PinKind::ODirect || h.until_dies.is_some());
    for m in &st.maps {
        if let Some(t) = m.dax {
            class.targets.insert(t);
            class.granularity.insert(if m.len >= 1 << 30 {
                Granularity::Pud
            } else if m.len >= 2 << 20 {
                Granularity::Pmd
            } else {
                Granularity::Pte
            });
        }
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Class {
        let t = Target::builtin();
        let p = crate::parse(t, text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        classify(t, &p)
    }

    fn seed(name: &str) -> Class {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../corpora/");
        class(&std::fs::read_to_string(format!("{path}{name}")).unwrap())
    }

    #[test]
    fn a_vmsplice_held_across_a_hole_punch_is_that_class() {
        let c = seed("punch_while_pinned_vmsplice.prog");
        assert!(c.pins.contains(&PinKind::Vmsplice), "{c}");
        assert!(
            c.disturbed_while_pinned.contains(&Disturbance::Punch),
            "{c}"
        );
        assert!(c.key().contains("vmsplice/punch"), "{}", c.key());
    }

    #[test]
    fn eviction_while_a_pipe_holds_an_ext4_page() {
        let c = seed("evict_while_pinned_ext4.prog");
        assert!(c.targets.contains(&FileTarget::Ext4), "{c}");
        assert!(c.pins.contains(&PinKind::Vmsplice), "{c}");
        assert!(
            c.disturbed_while_pinned.contains(&Disturbance::UnlinkEvict),
            "{c}"
        );
    }

    #[test]
    fn a_truncate_while_direct_reads_are_in_flight_is_async_io_truncate() {
        let c = seed("uring_odirect_truncate_ext4.prog");
        assert!(c.pins.contains(&PinKind::AsyncIo), "{c}");
        assert!(
            c.disturbed_while_pinned.contains(&Disturbance::Truncate),
            "{c}"
        );
        let c = seed("aio_blkdev_write_punch_ext4.prog");
        assert!(c.pins.contains(&PinKind::AsyncIo), "{c}");
        assert!(
            c.disturbed_while_pinned.contains(&Disturbance::Punch),
            "{c}"
        );
    }

    #[test]
    fn devdax_disable_under_fixed_buffers() {
        let c = seed("devdax_disable_while_pinned.prog");
        assert!(c.targets.contains(&FileTarget::Devdax), "{c}");
        assert!(
            c.disturbed_while_pinned
                .contains(&Disturbance::DevdaxDisable),
            "{c}"
        );
    }

    #[test]
    fn a_mapping_without_pins_is_pin_none_and_sized_by_its_length() {
        let c = class(
            "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
             ftruncate(r0, 0x200000)\n\
             r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
             r2 = mmap(0x0, 0x1000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
             ftruncate(r0, 0x0)\n",
        );
        assert!(c.pins.is_empty());
        assert!(c.disturbed_while_pinned.is_empty(), "not pinned: {c}");
        assert_eq!(
            c.granularity,
            [Granularity::Pte, Granularity::Pmd].into_iter().collect()
        );
        assert!(c.labels().contains(&"pin:none".to_string()));
        assert_eq!(c.key(), "ext4/-/-");
        assert!(!c.concurrent);
    }

    #[test]
    fn a_distribution_names_what_was_never_reached_and_the_largest_class() {
        let mut d = Distribution::default();
        d.add(&seed("punch_while_pinned_vmsplice.prog"));
        d.add(&seed("punch_while_pinned_vmsplice.prog"));
        d.add(&seed("devdax_disable_while_pinned.prog"));
        assert_eq!(d.programs, 3);
        assert_eq!(d.labels["pin:vmsplice"], 2);
        let (k, share) = d.largest().unwrap();
        assert!(k.contains("vmsplice/punch"), "{k}");
        assert!((share - 2.0 / 3.0).abs() < 1e-9);
        let never = d.never();
        assert!(never.contains(&"disturbed:ns_reconfigure".to_string()));
        assert!(!never.contains(&"pin:vmsplice".to_string()));
        let text = d.to_string();
        assert!(text.contains("  pin: vmsplice 2, uring_fixed 1"), "{text}");
        assert!(text.contains("never: "), "{text}");
    }

    #[test]
    fn a_class_seen_less_is_rarer() {
        let common = seed("punch_while_pinned_vmsplice.prog");
        let rare = seed("devdax_disable_while_pinned.prog");
        let mut d = Distribution::default();
        for _ in 0..10 {
            d.add(&common);
        }
        assert!(d.rarity(&rare) > d.rarity(&common));
        // Nothing seen yet: every label counts fully.
        let empty = Distribution::default();
        assert_eq!(empty.rarity(&rare), rare.labels().len() as f64);
    }

    #[test]
    fn every_label_of_every_seed_is_a_known_label() {
        let all = Class::all_labels();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../corpora");
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("prog") {
                continue;
            }
            let c = class(&std::fs::read_to_string(&p).unwrap());
            for l in c.labels() {
                assert!(all.contains(&l), "{}: unknown label {l}", p.display());
            }
        }
    }
}
