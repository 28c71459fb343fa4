//! GSM8K: the reference is the number after the last `####`; the response's answer is its boxed
//! value when it has one, else the last number in it (commas removed).

use std::time::Duration;

use num_bigint::BigInt;
use num_rational::BigRational;

use crate::{Reference, Verdict, Verifier, budget, math::extract::last_boxed};

/// Longest response read (from its end).
const MAX_SCAN: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct Gsm8kVerifier {
    pub budget: Duration,
}

impl Default for Gsm8kVerifier {
    fn default() -> Self {
        Gsm8kVerifier {
            budget: budget::DEFAULT_BUDGET,
        }
    }
}

/// The reference number: what follows the last `####` (or the whole text), commas removed.
pub fn reference_answer(reference: &str) -> Option<BigRational> {
    let tail = match reference.rfind("####") {
        Some(i) => &reference[i + 4..],
        None => reference,
    };
    first_number(tail)
}

/// Scans `s` for numbers `-?\d[\d,]*(\.\d+)?` and returns them as exact decimals, in order.
pub fn numbers(s: &str) -> Vec<BigRational> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let neg = i > 0 && b[i - 1] == b'-';
            let mut int = String::new();
            while i < b.len()
                && (b[i].is_ascii_digit()
                    || (b[i] == b',' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                if b[i] != b',' {
                    int.push(b[i] as char);
                }
                i += 1;
            }
            let mut frac = String::new();
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    frac.push(b[i] as char);
                    i += 1;
                }
            }
            if int.len() + frac.len() > 400 {
                continue; // not a GSM8K answer; skip rather than build a huge number
            }
            if let Some(v) = decimal(&int, &frac, neg) {
                out.push(v);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn decimal(int: &str, frac: &str, neg: bool) -> Option<BigRational> {
    let digits: BigInt = format!("{int}{frac}").parse().ok()?;
    let den = num_traits::pow(BigInt::from(10), frac.len());
    let v = BigRational::new(digits, den);
    Some(if neg { -v } else { v })
}

fn first_number(s: &str) -> Option<BigRational> {
    numbers(s).into_iter().next()
}

fn last_number(s: &str) -> Option<BigRational> {
    numbers(s).pop()
}

impl Gsm8kVerifier {
    /// The response's answer: the boxed value when present, else the last number.
    pub fn extract(response: &str) -> Option<(String, BigRational)> {
        let start = response.len().saturating_sub(MAX_SCAN);
        let start = (start..=response.len())
            .find(|&i| response.is_char_boundary(i))
            .unwrap_or(response.len());
        let tail = &response[start..];
        if let Some(b) = last_boxed(tail)
            && let Some(v) = last_number(&b)
        {
            return Some((b, v));
        }
        let v = last_number(tail)?;
        Some((fmt_rat(&v), v))
    }
}

fn fmt_rat(v: &BigRational) -> String {
    if v.is_integer() {
        v.to_integer().to_string()
    } else {
        format!("{}", v)
    }
}

impl Verifier for Gsm8kVerifier {
    fn score(&self, response: &str, reference: &Reference) -> Verdict {
        let Some(r) = reference.as_text() else {
            return Verdict::failed("gsm8k needs a text reference");
        };
        let Some(want) = reference_answer(r) else {
            return Verdict::failed(format!("no number in the reference {r:?}"));
        };
        budget::scope(self.budget, || match Self::extract(response) {
            None => Verdict::new(0.0, false)
                .with_part("gsm8k", 0.0)
                .with_error("no number in the response"),
            Some((text, got)) => {
                let ok = got == want;
                let s = if ok { 1.0 } else { 0.0 };
                Verdict::new(s, ok)
                    .with_part("gsm8k", s)
                    .with_extracted(Some(crate::clip(&text)))
            }
        })
    }
    fn name(&self) -> &str {
        "gsm8k"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(resp: &str, reference: &str) -> f64 {
        Gsm8kVerifier::default()
            .score(resp, &Reference::text(reference))
            .score
    }

    #[test]
    fn gsm8k_rules() {
        let r = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18";
        assert_eq!(score("so she makes $18.", r), 1.0);
        assert_eq!(score("9 * 2 = 18 dollars, i.e. 18.00", r), 1.0);
        assert_eq!(score("the answer is 18 and then 19", r), 0.0); // last number wins
        assert_eq!(score("\\boxed{18} (I first thought 17)", r), 1.0); // boxed wins over last
        assert_eq!(score("no numbers", r), 0.0);
        assert_eq!(score("It costs 1,234 dollars", "#### 1234"), 1.0);
        assert_eq!(score("It is -3", "#### -3"), 1.0);
        assert_eq!(score("It is 3", "#### -3"), 0.0);
        assert_eq!(score("It is 0.5", "#### 1/2"), 0.0); // GSM8K answers are plain numbers
        assert_eq!(score("It is 2.5", "#### 2.5"), 1.0);
    }
}
