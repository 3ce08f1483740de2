//! Timed, named steps whose outcomes become the report's `steps` list, and the one-line
//! error (`bringup: <step> failed: <why>`) the controller shows when one fails.

use std::time::Instant;

use crate::command::CmdOutput;
use crate::topology::Step;

/// Why a step failed: a one-line reason and the full record (commands and outputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFailure {
    pub why: String,
    pub detail: String,
}

impl StepFailure {
    pub fn new(why: impl Into<String>) -> StepFailure {
        let why = why.into();
        StepFailure {
            detail: why.clone(),
            why,
        }
    }

    pub fn with_detail(why: impl Into<String>, detail: impl Into<String>) -> StepFailure {
        StepFailure {
            why: why.into(),
            detail: detail.into(),
        }
    }

    /// A command that failed: its output is the reason, its full record the detail.
    pub fn command(out: &CmdOutput) -> StepFailure {
        StepFailure {
            why: out.failure_reason(),
            detail: out.to_string(),
        }
    }
}

/// Runs steps and keeps their records; the first failure becomes the report's error.
pub struct Recorder {
    who: &'static str,
    pub steps: Vec<Step>,
    pub error: Option<String>,
}

impl Recorder {
    /// `who` prefixes error messages: `bringup` or `status`.
    pub fn new(who: &'static str) -> Recorder {
        Recorder {
            who,
            steps: Vec::new(),
            error: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Runs one step. The closure may append what it did to the detail string; on failure
    /// the step's detail is the failure's record. Returns `None` when the step failed.
    pub fn run<T>(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce(&mut String) -> Result<T, StepFailure>,
    ) -> Option<T> {
        let name = name.into();
        let start = Instant::now();
        let mut detail = String::new();
        let result = f(&mut detail);
        let duration_ms = start.elapsed().as_millis() as u64;
        match result {
            Ok(v) => {
                self.steps.push(Step {
                    name,
                    ok: true,
                    duration_ms,
                    detail,
                });
                Some(v)
            }
            Err(fail) => {
                let message = format!("{}: {name} failed: {}", self.who, fail.why);
                if self.error.is_none() {
                    self.error = Some(message);
                }
                let detail = if detail.is_empty() {
                    fail.detail
                } else {
                    format!("{detail}\n{}", fail.detail)
                };
                self.steps.push(Step {
                    name,
                    ok: false,
                    duration_ms,
                    detail,
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_success_and_first_failure() {
        let mut r = Recorder::new("bringup");
        assert_eq!(
            r.run("one", |d| {
                d.push_str("did one");
                Ok(1)
            }),
            Some(1)
        );
        assert_eq!(
            r.run("two", |_| Err::<(), _>(StepFailure::with_detail(
                "no region",
                "ndctl said x"
            ))),
            None
        );
        assert_eq!(
            r.run("three", |_| Err::<(), _>(StepFailure::new("later"))),
            None
        );
        assert_eq!(r.error.as_deref(), Some("bringup: two failed: no region"));
        assert_eq!(r.steps.len(), 3);
        assert!(r.steps[0].ok);
        assert_eq!(r.steps[0].detail, "did one");
        assert!(!r.steps[1].ok);
        assert_eq!(r.steps[1].detail, "ndctl said x");
    }
}
