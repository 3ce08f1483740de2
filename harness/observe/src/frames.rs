//! Stack frames as kernels print them (x86, arm64, s390, powerpc; raw, symbolized by
//! syzkaller, or decoded by `decode_stacktrace.sh`), and which frames are infrastructure.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::LazyLock;

/// A source position printed next to a frame (`fs/dax.c:460`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLocation {
    pub file: String,
    pub line: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One frame of a kernel stack trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The symbol as printed, compiler suffixes included (`lookup_open.isra.0`).
    pub function: String,
    /// Offset into the symbol (`+0x36e`), when printed.
    pub offset: Option<u64>,
    /// Size of the symbol (`/0x380`), when printed.
    pub size: Option<u64>,
    /// Module the symbol lives in (`[dax_pmem]`), when not built in.
    pub module: Option<String>,
    /// Source position, when the log was symbolized.
    pub location: Option<SourceLocation>,
    /// A function inlined into the next frame (`[inline]`): it has no frame of its own.
    pub inline: bool,
    /// False for frames the unwinder only guessed (`? foo`, `(unreliable)`).
    pub reliable: bool,
}

static OFFSET_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\s*(?P<paren>\()?(?:\[<?[0-9a-fA-F]+>?\]\s*)*(?P<guess>\?\s+)?(?P<func>[A-Za-z_][A-Za-z0-9_.$]*)\+0x(?P<off>[0-9a-fA-F]+)(?:/0x(?P<size>[0-9a-fA-F]+))?(?P<rest>.*)$",
    )
    .expect("frame pattern")
});
/// `pipe_lock fs/pipe.c:92 [inline]`: syzkaller-symbolized frames without an offset.
static LOCATED_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\s*(?P<guess>\?\s+)?(?P<func>[A-Za-z_][A-Za-z0-9_.$]*)\s+(?P<file>[\w./+-]+\.(?:c|h|S|rs)):(?P<line>\d+)(?P<inline>\s+\[inline\])?\s*$",
    )
    .expect("located frame pattern")
});
/// `poison_element (mm/mempool.c:83 mm/mempool.c:102)`: decode_stacktrace.sh output.
static DECODED_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\s*(?P<guess>\?\s+)?(?P<func>[A-Za-z_][A-Za-z0-9_.$]*) \((?P<where>[^()]*(?:\([^()]*\)[^()]*)*)\)\s*$",
    )
    .expect("decoded frame pattern")
});
/// A frame reduced to its name (`? __die`), only meaningful inside a call trace.
static BARE_FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?P<guess>\?\s+)?(?P<func>[A-Za-z_][A-Za-z0-9_.$]*)\s*$").expect("bare frame")
});
static MODULE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\[(?P<module>[A-Za-z0-9_-]+)(?:\s+[0-9a-f]+)?\]").expect("module pattern")
});
static LOCATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<file>[\w./+-]+\.(?:c|h|S|rs)):(?P<line>\d+)").expect("location pattern")
});
/// The program counter line of a register dump, per architecture.
static PC_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\s*(?:(?:RIP|EIP|IP):\s*(?:[0-9a-fA-F]{4}:)?(?:\[<[0-9a-fA-F]+>\]\s*)?|NIP\s+\[[0-9a-fA-F]+\]\s+|e?pc\s*:\s*|Krnl PSW\s*:\s*[0-9a-fA-F]+\s+[0-9a-fA-F]+\s+\()(?P<frame>[^)]*\)?.*)$",
    )
    .expect("pc pattern")
});

impl Frame {
    /// Parses a stack-trace line that names a function with an offset or a source position.
    /// Returns `None` for anything else (registers, code bytes, text).
    pub fn parse(line: &str) -> Option<Frame> {
        if let Some(c) = OFFSET_FRAME.captures(line) {
            let rest = c.name("rest").map_or("", |m| m.as_str());
            let module = MODULE
                .captures(rest)
                .map(|m| m["module"].to_string())
                .filter(|m| m != "inline");
            return Some(Frame {
                function: c["func"].to_string(),
                offset: u64::from_str_radix(&c["off"], 16).ok(),
                size: c
                    .name("size")
                    .and_then(|s| u64::from_str_radix(s.as_str(), 16).ok()),
                module,
                location: last_location(rest),
                inline: rest.contains("[inline]"),
                reliable: c.name("guess").is_none()
                    && c.name("paren").is_none()
                    && !rest.contains("(unreliable)"),
            });
        }
        if let Some(c) = LOCATED_FRAME.captures(line) {
            return Some(Frame {
                location: c["line"].parse().ok().map(|line| SourceLocation {
                    file: tidy_path(&c["file"]),
                    line,
                }),
                inline: c.name("inline").is_some(),
                ..Frame::named(&c["func"], c.name("guess").is_none())
            });
        }
        if let Some(c) = DECODED_FRAME.captures(line) {
            return Some(Frame {
                location: last_location(&c["where"]),
                ..Frame::named(&c["func"], c.name("guess").is_none())
            });
        }
        None
    }

    /// Like [`Frame::parse`], and also accepts a bare function name (`? __die`), which only
    /// denotes a frame inside a call trace.
    pub fn parse_in_trace(line: &str) -> Option<Frame> {
        Frame::parse(line).or_else(|| {
            BARE_FRAME
                .captures(line)
                .map(|c| Frame::named(&c["func"], c.name("guess").is_none()))
        })
    }

    /// The function a register dump's program-counter line points at (`RIP: 0010:foo+0x1/0x2`,
    /// `NIP [c000…] foo+0x24/0x40`, `pc : foo+0x…`, `Krnl PSW : … (foo+0x…)`), if symbolized.
    pub fn parse_pc(line: &str) -> Option<Frame> {
        let c = PC_LINE.captures(line)?;
        Frame::parse(c["frame"].trim_end())
    }

    fn named(function: &str, reliable: bool) -> Frame {
        Frame {
            function: function.to_string(),
            offset: None,
            size: None,
            module: None,
            location: None,
            inline: false,
            reliable,
        }
    }

    /// The function name without compiler clone suffixes (`bad_page.cold` → `bad_page`,
    /// `lookup_open.isra.0` → `lookup_open`): the same function in two builds.
    pub fn name(&self) -> &str {
        base_name(&self.function)
    }
}

/// A symbol without its compiler clone suffixes (`.cold`, `.isra.0`, `.constprop.0`, …):
/// C identifiers have no dots, so everything from the first dot on is a suffix.
pub fn base_name(symbol: &str) -> &str {
    symbol.split_once('.').map_or(symbol, |(name, _)| name)
}

fn last_location(text: &str) -> Option<SourceLocation> {
    let c = LOCATION.captures_iter(text).last()?;
    Some(SourceLocation {
        file: tidy_path(&c["file"]),
        line: c["line"].parse().ok()?,
    })
}

fn tidy_path(path: &str) -> String {
    path.trim_start_matches("./").to_string()
}

/// Lines inside a call trace that are not frames: context markers (`<TASK>`, `<IRQ>`),
/// interrupt boundaries, and the register dump of an interrupted context.
pub(crate) fn is_stack_context(line: &str) -> bool {
    static CONTEXT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^\s*(?:<[/A-Z]+>|<\.\.\.>|---- interrupt|Exception stack|(?:RIP|EIP|IP|Code|RSP|RBP|RAX|RBX|RCX|RDX|RSI|RDI|R\d+|FS|GS|CS|DS|CR\d|DR\d|PKRU|EAX|EBX|ECX|EDX|ESI|EDI|EBP|ESP|NIP|LR|CTR|REGS|MSR|CFAR|IRQMASK|SOFTE|GPR\d+|ORIG_RAX)(?::|\s))",
        )
        .expect("stack context pattern")
    });
    CONTEXT.is_match(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(line: &str) -> Frame {
        Frame::parse(line).unwrap_or_else(|| panic!("not a frame: {line:?}"))
    }

    #[test]
    fn x86_frame_with_module() {
        let f = frame("  ? dax_pmem_percpu_exit+0x50/0x50 [dax_pmem]");
        assert_eq!(f.function, "dax_pmem_percpu_exit");
        assert_eq!((f.offset, f.size), (Some(0x50), Some(0x50)));
        assert_eq!(f.module.as_deref(), Some("dax_pmem"));
        assert!(!f.reliable);
    }

    #[test]
    fn module_with_build_id() {
        let f = frame(" smb2_queryfs+0x6a/0xf0 [cifs f90b72658819bd21c94769b6a652029a07a7172f]");
        assert_eq!(f.module.as_deref(), Some("cifs"));
        assert!(f.reliable);
    }

    #[test]
    fn syzkaller_symbolized_frames() {
        let f = frame(" dax_iomap_rw+0xe34/0xed0 fs/dax.c:1756");
        assert_eq!(
            f.location.as_ref().map(|l| l.to_string()).as_deref(),
            Some("fs/dax.c:1756")
        );
        assert!(!f.inline);
        let f = frame(" pipe_lock fs/pipe.c:92 [inline]");
        assert_eq!(f.function, "pipe_lock");
        assert_eq!(f.offset, None);
        assert!(f.inline);
    }

    #[test]
    fn s390_and_powerpc_address_columns() {
        let f = frame(" [<00000002d6b8a6c6>] rcu_do_batch+0x146/0x608");
        assert_eq!((f.function.as_str(), f.reliable), ("rcu_do_batch", true));
        let f = frame("([<00000002d71dd21a>] percpu_ref_switch_to_atomic_rcu+0x1ea/0x1f8)");
        assert!(!f.reliable);
        let f = frame(
            " [c000000022cbb9c0] [c0000000009063c8] pmem_pagemap_kill+0x28/0x40 (unreliable)",
        );
        assert_eq!(f.function, "pmem_pagemap_kill");
        assert!(!f.reliable);
        let f = frame(" [<ffffffff8de17609>] ? __schedule+0x239/0x6f0");
        assert_eq!(f.function, "__schedule");
        assert!(!f.reliable);
    }

    #[test]
    fn decoded_frames_take_the_functions_own_position() {
        let f = frame(" poison_element (mm/mempool.c:83 mm/mempool.c:102)");
        assert_eq!(f.location.unwrap().to_string(), "mm/mempool.c:102");
        let f = frame(" ? local_clock (arch/x86/include/asm/preempt.h:85 (discriminator 9) kernel/sched/clock.c:319 (discriminator 9))");
        assert_eq!(f.function, "local_clock");
        assert_eq!(f.location.unwrap().to_string(), "kernel/sched/clock.c:319");
    }

    #[test]
    fn text_is_not_a_frame() {
        for line in [
            "Code: 59 fe ff ff 48 8b 30",
            "RSP: 0018:ffffc9000a0cbb78 EFLAGS: 00010002",
            "Modules linked in: kvm vhost",
            "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.15.0-1 04/01/2014",
            "EXT4-fs (pmem0): mounted filesystem",
            "kthread",
        ] {
            assert_eq!(Frame::parse(line), None, "{line}");
        }
        assert_eq!(
            Frame::parse_in_trace("? __die").map(|f| f.reliable),
            Some(false)
        );
        assert_eq!(Frame::parse_in_trace("Modules linked in:"), None);
    }

    #[test]
    fn program_counter_lines() {
        let pc = |l: &str| Frame::parse_pc(l).map(|f| f.function);
        assert_eq!(
            pc("RIP: 0010:dax_insert_entry+0x36e/0x380").as_deref(),
            Some("dax_insert_entry")
        );
        assert_eq!(
            pc("RIP: 0010:wakeup_kswapd (./linux/mm/vmscan.c:7812)").as_deref(),
            Some("wakeup_kswapd")
        );
        assert_eq!(
            pc("EIP: memset (arch/x86/include/asm/string_32.h:168 arch/x86/lib/memcpy_32.c:17)")
                .as_deref(),
            Some("memset")
        );
        assert_eq!(
            pc("NIP [c000000000906344] pmem_pagemap_cleanup+0x24/0x40").as_deref(),
            Some("pmem_pagemap_cleanup")
        );
        assert_eq!(
            pc("IP: arch_remove_memory+0x50/0xc0").as_deref(),
            Some("arch_remove_memory")
        );
        assert_eq!(pc("Krnl PSW : 0704c00180000000 00000002d71dd21e (percpu_ref_switch_to_atomic_rcu+0x1ee/0x1f8)").as_deref(), Some("percpu_ref_switch_to_atomic_rcu"));
        assert_eq!(
            pc("pc : set_pfnblock_flags_mask+0x8d/0xe0").as_deref(),
            Some("set_pfnblock_flags_mask")
        );
        assert_eq!(pc("RIP: 0033:0x7f31039389bd"), None);
        assert_eq!(pc("NIP:  00007fff93b3d3f4 LR: 00007fff93b3d3f4"), None);
        assert_eq!(pc("NIP [00007fff93b3d3f4] 0x7fff93b3d3f4"), None);
    }

    #[test]
    fn clone_suffixes_are_not_part_of_the_name() {
        assert_eq!(frame(" bad_page.cold+0xac/0xb1").name(), "bad_page");
        assert_eq!(
            frame(" io_uring_cancel_generic.constprop.0+0x60b/0x695").name(),
            "io_uring_cancel_generic"
        );
    }
}
