//! Parallel batch scoring with isolation: a panic or a blown time budget in one sample gives that
//! sample 0 with the reason recorded, and the batch goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::budget::{self, WALL_FACTOR, thread_cpu_time};
use crate::{Reference, Verdict, Verifier};

#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Budget of one sample, in CPU time of the scoring thread (wall-clock net: 10x). Verifiers
    /// stop at the deadline; a sample whose call ran past it anyway scores 0.
    pub budget: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            budget: Duration::from_millis(100),
        }
    }
}

/// Scores every `(response, reference)` pair in parallel (rayon), in input order.
pub fn score_batch<S: AsRef<str> + Sync>(
    v: &dyn Verifier,
    items: &[(S, Reference)],
) -> Vec<Verdict> {
    score_batch_with(v, items, &BatchOptions::default())
}

pub fn score_batch_with<S: AsRef<str> + Sync>(
    v: &dyn Verifier,
    items: &[(S, Reference)],
    opts: &BatchOptions,
) -> Vec<Verdict> {
    items
        .par_iter()
        .map(|(resp, reference)| score_one(v, resp.as_ref(), reference, opts))
        .collect()
}

/// Scores one sample with panic isolation and the time budget.
pub fn score_one(
    v: &dyn Verifier,
    response: &str,
    reference: &Reference,
    opts: &BatchOptions,
) -> Verdict {
    let (start, cpu_start) = (Instant::now(), thread_cpu_time());
    let r = catch_unwind(AssertUnwindSafe(|| {
        budget::scope_from(opts.budget, cpu_start, start, || {
            v.score(response, reference)
        })
    }));
    let (wall, cpu) = (start.elapsed(), thread_cpu_time().saturating_sub(cpu_start));
    let blown = cpu > opts.budget || wall > opts.budget * WALL_FACTOR;
    match r {
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Verdict::failed(format!("verifier panicked: {msg}"))
        }
        Ok(verdict) if blown => Verdict::failed(format!(
            "time budget exceeded: {:.1} ms CPU, {:.1} ms wall, budget {:.1} ms",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            opts.budget.as_secs_f64() * 1e3
        ))
        .with_extracted(verdict.extracted),
        Ok(verdict) => {
            if verdict
                .error
                .as_deref()
                .is_some_and(|e| e.contains("time budget exceeded"))
            {
                // The verifier hit the deadline inside: that is a 0, whatever it scored.
                return Verdict {
                    score: 0.0,
                    correct: false,
                    ..verdict
                };
            }
            verdict
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Evil;
    impl Verifier for Evil {
        fn score(&self, response: &str, _r: &Reference) -> Verdict {
            match response {
                "panic" => panic!("boom"),
                "slow" => {
                    budget::spin_for(Duration::from_millis(60));
                    Verdict::new(1.0, true)
                }
                "sleepy" => {
                    // Blocked, not computing: within the wall-clock net (10x) this is no failure.
                    std::thread::sleep(Duration::from_millis(60));
                    Verdict::new(1.0, true)
                }
                _ => Verdict::new(1.0, true),
            }
        }
        fn name(&self) -> &str {
            "evil"
        }
    }

    #[test]
    fn isolation() {
        let items: Vec<(&str, Reference)> = ["ok", "panic", "slow", "ok", "sleepy"]
            .iter()
            .map(|s| (*s, Reference::None))
            .collect();
        let out = score_batch_with(
            &Evil,
            &items,
            &BatchOptions {
                budget: Duration::from_millis(30),
            },
        );
        assert_eq!(out.len(), 5);
        assert_eq!(out[4].score, 1.0);
        assert_eq!(out[0].score, 1.0);
        assert_eq!(out[1].score, 0.0);
        assert!(out[1].error.as_deref().unwrap().contains("boom"));
        assert_eq!(out[2].score, 0.0);
        assert!(out[2].error.as_deref().unwrap().contains("time budget"));
        assert_eq!(out[3].score, 1.0);
    }

    #[test]
    fn real_verifiers_stop_at_the_deadline() {
        // A zero budget: the MATH verifier's final clock check fails, so the sample scores 0
        // with the reason, although the answer is right.
        let m = crate::MathVerifier {
            budget: Duration::ZERO,
            ..Default::default()
        };
        let v = m.score("\\boxed{\\frac{1}{2}}", &Reference::text("0.5"));
        assert_eq!(v.score, 0.0);
        assert!(v.error.as_deref().unwrap().contains("time budget"), "{v:?}");
        let items = vec![("\\boxed{\\frac{1}{2}}", Reference::text("0.5"))];
        let out = score_batch_with(
            &crate::MathVerifier::default(),
            &items,
            &BatchOptions {
                budget: Duration::ZERO,
            },
        );
        assert_eq!(out[0].score, 0.0);
        assert!(out[0].error.as_deref().unwrap().contains("time budget"));
        let out = score_batch(&crate::MathVerifier::default(), &items);
        assert_eq!(out[0].score, 1.0);
    }
}
