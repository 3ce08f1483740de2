//! The differential oracle: what one program did on one kernel (`Outcome`), with everything
//! run-specific normalized away, and whether two kernels agree on it (`Verdict`).

mod compare;
mod outcome;
mod suppress;

pub use compare::{compare, differences, judge, Difference, Side, Verdict};
pub use outcome::{normalize, CallOutcome, CrashTitle, KernelReport, Outcome, Ret, StepOutcome};
pub use suppress::{Suppression, SuppressionError, Suppressions};
