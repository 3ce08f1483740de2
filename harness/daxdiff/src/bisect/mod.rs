//! Bisection of a behaviour change: over the Debian kernels the registry serves (version
//! lists) or over a git tree, judging each kernel by repeated runs of a reproducer.

pub mod build;
pub mod cli;
pub mod git;
pub mod result;
pub mod search;
pub mod session;
pub mod signal;
pub mod state;
pub mod trial;
pub mod versions;

pub use git::{BuildFailed, GitBisect, GitBisected, StepKernel, StepKernels};
pub use result::{Bisection, Mode, Point};
pub use search::{Judge, Kind, ListSearch, Next, Rates, RunVerdict, StepVerdict, Tally};
pub use session::{Session, Settings};
pub use signal::{Predicate, Signal};
pub use state::{Role, State, StepRecord};
pub use trial::{Tester, Trial, VmTester};
pub use versions::{Bisected, Candidate, VersionRange};
