//! Kernel reports for daxdiff: finds KASAN, WARNING, BUG, bad page state, percpu_ref and
//! refcount underflows, hung tasks, RCU stalls, lockdep, faults and panics in a console log
//! or kmsg dump, titles them like syzkaller and gives each a stable dedup [`Signature`].
//!
//! ```
//! let console = "[    2.031496] WARNING: CPU: 0 PID: 1 at fs/dax.c:460 dax_insert_entry+0x36e/0x380\n\
//!                [    2.038216] Call Trace:\n\
//!                [    2.038486]  dax_fault_iter+0x286/0x6a0\n";
//! let reports = daxdiff_observe::parse(console);
//! assert_eq!(reports[0].title, "WARNING in dax_insert_entry");
//! assert_eq!(reports[0].location.as_ref().unwrap().to_string(), "fs/dax.c:460");
//! ```

pub mod console;
mod frames;
mod guilty;
mod kinds;
mod normalize;
mod report;
mod signature;
mod title;

pub use frames::{Frame, SourceLocation};
pub use kinds::ReportKind;
pub use normalize::{normalize, normalize_line, printable};
pub use report::{parse, Report};
pub use signature::{Signature, SignatureError};
