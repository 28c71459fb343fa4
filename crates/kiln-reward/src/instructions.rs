//! Instruction following with verifiable format constraints (IFEval-style): the reference is a
//! list of rules, each checked on its own; the response scores 1 when every rule holds
//! (IFEval's strict prompt-level accuracy), or the fraction that hold with `partial_credit`.
//!
//! Rules, one per string (kiln-data's instruction generator writes them):
//!
//! | rule | holds when |
//! |---|---|
//! | `words N` | the response has exactly N whitespace-separated words |
//! | `only W` | every word, its trailing ASCII punctuation stripped, equals W ignoring ASCII case |
//! | `case upper` / `case lower` | it has at least one letter and no lower- (upper-) case letter |
//! | `ends-with S` | the trimmed response ends with S |
//!
//! A rule that does not parse is a bad reference: the verdict is 0 with the reason, never a
//! guess. Each rule's outcome is reported as a part (`words`, `only`, `case`, `ends-with`).

use crate::{Reference, Verdict, Verifier};

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Words(usize),
    Only(String),
    Upper,
    Lower,
    EndsWith(String),
}

impl Rule {
    /// Parses `words 4`, `only fox`, `case upper`, `case lower`, `ends-with !`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, arg) = s.trim().split_once(' ').unwrap_or((s.trim(), ""));
        let arg = arg.trim();
        let need = |what: &str| Err(format!("rule {s:?}: `{name}` needs {what}"));
        match name {
            "words" => match arg.parse::<usize>() {
                Ok(n) => Ok(Rule::Words(n)),
                Err(_) => need("a word count"),
            },
            "only" if !arg.is_empty() && !arg.contains(char::is_whitespace) => {
                Ok(Rule::Only(arg.to_string()))
            }
            "only" => need("one word"),
            "case" => match arg {
                "upper" => Ok(Rule::Upper),
                "lower" => Ok(Rule::Lower),
                _ => need("`upper` or `lower`"),
            },
            "ends-with" if !arg.is_empty() => Ok(Rule::EndsWith(arg.to_string())),
            "ends-with" => need("a suffix"),
            _ => Err(format!(
                "rule {s:?}: unknown rule `{name}` (expected words, only, case or ends-with)"
            )),
        }
    }

    /// The part name this rule reports under.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Words(_) => "words",
            Rule::Only(_) => "only",
            Rule::Upper | Rule::Lower => "case",
            Rule::EndsWith(_) => "ends-with",
        }
    }

    /// Whether `response` satisfies the rule.
    pub fn holds(&self, response: &str) -> bool {
        let text = response.trim();
        match self {
            Rule::Words(n) => text.split_whitespace().count() == *n,
            Rule::Only(w) => {
                let mut words = text.split_whitespace().peekable();
                words.peek().is_some()
                    && words.all(|x| {
                        x.trim_end_matches(|c: char| c.is_ascii_punctuation())
                            .eq_ignore_ascii_case(w)
                    })
            }
            Rule::Upper => {
                text.chars().any(char::is_alphabetic) && !text.chars().any(char::is_lowercase)
            }
            Rule::Lower => {
                text.chars().any(char::is_alphabetic) && !text.chars().any(char::is_uppercase)
            }
            Rule::EndsWith(s) => text.ends_with(s.as_str()),
        }
    }
}

/// Scores a response against `Reference::Instructions`.
#[derive(Clone, Debug, Default)]
pub struct InstructionVerifier {
    /// Score the fraction of rules that hold instead of all-or-nothing.
    pub partial_credit: bool,
}

impl Verifier for InstructionVerifier {
    fn score(&self, response: &str, reference: &Reference) -> Verdict {
        let Reference::Instructions(rules) = reference else {
            return Verdict::failed("instruction verifier needs a list of rules as the reference");
        };
        if rules.is_empty() {
            return Verdict::failed("instruction reference has no rules");
        }
        let parsed: Result<Vec<Rule>, String> = rules.iter().map(|r| Rule::parse(r)).collect();
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => return Verdict::failed(e),
        };
        let held: Vec<bool> = parsed.iter().map(|r| r.holds(response)).collect();
        let n_held = held.iter().filter(|h| **h).count();
        let all = n_held == held.len();
        let score = if self.partial_credit {
            n_held as f64 / held.len() as f64
        } else if all {
            1.0
        } else {
            0.0
        };
        let mut v = Verdict::new(score, all).with_extracted(Some(crate::clip(response.trim())));
        for (rule, h) in parsed.iter().zip(held) {
            // Two rules of one kind: the part is 1 only when both hold.
            let part = v.parts.entry(rule.name().to_string()).or_insert(1.0);
            *part = part.min(if h { 1.0 } else { 0.0 });
        }
        v
    }

    fn name(&self) -> &str {
        "instructions"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> Reference {
        Reference::Instructions(r.iter().map(|s| s.to_string()).collect())
    }

    const FOX4: &[&str] = &["words 4", "only fox", "case upper", "ends-with !"];

    #[test]
    fn the_canonical_answer_follows_every_rule() {
        let v = InstructionVerifier::default().score(" FOX FOX FOX FOX!\n", &rules(FOX4));
        assert_eq!((v.score, v.correct), (1.0, true));
        assert_eq!(v.parts.values().sum::<f64>(), 4.0);
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        let cases = [
            ("FOX FOX FOX!", "words"),
            ("FOX FOX CAT FOX!", "only"),
            ("FOX Fox FOX FOX!", "case"),
            ("FOX FOX FOX FOX.", "ends-with"),
        ];
        for (response, broken) in cases {
            let v = InstructionVerifier::default().score(response, &rules(FOX4));
            assert_eq!((v.score, v.correct), (0.0, false), "{response}");
            for (part, value) in &v.parts {
                let want = if part == broken { 0.0 } else { 1.0 };
                assert_eq!(*value, want, "{response}: part {part}");
            }
            let partial = InstructionVerifier {
                partial_credit: true,
            }
            .score(response, &rules(FOX4));
            assert_eq!(partial.score, 0.75, "{response}");
        }
    }

    #[test]
    fn edge_cases() {
        let v = |r: &str, rs: &[&str]| InstructionVerifier::default().score(r, &rules(rs)).score;
        // No letters at all is neither upper nor lower case; an empty response has no words.
        assert_eq!(v("123!", &["case upper"]), 0.0);
        assert_eq!(v("", &["only fox"]), 0.0);
        assert_eq!(v("   ", &["words 0"]), 1.0);
        assert_eq!(v("fox, fox; fox", &["only fox", "case lower"]), 1.0);
        assert_eq!(v("FOX FOX?!", &["ends-with ?!"]), 1.0);
    }

    #[test]
    fn bad_rules_are_errors_not_guesses() {
        for (bad, why) in [
            ("words many", "word count"),
            ("case title", "upper"),
            ("rhyme fox", "unknown rule"),
            ("only two words", "one word"),
        ] {
            let v = InstructionVerifier::default().score("FOX", &rules(&[bad]));
            assert_eq!(v.score, 0.0);
            assert!(
                v.error.as_deref().unwrap_or("").contains(why),
                "{bad}: {v:?}"
            );
        }
        let v = InstructionVerifier::default().score("FOX", &Reference::text("FOX"));
        assert!(v.error.is_some());
    }
}
