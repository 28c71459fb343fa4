//! MATH: verl's default reward, strengthened. Take the last `\boxed{...}` (also `\fbox{...}` and
//! `\boxed 5`) with balanced braces; score 1 when it is equivalent to the reference, else 0.
//!
//! Equivalence, in order: (1) equal normal forms ([`normalize::normalize`], verl's
//! `strip_string` plus `\text` unwrapping); (2) mathematical equality of the parsed answers
//! ([`parse::parse_answer`], [`equiv::value_eq`]); (3) for text answers (`\text{(C)}`, names),
//! equality of the lower-cased words without brackets.

use std::time::Duration;

use crate::{Reference, Verdict, Verifier, budget};

pub mod equiv;
pub mod extract;
pub mod normalize;
pub mod parse;

use parse::Value;

/// Answers longer than this are compared as normalised strings only.
pub const MAX_ANSWER_LEN: usize = 2_000;

#[derive(Clone, Debug)]
pub struct MathVerifier {
    pub budget: Duration,
    /// Which part of a response is its answer.
    pub extraction: AnswerExtraction,
}

/// How [`MathVerifier`] finds a response's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnswerExtraction {
    /// The last `\boxed{}` only (verl's rule; the default for training).
    #[default]
    Boxed,
    /// [`extract::lenient_answer`]: a box, else "the answer is X", else the last number. For
    /// evaluating models that were never taught to box their answers.
    Lenient,
}

impl Default for MathVerifier {
    fn default() -> Self {
        MathVerifier {
            budget: budget::DEFAULT_BUDGET,
            extraction: AnswerExtraction::Boxed,
        }
    }
}

impl MathVerifier {
    /// The default verifier reading answers with `extraction`.
    pub fn with_extraction(extraction: AnswerExtraction) -> Self {
        MathVerifier {
            extraction,
            ..MathVerifier::default()
        }
    }
}

/// Whether `pred` and `gold` (both final answers, without `\boxed`) are equivalent.
pub fn is_equiv(pred: &str, gold: &str) -> bool {
    let (p, g) = (pred.trim(), gold.trim());
    if p.is_empty() || g.is_empty() {
        return false;
    }
    if p.len() > 8 * MAX_ANSWER_LEN || g.len() > 8 * MAX_ANSWER_LEN {
        return p == g;
    }
    let (np, ng) = (normalize::normalize(p), normalize::normalize(g));
    if np == ng && !np.is_empty() {
        return true;
    }
    if p.len() > MAX_ANSWER_LEN || g.len() > MAX_ANSWER_LEN {
        return false;
    }
    let vp = parse::parse_answer(p);
    let vg = parse::parse_answer(g);
    // Text answers ("\text{(C)}", "\text{Evelyn}") are compared as words; so are answers that
    // do not parse, when they are words (brackets dropped, so never when they hold digits).
    let texty = |v: &Result<Value, parse::ParseError>, raw: &str| match v {
        Ok(Value::Text(_)) => true,
        // Unparsed: only words (no digits, operators or interval brackets).
        Err(_) => !raw
            .chars()
            .any(|c| c.is_ascii_digit() || "+-*/^=<>[]_".contains(c)),
        _ => false,
    };
    if texty(&vp, p) || texty(&vg, g) {
        let (tp, tg) = (text_norm(p), text_norm(g));
        if !tp.is_empty() && tp == tg && !tp.chars().any(|c| c.is_ascii_digit()) {
            return true;
        }
    }
    match (vp, vg) {
        (Ok(a), Ok(b)) => equiv::value_eq(&a, &b),
        _ => false,
    }
}

/// Lower-cased words of a text answer, without `\text{}` wrappers, brackets and spaces.
fn text_norm(s: &str) -> String {
    let mut t = s.to_string();
    for w in [
        "\\text",
        "\\mbox",
        "\\textbf",
        "\\mathrm",
        "\\textnormal",
        "\\$",
        "\\",
    ] {
        t = t.replace(w, "");
    }
    let t: String = t.chars().filter(|c| !"{}()[] ~.$".contains(*c)).collect();
    t.to_lowercase()
}

impl MathVerifier {
    /// Scores a response against a reference answer (or a reference solution with a box).
    pub fn score_answer(&self, response: &str, reference: &str) -> Verdict {
        budget::scope(self.budget, || {
            let gold = if reference.contains("\\boxed") || reference.contains("\\fbox") {
                extract::last_boxed(reference).unwrap_or_else(|| reference.to_string())
            } else {
                reference.to_string()
            };
            let pred = match self.extraction {
                AnswerExtraction::Boxed => extract::last_boxed(response),
                AnswerExtraction::Lenient => extract::lenient_answer(response),
            };
            let Some(pred) = pred else {
                let why = match self.extraction {
                    AnswerExtraction::Boxed => "no \\boxed{} answer",
                    AnswerExtraction::Lenient => "no answer (no box, \"answer is\" or number)",
                };
                return Verdict::new(0.0, false)
                    .with_part("math", 0.0)
                    .with_error(why);
            };
            let ok = is_equiv(&pred, &gold);
            let mut v = Verdict::new(if ok { 1.0 } else { 0.0 }, ok);
            if budget::check_now().is_err() {
                v = Verdict::new(0.0, false).with_error("time budget exceeded");
            }
            let score = v.score;
            v.with_part("math", score)
                .with_extracted(Some(crate::clip(&pred)))
        })
    }
}

impl Verifier for MathVerifier {
    fn score(&self, response: &str, reference: &Reference) -> Verdict {
        match reference.as_text() {
            Some(r) => self.score_answer(response, r),
            None => Verdict::failed("math needs a text reference"),
        }
    }
    fn name(&self) -> &str {
        "math"
    }
}

#[cfg(test)]
mod tests {
    use super::is_equiv;

    #[test]
    fn equivalences() {
        let yes = [
            ("\\frac{1}{2}", "0.5"),
            ("\\dfrac{14}{3}", "\\frac{14}{3}"),
            ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}"),
            ("2\\pi", "\\pi\\cdot 2"),
            (
                "(3, \\frac{\\pi}{2})",
                "\\left( 3, \\frac{\\pi}{2} \\right)",
            ),
            ("x = 5", "5"),
            ("90", "90^\\circ"),
            ("\\text{(C)}", "C"),
            ("\\text{Evelyn}", "Evelyn"),
            ("10,080", "10080"),
            ("10,\\!080", "10080"),
            ("\\$32,\\!348", "32348"),
            ("1,-2", "-2, 1"),
            ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"),
            ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1-\\sqrt5, 1+\\sqrt5"),
            ("(3,4]", "(3, 4]"),
            ("x^2+7x+10", "(x+2)(x+5)"),
            ("(a+5)(b+2)", "ab+2a+5b+10"),
            ("1\\frac{4}{5}", "\\frac{9}{5}"),
            ("137 \\frac{1}{2}", "137.5"),
            ("5.4 \\text{ cents}", "5.4"),
            ("15\\mbox{ cm}^2", "15"),
            (
                "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
                "\\begin{pmatrix} -\\frac13 \\\\ \\frac{2}{3} \\end{pmatrix}",
            ),
            (
                "(-\\infty, 2) \\cup (3, \\infty)",
                "(-\\infty,2)\\cup(3,\\infty)",
            ),
            ("5x - 7y + 11z + 4 = 0", "-5x + 7y - 11z - 4 = 0"),
            ("y = 2x + 3", "y=3+2x"),
            ("x \\in [-2,7]", "[-2, 7]"),
            ("6 - 5i", "-5i + 6"),
            ("\\sqrt[3]{8}", "2"),
            ("50\\%", "0.5"),
            ("1.25", "\\frac{5}{4}"),
            (".0000672", "6.72 \\times 10^{-5}"),
            ("\\cot x", "\\frac{\\cos x}{\\sin x}"),
            ("10", "10.0"),
            ("\\frac{93}{256}", "0.3632812"),
            ("\\sqrt{x-4}", "\\frac{x-4}{\\sqrt{x-4}}"),
            ("6, 8\\text{, and }10", "8\\text{, and }10, 6"),
            ("AB=9, CD=4", "CD=4, AB=9"),
            ("1:4", "{1:4}"),
            ("\\mathbf{2340}", "2340"),
            ("4\\!:\\!51 \\text{ p.m.}", "4\\!:\\!51\\text{p.m.}"),
            ("60^\\circ, 120^\\circ", "120^\\circ, 60^\\circ"),
            ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
            ("2^{4950}", "4^{2475}"),
            (".0000672", "6.72e-5"),
            ("1600", "1.6E3"),
            ("1600", "1.6 \\cdot 10^3"),
            ("\\frac{3840}{289}", "13.2872"),
            ("3R^2", "3R^{2}"),
        ];
        for (a, b) in yes {
            assert!(is_equiv(a, b), "{a} ~ {b}");
            assert!(is_equiv(b, a), "{b} ~ {a}");
        }
        let no = [
            ("\\frac{1}{2}", "\\frac{1}{3}"),
            ("(3,4]", "(3,4)"),
            ("(1,2)", "(2,1)"),
            ("1,-2", "1, 2"),
            ("x^2+7x+10", "(x+2)(x+6)"),
            ("\\sqrt{2}", "1.414"),
            ("2\\pi", "6.28"),
            ("5x - 7y + 11z + 4 = 0", "5x - 7y + 11z - 4 = 0"),
            ("\\text{(C)}", "D"),
            ("6 - 5i", "6 + 5i"),
            ("2^{1000000000}", "2"),
            ("10", "100"),
            // Lenient rules must not swallow a second answer or a false statement.
            ("5", "5 \\text{ or } 6"),
            ("6", "5 = 6"),
            ("5", "5, 6"),
            ("5", "5 \\pm 1"),
            ("x = 5", "x"),
            // math-verify rounds to 6 decimal places and says yes to these two.
            (".0000672", ".0000673"),
            ("\\frac{2}{1005}", "0.00199"),
            ("\\$306,\\!956.63", "\\$306,\\!956.64"),
            ("81, 256", "81256"),
            ("2^{4950}", "2^{4951}"),
            ("(a + b)(a + c)(b + c)", "(a + b)(a + c)(b + c]"),
            ("1600", "1.6e4"),
            ("2e", "2"),
        ];
        for (a, b) in no {
            assert!(!is_equiv(a, b), "{a} !~ {b}");
            assert!(!is_equiv(b, a), "{b} !~ {a}");
        }
    }
}
