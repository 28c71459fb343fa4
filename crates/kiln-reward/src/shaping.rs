//! Shaping terms: the `<think>…</think><answer>…</answer>` format reward, DAPO's soft overlong
//! penalty, and [`Combined`], a weighted sum of named verifiers that reports every part.

use std::sync::Arc;

use crate::{Reference, Verdict, Verifier, budget};

/// 1.0 when the response is exactly `<think>…</think>` then `<answer>…</answer>` (whitespace
/// around and between them allowed, nothing else outside), with one of each tag; else 0.0.
#[derive(Clone, Debug, Default)]
pub struct FormatReward {
    /// The prompt already opened `<think>` (TinyZero's base template ends with it): the response
    /// must then not open it again.
    pub think_opened_in_prompt: bool,
}

impl FormatReward {
    pub fn check(&self, response: &str) -> Result<(), &'static str> {
        let count = |t: &str| response.matches(t).count();
        let want_open = if self.think_opened_in_prompt { 0 } else { 1 };
        if count("<think>") != want_open {
            return Err("wrong number of <think> tags");
        }
        if count("</think>") != 1 || count("<answer>") != 1 || count("</answer>") != 1 {
            return Err("each of </think>, <answer>, </answer> must appear exactly once");
        }
        let s = response.trim();
        let body = if self.think_opened_in_prompt {
            s
        } else {
            s.strip_prefix("<think>").ok_or("text before <think>")?
        };
        let close = body.find("</think>").ok_or("no </think>")?;
        let rest = body[close + "</think>".len()..].trim_start();
        let ans = rest
            .strip_prefix("<answer>")
            .ok_or("text between </think> and <answer>")?;
        let end = ans.find("</answer>").ok_or("no </answer>")?;
        if !ans[end + "</answer>".len()..].trim().is_empty() {
            return Err("text after </answer>");
        }
        Ok(())
    }
}

impl Verifier for FormatReward {
    fn score(&self, response: &str, _reference: &Reference) -> Verdict {
        match self.check(response) {
            Ok(()) => Verdict::new(1.0, true).with_part("format", 1.0),
            Err(e) => Verdict::new(0.0, false)
                .with_part("format", 0.0)
                .with_error(e),
        }
    }
    fn name(&self) -> &str {
        "format"
    }
}

/// How the overlong penalty measures a response.
pub type LengthFn = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// DAPO's soft overlong punishment: 0 while `len <= max_len - buffer`, then linear down to
/// `-penalty` at `len == max_len`, and `-penalty` beyond.
#[derive(Clone)]
pub struct OverlongPenalty {
    pub max_len: usize,
    pub buffer: usize,
    pub penalty: f64,
    /// Length of a response; by default its number of chars. Give a tokenizer's count to
    /// measure in tokens as DAPO does.
    pub length: LengthFn,
}

impl std::fmt::Debug for OverlongPenalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlongPenalty")
            .field("max_len", &self.max_len)
            .field("buffer", &self.buffer)
            .field("penalty", &self.penalty)
            .finish()
    }
}

impl OverlongPenalty {
    pub fn new(max_len: usize, buffer: usize) -> Self {
        OverlongPenalty {
            max_len,
            buffer,
            penalty: 1.0,
            length: Arc::new(|s: &str| s.chars().count()),
        }
    }
    pub fn with_length(mut self, f: impl Fn(&str) -> usize + Send + Sync + 'static) -> Self {
        self.length = Arc::new(f);
        self
    }
    /// The penalty for a response of `len` units.
    pub fn penalty_for(&self, len: usize) -> f64 {
        let start = self.max_len.saturating_sub(self.buffer);
        if len <= start {
            0.0
        } else if len >= self.max_len || self.buffer == 0 {
            -self.penalty
        } else {
            -self.penalty * (len - start) as f64 / self.buffer as f64
        }
    }
}

impl Verifier for OverlongPenalty {
    fn score(&self, response: &str, _reference: &Reference) -> Verdict {
        let p = self.penalty_for((self.length)(response));
        Verdict::new(p, p == 0.0).with_part("overlong", p)
    }
    fn name(&self) -> &str {
        "overlong"
    }
}

/// A weighted sum of named verifiers. `score = Σ weight·part.score`; every part is reported in
/// `parts` under its name (weighted). `correct` and `extracted` come from the first part (the
/// task verifier); errors of all parts are joined.
#[derive(Clone, Default)]
pub struct Combined {
    pub parts: Vec<(String, f64, Arc<dyn Verifier>)>,
}

impl Combined {
    pub fn new() -> Self {
        Combined::default()
    }
    pub fn with(
        mut self,
        name: impl Into<String>,
        weight: f64,
        v: impl Verifier + 'static,
    ) -> Self {
        self.parts.push((name.into(), weight, Arc::new(v)));
        self
    }
}

impl Verifier for Combined {
    fn score(&self, response: &str, reference: &Reference) -> Verdict {
        budget::scope(budget::DEFAULT_BUDGET, || {
            let mut out = Verdict::new(0.0, false);
            let mut errors = Vec::new();
            for (i, (name, w, v)) in self.parts.iter().enumerate() {
                let r = v.score(response, reference);
                out.score += w * r.score;
                out.parts.insert(name.clone(), w * r.score);
                if i == 0 {
                    out.correct = r.correct;
                    out.extracted = r.extracted;
                }
                if let Some(e) = r.error {
                    errors.push(format!("{name}: {e}"));
                }
            }
            if !errors.is_empty() {
                out.error = Some(errors.join("; "));
            }
            out
        })
    }
    fn name(&self) -> &str {
        "combined"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CountdownVerifier;

    #[test]
    fn format_reward() {
        let f = FormatReward::default();
        assert!(f.check("<think>a</think><answer>b</answer>").is_ok());
        assert!(
            f.check("  <think>a\nb</think>\n <answer>b</answer>\n")
                .is_ok()
        );
        assert!(f.check("<think>a</think>x<answer>b</answer>").is_err());
        assert!(f.check("<think>a</think><answer>b</answer>tail").is_err());
        assert!(f.check("pre<think>a</think><answer>b</answer>").is_err());
        assert!(
            f.check("<think>a</think><answer>b</answer><answer>c</answer>")
                .is_err()
        );
        assert!(f.check("<answer>b</answer><think>a</think>").is_err());
        assert!(f.check("<think>a<answer>b</answer></think>").is_err());
        let p = FormatReward {
            think_opened_in_prompt: true,
        };
        assert!(p.check("a</think><answer>b</answer>").is_ok());
        assert!(p.check("<think>a</think><answer>b</answer>").is_err());
    }

    #[test]
    fn dapo_overlong() {
        // DAPO: L_max = 20480, L_cache = 4096.
        let p = OverlongPenalty::new(20480, 4096);
        assert_eq!(p.penalty_for(0), 0.0);
        assert_eq!(p.penalty_for(16384), 0.0);
        assert_eq!(p.penalty_for(16384 + 2048), -0.5);
        assert_eq!(p.penalty_for(20480), -1.0);
        assert_eq!(p.penalty_for(30000), -1.0);
        let q = OverlongPenalty::new(10, 4).with_length(|s| s.split_whitespace().count());
        assert_eq!(q.score("a b c d e f g h", &Reference::None).score, -0.5);
    }

    #[test]
    fn combined_reports_every_part() {
        let c = Combined::new()
            .with("countdown", 1.0, CountdownVerifier::new(0.0))
            .with(
                "format",
                0.5,
                FormatReward {
                    think_opened_in_prompt: true,
                },
            )
            .with("overlong", 1.0, OverlongPenalty::new(1000, 100));
        let r = Reference::Countdown {
            target: 6,
            nums: vec![1, 2, 3],
        };
        let v = c.score("1+2+3 = 6</think>\n<answer>1+2+3</answer>", &r);
        assert_eq!(v.score, 1.5);
        assert!(v.correct);
        assert_eq!(v.parts["countdown"], 1.0);
        assert_eq!(v.parts["format"], 0.5);
        assert_eq!(v.parts["overlong"], 0.0);
        assert_eq!(v.extracted.as_deref(), Some("1+2+3"));
        let v = c.score("<answer>1+2+4</answer>", &r);
        assert_eq!(v.score, 0.0);
        assert_eq!(v.parts.len(), 3);
        assert!(v.error.unwrap().contains("format:"));
    }
}
