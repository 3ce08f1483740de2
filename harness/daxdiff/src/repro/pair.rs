//! The two kernels a finding is triaged on, running one program at a time; each side is a
//! `fuzz::KernelSide` (fresh guest after a report or a guest death, as in the campaign).

use anyhow::Result;
use indicatif::ProgressBar;

use daxdiff_prog::Program;

use super::signal::Signal;
use crate::diff::{Outcome, Side, Suppressions};
use crate::fuzz::{KernelSide, Run};

pub struct Pair {
    pub a: KernelSide,
    pub b: KernelSide,
    pub suppressions: Suppressions,
    /// Runs per kernel before a candidate counts as showing the signal.
    pub runs: usize,
    /// Every run on a freshly booted guest.
    pub boot_per_run: bool,
    pub bar: ProgressBar,
}

impl Pair {
    pub fn side(&mut self, side: Side) -> &mut KernelSide {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn run(&mut self, side: Side, program: &str) -> Result<Run> {
        let run = self.side(side).run(program);
        if self.boot_per_run {
            self.side(side).shutdown();
        }
        run
    }

    /// Whether `prog` shows the signal over `runs` runs per kernel (judged by
    /// `Signal::holds`). A report or problem seen on one kernel only is looked for there
    /// first, and a candidate without it is rejected without running the other kernel.
    pub fn shows(&mut self, signal: &Signal, prog: &Program) -> Result<bool> {
        let text = prog.to_text();
        let mut a: Vec<Outcome> = Vec::new();
        let mut b: Vec<Outcome> = Vec::new();
        let order = match signal.decisive_side() {
            Some((Side::B, _)) => [Side::B, Side::A],
            _ => [Side::A, Side::B],
        };
        for side in order {
            for _ in 0..self.runs {
                let o = self.run(side, &text)?.outcome;
                if let Some((s, _)) = signal.decisive_side() {
                    if s == side && !signal.decisive_half(&o) {
                        return Ok(false);
                    }
                }
                match side {
                    Side::A => a.push(o),
                    Side::B => b.push(o),
                }
            }
        }
        let kernels = (self.a.name.clone(), self.b.name.clone());
        Ok(signal.holds(&a, &b, (&kernels.0, &kernels.1), &self.suppressions))
    }

    pub fn shutdown(&mut self) {
        self.a.shutdown();
        self.b.shutdown();
    }
}
