//! Keeping a program's address-space calls on the program's own mappings.
//!
//! A call on an address and a length (`munmap`, `mremap`, `madvise`, `mprotect`, ...) whose
//! length runs past the mapping it starts in (a mutated length: `munmap(&r3, 0x200000)` on a
//! 0x1ff000 mapping) would act on whatever lies next to it: another mapping of the program,
//! or the executor's own memory (a thread's KCOV area, its stack). What lies there depends on
//! the order in which threads and mappings came to be, not on the kernel, so the two kernels
//! of a pair would differ for no reason of theirs, and the program's process could die. The
//! executor therefore cuts such a length at the end of the memory the program mapped, the
//! same way on both kernels.

/// Page-aligned address ranges `[start, end)` that the program mapped and has not unmapped.
#[derive(Debug, Default)]
pub struct ProgramMaps {
    ranges: Vec<(u64, u64)>,
}

const PAGE: u64 = 4096;

fn page_up(x: u64) -> u64 {
    x.saturating_add(PAGE - 1) & !(PAGE - 1)
}

impl ProgramMaps {
    /// A mapping the program made (`len` as passed; the kernel maps whole pages).
    pub fn add(&mut self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.remove(addr, len);
        self.ranges.push((addr, addr.saturating_add(page_up(len))));
        self.ranges.sort_unstable();
    }

    /// Memory the program unmapped (or moved away).
    pub fn remove(&mut self, addr: u64, len: u64) {
        let (s, e) = (addr, addr.saturating_add(page_up(len)));
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(a, b) in &self.ranges {
            if b <= s || e <= a {
                out.push((a, b));
                continue;
            }
            if a < s {
                out.push((a, s));
            }
            if e < b {
                out.push((e, b));
            }
        }
        self.ranges = out;
    }

    /// The length to pass for a call on `[addr, addr + len)`: `len` itself while the whole
    /// range is program memory, else the part from `addr` up to the first byte that is not
    /// (0 when `addr` is not program memory: the kernel then answers for an empty range).
    pub fn confine(&self, addr: u64, len: u64) -> u64 {
        let want = page_up(len);
        let mut reached = addr;
        loop {
            let next = self
                .ranges
                .iter()
                .find(|&&(a, b)| a <= reached && reached < b)
                .map(|&(_, b)| b);
            match next {
                Some(b) if b - addr < want => reached = b,
                Some(_) => return len,
                None => return reached - addr,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_past_the_mapping_is_cut_at_its_end() {
        let mut m = ProgramMaps::default();
        m.add(0x7f00_0000_1000, 0x1ff000);
        // The case a campaign met: one page too many, which was a KCOV area's first page.
        assert_eq!(m.confine(0x7f00_0000_1000, 0x200000), 0x1ff000);
        assert_eq!(m.confine(0x7f00_0000_1000, 0x1ff000), 0x1ff000);
        // Unaligned lengths inside the mapping pass unchanged: the kernel rounds them.
        assert_eq!(m.confine(0x7f00_0000_1000, 0x1234), 0x1234);
        assert_eq!(m.confine(0x7f00_0010_0000, 0x200000), 0x100000);
    }

    #[test]
    fn adjacent_program_mappings_count_as_one_and_holes_stop_the_range() {
        let mut m = ProgramMaps::default();
        m.add(0x10000, 0x2000);
        m.add(0x12000, 0x1000);
        assert_eq!(m.confine(0x10000, 0x3000), 0x3000);
        m.remove(0x11000, 0x1000);
        assert_eq!(m.confine(0x10000, 0x3000), 0x1000);
        assert_eq!(
            m.confine(0x11000, 0x1000),
            0,
            "unmapped: nothing of it is the program's"
        );
        assert_eq!(m.confine(0x12000, 0x1000), 0x1000);
    }

    #[test]
    fn remapping_moves_what_counts() {
        let mut m = ProgramMaps::default();
        m.add(0x40000, 0x4000);
        // mremap to a new place: the old range goes, the new one comes.
        m.remove(0x40000, 0x4000);
        m.add(0x90000, 0x8000);
        assert_eq!(m.confine(0x40000, 0x1000), 0);
        assert_eq!(m.confine(0x90000, 0x8000), 0x8000);
        assert_eq!(m.confine(0x90000, 0x9000), 0x8000);
    }
}
