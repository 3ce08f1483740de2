//! daxdiff's program model: syzlang descriptions of the DAX syscall surface, typed
//! resource-aware programs with a text and a JSON form, generation, mutation, and the
//! controller ↔ executor wire types. Pure Rust: the guest executor links it statically.
//!
//! Start at [`Target::builtin`] (what calls exist), [`encoding::parse`] and
//! [`Program::to_text`] (text form), [`generate::generate`] and [`mutate::mutate`].

pub mod analysis;
pub mod class;
pub mod csource;
pub mod descs;
pub mod encoding;
pub mod generate;
pub mod mutate;
pub mod program;
pub mod rng;
pub mod syz;
pub mod target;
pub mod validate;
pub mod wire;

pub use descs::DescError;
pub use encoding::{parse, ParseError};
pub use program::{Arg, BufRef, Call, Iovec, Program, ResId, ThreadId};
pub use target::{CallDesc, CallKind, FileTarget, ParamType, Pseudo, ResourceKind, Target};
pub use validate::{validate, ValidationError};
