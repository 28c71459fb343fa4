//! Fault injection, for the reliability tests: kill the process, or poison a value, at a named
//! point of a named step. Off unless a plan is given: `RunOptions::faults`, which `kiln train`
//! reads from the `KILN_FAULT` environment variable.
//!
//! A plan is a comma-separated list of `action@point:steps`:
//! - `kill@update:3` sends SIGKILL to this process at the point `update` of RL step 3 (no
//!   destructor, no flush: what a preempted machine does);
//! - `nan@advantages:2-4` makes the advantages of steps 2 to 4 NaN (a NaN loss and gradient).
//!
//! Steps count from 1 (the step being computed); SFT points count SFT steps. The points are
//! listed in [`POINTS`]; docs/reliability.md says which test uses each.

use std::ops::RangeInclusive;

use crate::error::{Result, TrainError};

/// Every point a plan may name, with where it sits.
pub const POINTS: &[(&str, &str)] = &[
    ("sft", "after an SFT optimizer step"),
    (
        "eval",
        "inside an evaluation, after a task's held-out set is scored (step 0: before RL)",
    ),
    (
        "rollout",
        "after the rollout, before scoring and the update",
    ),
    ("update", "after the first optimizer step of an RL step"),
    (
        "metrics",
        "after a step's metrics are written, before its checkpoint",
    ),
    (
        "checkpoint-files",
        "inside a checkpoint write: the policy is written, the rest not",
    ),
    (
        "checkpoint-rename",
        "a complete temporary checkpoint, not yet renamed",
    ),
    (
        "checkpoint-prune",
        "the checkpoint renamed, older ones not yet removed",
    ),
    ("advantages", "the advantages of a step (with `nan`)"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Nan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    action: Action,
    point: String,
    steps: RangeInclusive<usize>,
}

/// A set of faults to inject; the default is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    faults: Vec<Fault>,
}

/// The environment variable `kiln train` reads its plan from.
pub const ENV_VAR: &str = "KILN_FAULT";

impl FaultPlan {
    /// Parses `action@point:steps[,...]`; errors name the entry and what is wrong with it.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |entry: &str, why: String| {
            TrainError::recipe(ENV_VAR, format!("fault {entry:?}: {why}"))
        };
        let mut faults = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (action, rest) = entry
                .split_once('@')
                .ok_or_else(|| bad(entry, "expected action@point:steps".into()))?;
            let action = match action {
                "kill" => Action::Kill,
                "nan" => Action::Nan,
                other => return Err(bad(entry, format!("unknown action {other:?} (kill, nan)"))),
            };
            let (point, steps) = rest
                .split_once(':')
                .ok_or_else(|| bad(entry, "expected point:steps after @".into()))?;
            if !POINTS.iter().any(|(p, _)| *p == point) {
                let known: Vec<&str> = POINTS.iter().map(|(p, _)| *p).collect();
                return Err(bad(
                    entry,
                    format!("unknown point {point:?} (one of {})", known.join(", ")),
                ));
            }
            let number = |s: &str| {
                s.parse::<usize>()
                    .map_err(|_| bad(entry, format!("{s:?} is not a step number")))
            };
            let steps = match steps.split_once('-') {
                Some((a, b)) => number(a)?..=number(b)?,
                None => number(steps)?..=number(steps)?,
            };
            faults.push(Fault {
                action,
                point: point.to_string(),
                steps,
            });
        }
        Ok(Self { faults })
    }

    /// The plan in `KILN_FAULT`, or none when it is unset.
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENV_VAR) {
            Ok(spec) => Self::parse(&spec),
            Err(_) => Ok(Self::default()),
        }
    }

    fn has(&self, action: Action, point: &str, step: usize) -> bool {
        self.faults
            .iter()
            .any(|f| f.action == action && f.point == point && f.steps.contains(&step))
    }

    /// Kills the process here when the plan says so.
    pub fn point(&self, point: &str, step: usize) {
        if self.has(Action::Kill, point, step) {
            kill_self();
        }
    }

    /// Whether the plan poisons this point's values at this step.
    pub fn poisons(&self, point: &str, step: usize) -> bool {
        self.has(Action::Nan, point, step)
    }
}

/// SIGKILL to this process: nothing after it runs, as when a machine is preempted.
fn kill_self() -> ! {
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // Not reached on unix; elsewhere the closest thing.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plans_and_names_bad_entries() {
        let plan = FaultPlan::parse("kill@update:3, nan@advantages:2-4").unwrap();
        assert!(plan.has(Action::Kill, "update", 3));
        assert!(!plan.has(Action::Kill, "update", 2));
        assert!(plan.poisons("advantages", 2) && plan.poisons("advantages", 4));
        assert!(!plan.poisons("advantages", 5));
        assert_eq!(FaultPlan::parse("").unwrap(), FaultPlan::default());
        for (spec, msg) in [
            ("explode@update:1", "unknown action \"explode\""),
            ("kill@updaet:1", "unknown point \"updaet\""),
            ("kill@update", "expected point:steps"),
            ("kill@update:x", "\"x\" is not a step number"),
            ("update:1", "expected action@point:steps"),
        ] {
            let e = FaultPlan::parse(spec).unwrap_err().to_string();
            assert!(e.contains("KILN_FAULT") && e.contains(msg), "{spec}: {e}");
        }
    }
}
