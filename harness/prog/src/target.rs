//! The target: every call the descriptions define, with its amd64 syscall number or
//! pseudo-call kind, typed parameters, resources, flag sets and structs.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::descs::{self, DescError};

/// What kind of thing a resource is, as the executor must track it. Every resource type in
/// the descriptions derives from one of the roots named by [`ResourceKind::root_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A file descriptor (`fd`); its value is the fd number.
    Fd,
    /// A memory mapping (`map`); its value is the mapping's address.
    Map,
    /// An io_uring instance (`ring`, created by `daxdiff_uring_setup`); its value is the
    /// ring fd, and the executor keeps the SQ/CQ it mapped for it.
    Ring,
    /// A registered buffer table on a ring (`rbufs`); a dependency token whose value is the
    /// register call's return value.
    RegBufs,
    /// A pipe (`pipe`, created by `daxdiff_pipe`); the executor keeps both ends. A parameter
    /// named `wfd` gets the write end, any other the read end ([`PipeEnd`]).
    Pipe,
    /// A process id (`pid`); its value is the pid.
    Pid,
    /// A forked child (`child`, a `pid`), created by `daxdiff_fork_touch`.
    Child,
    /// A Linux AIO context (`aioctx`, created by `daxdiff_aio_setup`); its value is the
    /// context id `io_setup` gave, and the executor counts the requests in flight on it.
    Aio,
}

impl ResourceKind {
    /// All kinds, roots first as declared in the descriptions.
    pub const ALL: [ResourceKind; 8] = [
        ResourceKind::Fd,
        ResourceKind::Map,
        ResourceKind::Ring,
        ResourceKind::RegBufs,
        ResourceKind::Pipe,
        ResourceKind::Pid,
        ResourceKind::Child,
        ResourceKind::Aio,
    ];

    /// The resource name in the descriptions that marks this kind.
    pub fn root_name(self) -> &'static str {
        match self {
            ResourceKind::Fd => "fd",
            ResourceKind::Map => "map",
            ResourceKind::Ring => "ring",
            ResourceKind::RegBufs => "rbufs",
            ResourceKind::Pipe => "pipe",
            ResourceKind::Pid => "pid",
            ResourceKind::Child => "child",
            ResourceKind::Aio => "aioctx",
        }
    }

    /// The kind a resource of this name marks, if it is one of the roots.
    pub fn from_root_name(name: &str) -> Option<ResourceKind> {
        Self::ALL.into_iter().find(|k| k.root_name() == name)
    }
}

/// Which end of a pipe resource a parameter gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipeEnd {
    Read,
    Write,
}

/// Where a call's file names live, from the call variant (`openat$ext4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileTarget {
    /// The program's directory on the ext4 (fsdax) mount.
    Ext4,
    /// The program's directory on the xfs (fsdax) mount.
    Xfs,
    /// The devdax character device(s); file names are device names (`dax0.0`).
    Devdax,
    /// The program's directory on the ext4 mounted without DAX on the slow disk: the
    /// non-DAX end of direct I/O whose user buffer is a DAX mapping.
    Nodax,
    /// The raw slow block device (any name stands for it): the other non-DAX end.
    Blkdev,
}

impl FileTarget {
    pub const ALL: [FileTarget; 5] = [
        FileTarget::Ext4,
        FileTarget::Xfs,
        FileTarget::Devdax,
        FileTarget::Nodax,
        FileTarget::Blkdev,
    ];

    /// The variant suffix that selects this target (`ext4` in `openat$ext4`).
    pub fn suffix(self) -> &'static str {
        match self {
            FileTarget::Ext4 => "ext4",
            FileTarget::Xfs => "xfs",
            FileTarget::Devdax => "devdax",
            FileTarget::Nodax => "nodax",
            FileTarget::Blkdev => "blkdev",
        }
    }

    /// Whether this target is a filesystem in fsdax mode (as opposed to device DAX).
    pub fn is_fsdax(self) -> bool {
        matches!(self, FileTarget::Ext4 | FileTarget::Xfs)
    }

    /// Whether I/O on this target is DAX I/O. Direct I/O on a DAX file is a copy through
    /// the kernel's DAX path, which never pins the user buffer; only a non-DAX target's
    /// direct I/O pins it (gup-fast, FOLL_PIN, for as long as the request is in flight).
    pub fn is_dax(self) -> bool {
        matches!(
            self,
            FileTarget::Ext4 | FileTarget::Xfs | FileTarget::Devdax
        )
    }
}

/// A pseudo-call: something the executor does that no single syscall does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pseudo {
    /// `daxdiff_evict(mode)`: drop caches or unmount+remount a DAX filesystem, so inodes
    /// of closed files are evicted.
    Evict,
    /// `daxdiff_devdax_disable()`: unbind/disable the devdax device (`daxctl disable-device`).
    DevdaxDisable,
    /// `daxdiff_devdax_enable()`: re-enable it.
    DevdaxEnable,
    /// `daxdiff_ns_reconfigure(mode)`: reconfigure the devdax namespace (`ndctl
    /// create-namespace -f -e … -m mode`).
    NsReconfigure,
    /// `daxdiff_fork_touch(map, offset, len, mode) child`: fork; the child reads or writes
    /// the range of the mapping as `mode` says and exits; the parent does not wait.
    ForkTouch,
    /// `daxdiff_wait(child)`: reap the child (waitpid); returns its exit status.
    Wait,
    /// `daxdiff_sleep(ms)`: sleep on the calling thread.
    Sleep,
    /// `daxdiff_barrier()`: wait until every call handed to the second thread so far is done.
    Barrier,
    /// `daxdiff_pipe(flags) pipe`: pipe2(); the resource stands for both ends.
    Pipe,
    /// `daxdiff_uring_setup(entries) ring`: io_uring_setup plus mapping its rings.
    UringSetup,
    /// `daxdiff_uring_rw$buf(ring, op, fd, buf, len, off)`: submit one IORING_OP_READ or
    /// IORING_OP_WRITE; `daxdiff_uring_rw$iov(ring, op, fd, iov, nr, off)`: one READV or
    /// WRITEV. Waits for the completion and returns the CQE result (negative errno).
    UringRw,
    /// `daxdiff_uring_update_buffers(ring, bufs, offset, iov, nr)`:
    /// IORING_REGISTER_BUFFERS_UPDATE replacing registered buffers from `offset` on.
    UringUpdateBuffers,
    /// `daxdiff_uring_rw_fixed(ring, bufs, op, fd, index, addr, len, off)`: submit one
    /// READ_FIXED/WRITE_FIXED on registered buffer `index` at `addr` and wait; returns the
    /// CQE result.
    UringRwFixed,
    /// `daxdiff_uring_submit$buf(ring, op, fd, buf, len, off)` / `$iov(ring, op, fd, iov, nr,
    /// off)`: submit one READ/WRITE (READV/WRITEV) and return 0 once the kernel took it,
    /// without waiting: the request stays in flight (its buffer pinned, for direct I/O on a
    /// slow disk) while later calls run. Its completion is reaped by `daxdiff_uring_wait`;
    /// its result, which can depend on timing, is never reported.
    UringSubmit,
    /// `daxdiff_uring_wait(ring)`: wait for every request submitted on the ring with
    /// `daxdiff_uring_submit` and not yet waited for; returns how many that was.
    UringWait,
    /// `daxdiff_aio_setup(nr) aioctx`: io_setup; returns 0 (the context id, an address,
    /// is the resource's value, never a result).
    AioSetup,
    /// `daxdiff_aio_submit$buf(ctx, op, fd, buf, len, off)` / `$iov(ctx, op, fd, iov, nr, off)`:
    /// io_submit of one IOCB_CMD_PREAD/PWRITE (PREADV/PWRITEV); returns 0 once the kernel
    /// took it, without waiting, like `daxdiff_uring_submit`.
    AioSubmit,
    /// `daxdiff_aio_wait(ctx)`: io_getevents until every request submitted on the context
    /// and not yet waited for has completed; returns how many that was.
    AioWait,
}

impl Pseudo {
    pub const ALL: [Pseudo; 18] = [
        Pseudo::Evict,
        Pseudo::DevdaxDisable,
        Pseudo::DevdaxEnable,
        Pseudo::NsReconfigure,
        Pseudo::ForkTouch,
        Pseudo::Wait,
        Pseudo::Sleep,
        Pseudo::Barrier,
        Pseudo::Pipe,
        Pseudo::UringSetup,
        Pseudo::UringRw,
        Pseudo::UringUpdateBuffers,
        Pseudo::UringRwFixed,
        Pseudo::UringSubmit,
        Pseudo::UringWait,
        Pseudo::AioSetup,
        Pseudo::AioSubmit,
        Pseudo::AioWait,
    ];

    /// The call's base name in the descriptions (`daxdiff_evict`); variants add `$suffix`.
    pub fn call_name(self) -> &'static str {
        match self {
            Pseudo::Evict => "daxdiff_evict",
            Pseudo::DevdaxDisable => "daxdiff_devdax_disable",
            Pseudo::DevdaxEnable => "daxdiff_devdax_enable",
            Pseudo::NsReconfigure => "daxdiff_ns_reconfigure",
            Pseudo::ForkTouch => "daxdiff_fork_touch",
            Pseudo::Wait => "daxdiff_wait",
            Pseudo::Sleep => "daxdiff_sleep",
            Pseudo::Barrier => "daxdiff_barrier",
            Pseudo::Pipe => "daxdiff_pipe",
            Pseudo::UringSetup => "daxdiff_uring_setup",
            Pseudo::UringRw => "daxdiff_uring_rw",
            Pseudo::UringUpdateBuffers => "daxdiff_uring_update_buffers",
            Pseudo::UringRwFixed => "daxdiff_uring_rw_fixed",
            Pseudo::UringSubmit => "daxdiff_uring_submit",
            Pseudo::UringWait => "daxdiff_uring_wait",
            Pseudo::AioSetup => "daxdiff_aio_setup",
            Pseudo::AioSubmit => "daxdiff_aio_submit",
            Pseudo::AioWait => "daxdiff_aio_wait",
        }
    }

    pub fn from_call_name(name: &str) -> Option<Pseudo> {
        Self::ALL.into_iter().find(|p| p.call_name() == name)
    }
}

/// How the executor runs a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// A real syscall with this amd64 number; arguments are passed in order as registers.
    Syscall { nr: u64 },
    /// A pseudo-call, implemented by the executor.
    Pseudo(Pseudo),
}

/// Data direction of a pointer parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// The kernel reads the buffer (write, vmsplice).
    In,
    /// The kernel writes the buffer (read): the executor checksums it afterwards.
    Out,
    InOut,
}

/// An inclusive integer range with a step, from `intptr[min:max, step]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntRange {
    pub min: u64,
    pub max: u64,
    pub step: u64,
}

/// The type of one parameter, reduced to what programs need.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// `intN` / `intptr`, optionally with a range. Program form: [`crate::Arg::Int`].
    Int { bytes: u8, range: Option<IntRange> },
    /// `const[X]`: always this value. Program form: `Flags([name])` or `Int`.
    Const { value: u64, name: Option<String> },
    /// `flags[set]`: names or numbers from a flag set. Program form: `Flags` or `Int`.
    Flags { set: String },
    /// `len[param]`: the length (bytes, or elements for iovecs) of another parameter, given
    /// by its index. Program form: `Int`.
    Len { of: usize },
    /// A resource of this type (`fd_ext4`) or one derived from it. Program form: `Res`, or
    /// `Int` for a raw value.
    Resource {
        name: String,
        kind: ResourceKind,
        pipe_end: Option<PipeEnd>,
    },
    /// `ptr[in, filename]` or `ptr[in, string[set]]`: a file name relative to the call's
    /// [`FileTarget`]. `names` are the names generation picks from (any relative name is
    /// valid). Program form: `Path`.
    Path { names: Vec<String> },
    /// `ptr[dir, array[int8]]` / `buffer[dir]`: a data buffer. Program form: `Buf`.
    Buffer { dir: Dir },
    /// `vma`: an address inside a mapping. Program form: `Buf(BufRef::Map)`.
    Vma,
    /// `ptr[dir, array[iovec]]`. Program form: `Iovecs`.
    Iovecs { dir: Dir },
    /// `ptr[in, name]` for a struct of integer fields. Program form: `Struct`.
    Struct { name: String },
}

/// One parameter of a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
}

/// One call the descriptions define.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDesc {
    /// Full name with variant: `openat$ext4`.
    pub name: String,
    pub kind: CallKind,
    pub params: Vec<Param>,
    /// The resource type the call returns (`fd_ext4`), if it returns one.
    pub ret: Option<String>,
    /// Kind of the returned resource.
    pub ret_kind: Option<ResourceKind>,
    /// Where its file names live, from the variant suffix.
    pub file_target: Option<FileTarget>,
    /// Description file and line that define the call.
    pub source: String,
}

impl CallDesc {
    /// The base name: `openat` for `openat$ext4`.
    pub fn base_name(&self) -> &str {
        self.name.split('$').next().unwrap_or(&self.name)
    }
}

/// A resource type: `resource fd_ext4[fd_file]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDesc {
    pub name: String,
    /// The resource it derives from (`None` for roots such as `fd`).
    pub parent: Option<String>,
    pub kind: ResourceKind,
    /// Special values usable in place of a produced resource (`-1`).
    pub specials: Vec<u64>,
}

/// A flag set: `open_flags = O_RDWR, O_DIRECT, …`, names resolved to values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSet {
    pub name: String,
    /// Names and values; a plain number in the set has no name.
    pub values: Vec<(Option<String>, u64)>,
    /// Whether values are single bits (or zero) meant to be or'ed together.
    pub bitmask: bool,
}

/// A struct of integer fields, passed by pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructDesc {
    pub name: String,
    /// Field name, size in bytes, and type (only `Int`, `Const` and `Flags`).
    pub fields: Vec<(String, u8, ParamType)>,
}

impl StructDesc {
    /// Size of the struct in bytes (fields are laid out without padding, little-endian).
    pub fn size(&self) -> usize {
        self.fields.iter().map(|f| f.1 as usize).sum()
    }
}

/// Everything the descriptions define, indexed for lookup.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Target {
    pub calls: Vec<CallDesc>,
    pub resources: Vec<ResourceDesc>,
    pub flag_sets: Vec<FlagSet>,
    pub structs: Vec<StructDesc>,
    /// Every named constant (from `.const` files and flag values), amd64.
    pub consts: HashMap<String, u64>,
    #[serde(skip)]
    pub(crate) call_index: HashMap<String, usize>,
}

/// The descriptions compiled into the crate, so host and guest share one target.
pub const BUILTIN_DESCS: &[(&str, &str)] = &[
    ("base.txt", include_str!("../../../syscall-descs/base.txt")),
    (
        "files.txt",
        include_str!("../../../syscall-descs/files.txt"),
    ),
    ("mm.txt", include_str!("../../../syscall-descs/mm.txt")),
    ("pins.txt", include_str!("../../../syscall-descs/pins.txt")),
    (
        "pseudo.txt",
        include_str!("../../../syscall-descs/pseudo.txt"),
    ),
    (
        "sys_amd64.const",
        include_str!("../../../syscall-descs/sys_amd64.const"),
    ),
    (
        "pseudo_amd64.const",
        include_str!("../../../syscall-descs/pseudo_amd64.const"),
    ),
];

impl Target {
    /// Build a target from description sources: `(file name, text)` pairs; names ending in
    /// `.const` are const files, the rest syzlang.
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<Target, DescError> {
        let mut t = descs::load(sources)?;
        t.reindex();
        Ok(t)
    }

    /// The target built from the descriptions compiled into the crate. They are checked by
    /// this crate's tests, so failing to build them is a build defect, not a runtime event.
    pub fn builtin() -> &'static Target {
        static TARGET: OnceLock<Target> = OnceLock::new();
        TARGET.get_or_init(|| match Target::from_sources(BUILTIN_DESCS) {
            Ok(t) => t,
            Err(e) => panic!("built-in syscall descriptions are broken: {e}"),
        })
    }

    /// Rebuild the name index (after deserializing a target).
    pub fn reindex(&mut self) {
        self.call_index = self
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
    }

    /// The call with this full name (`openat$ext4`).
    pub fn call(&self, name: &str) -> Option<&CallDesc> {
        self.call_index.get(name).map(|&i| &self.calls[i])
    }

    pub fn resource(&self, name: &str) -> Option<&ResourceDesc> {
        self.resources.iter().find(|r| r.name == name)
    }

    pub fn flag_set(&self, name: &str) -> Option<&FlagSet> {
        self.flag_sets.iter().find(|f| f.name == name)
    }

    pub fn struct_desc(&self, name: &str) -> Option<&StructDesc> {
        self.structs.iter().find(|s| s.name == name)
    }

    /// Whether a resource of type `produced` can be passed where `wanted` is expected:
    /// the same type or one derived from it (`fd_ext4` where `fd` is wanted).
    pub fn res_compatible(&self, produced: &str, wanted: &str) -> bool {
        let mut cur = Some(produced);
        while let Some(name) = cur {
            if name == wanted {
                return true;
            }
            cur = self.resource(name).and_then(|r| r.parent.as_deref());
        }
        false
    }

    /// The value of `A|B|C` (each name a constant).
    pub fn flags_value(&self, names: &[String]) -> Option<u64> {
        names
            .iter()
            .try_fold(0u64, |acc, n| self.consts.get(n).map(|v| acc | v))
    }

    /// The integer value of a scalar argument (`Int` or `Flags`); `None` for others or for
    /// unknown names.
    pub fn scalar_value(&self, arg: &crate::Arg) -> Option<u64> {
        match arg {
            crate::Arg::Int(v) => Some(*v),
            crate::Arg::Flags(names) => self.flags_value(names),
            _ => None,
        }
    }

    /// Whether a flags argument (by name, or as a number) has `flag` set; false for other
    /// arguments, a missing one, or a flag of value 0.
    pub fn has_flag(&self, arg: Option<&crate::Arg>, flag: &str) -> bool {
        match arg {
            Some(crate::Arg::Flags(n)) => n.iter().any(|x| x == flag),
            Some(a @ crate::Arg::Int(_)) => {
                let v = self.scalar_value(a).unwrap_or(0);
                self.consts
                    .get(flag)
                    .is_some_and(|f| *f != 0 && v & f == *f)
            }
            _ => false,
        }
    }

    /// The bytes of a struct argument: fields in order, little-endian, no padding.
    pub fn struct_bytes(&self, name: &str, fields: &[crate::Arg]) -> Option<Vec<u8>> {
        let desc = self.struct_desc(name)?;
        if desc.fields.len() != fields.len() {
            return None;
        }
        let mut out = Vec::with_capacity(desc.size());
        for ((_, size, _), arg) in desc.fields.iter().zip(fields) {
            let v = self.scalar_value(arg)?;
            out.extend_from_slice(&v.to_le_bytes()[..*size as usize]);
        }
        Some(out)
    }
}
