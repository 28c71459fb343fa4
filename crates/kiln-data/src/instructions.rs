//! Instruction following with verifiable format constraints, sized for tiny CPU models.
//!
//! Each instance asks for a word repeated a number of times, in a given case, ending with a given
//! mark: `say fox 4 times, uppercase, end with !:` is answered `FOX FOX FOX FOX!`. The reference
//! is the list of rules the answer must satisfy, written in the rule syntax of kiln-reward's
//! `InstructionVerifier` (IFEval-style: each rule checked on its own, the prompt counts as
//! followed when every rule holds):
//!
//! | rule | holds when |
//! |---|---|
//! | `words N` | the response has exactly N whitespace-separated words |
//! | `only W` | every word, its trailing punctuation stripped, is W (any case) |
//! | `case upper` / `case lower` | it has letters, and none of them is lower (upper) case |
//! | `ends-with S` | the trimmed response ends with S |
//!
//! Like the other generators, example `i` depends only on `(config, seed, i)`.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{DataError, Result};
use crate::example::{Example, Prompt, Reference};
use crate::synth::{item_rng, uniform_below, uniform_in};

/// Letter case an answer must be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LetterCase {
    Upper,
    Lower,
}

impl LetterCase {
    /// `upper` / `lower`, as in the rule `case upper`.
    pub fn as_str(self) -> &'static str {
        match self {
            LetterCase::Upper => "upper",
            LetterCase::Lower => "lower",
        }
    }

    /// `word` written in this case.
    pub fn apply(self, word: &str) -> String {
        match self {
            LetterCase::Upper => word.to_uppercase(),
            LetterCase::Lower => word.to_lowercase(),
        }
    }
}

/// Knobs of the instruction generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstructionConfig {
    /// Words to repeat (letters only), drawn uniformly.
    pub words: Vec<String>,
    /// Fewest repetitions (>= 1).
    pub min_count: u32,
    /// Most repetitions.
    pub max_count: u32,
    /// Cases drawn uniformly.
    pub cases: Vec<LetterCase>,
    /// Final marks drawn uniformly (non-empty, no whitespace, no letters).
    pub endings: Vec<String>,
}

impl Default for InstructionConfig {
    fn default() -> Self {
        Self {
            words: [
                "cat", "dog", "fox", "owl", "bee", "cow", "hen", "pig", "yak", "elk",
            ]
            .map(String::from)
            .to_vec(),
            min_count: 2,
            max_count: 6,
            cases: vec![LetterCase::Upper, LetterCase::Lower],
            endings: [".", "!", "?"].map(String::from).to_vec(),
        }
    }
}

impl InstructionConfig {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(format!("instruction generator: {m}")));
        if self.words.is_empty() || self.cases.is_empty() || self.endings.is_empty() {
            return bad("`words`, `cases` and `endings` must each be non-empty".into());
        }
        if let Some(w) = self
            .words
            .iter()
            .find(|w| w.is_empty() || !w.chars().all(|c| c.is_ascii_alphabetic()))
        {
            return bad(format!("word {w:?} must be ASCII letters only"));
        }
        if let Some(e) = self
            .endings
            .iter()
            .find(|e| e.is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_alphanumeric()))
        {
            return bad(format!(
                "ending {e:?} must be non-empty punctuation (no letters, digits or spaces)"
            ));
        }
        if self.min_count < 1 || self.min_count > self.max_count || self.max_count > 50 {
            return bad(format!(
                "need 1 <= min_count <= max_count <= 50, got {}..={}",
                self.min_count, self.max_count
            ));
        }
        Ok(())
    }
}

/// One instance: what to write, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub word: String,
    pub count: u32,
    pub case: LetterCase,
    pub ending: String,
}

impl Instruction {
    /// The request: `say fox 4 times, uppercase, end with !:`.
    pub fn prompt(&self) -> String {
        format!(
            "say {} {} times, {}case, end with {}:",
            self.word,
            self.count,
            self.case.as_str(),
            self.ending
        )
    }

    /// The answer with `count` repetitions: `FOX FOX FOX FOX!` (what the rules accept when
    /// `count == self.count`).
    pub fn answer_with(&self, count: u32) -> String {
        let word = self.case.apply(&self.word);
        let words = vec![word; count as usize];
        format!("{}{}", words.join(" "), self.ending)
    }

    /// The rules a correct answer satisfies (kiln-reward's rule syntax).
    pub fn rules(&self) -> Vec<String> {
        vec![
            format!("words {}", self.count),
            format!("only {}", self.word),
            format!("case {}", self.case.as_str()),
            format!("ends-with {}", self.ending),
        ]
    }
}

/// Generates instruction-following prompts with their rules.
#[derive(Clone, Debug)]
pub struct InstructionGenerator {
    config: InstructionConfig,
    seed: u64,
}

impl InstructionGenerator {
    /// A generator; fails on invalid knobs.
    pub fn new(config: InstructionConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, seed })
    }

    /// The knobs.
    pub fn config(&self) -> &InstructionConfig {
        &self.config
    }

    /// Instance `index`.
    pub fn instance(&self, index: u64) -> Instruction {
        let c = &self.config;
        let mut rng = item_rng(self.seed, index);
        let pick = |rng: &mut _, n: usize| uniform_below(rng, n as u64) as usize;
        let word = c.words[pick(&mut rng, c.words.len())].clone();
        let count = uniform_in(&mut rng, c.min_count as i64, c.max_count as i64) as u32;
        let case = c.cases[pick(&mut rng, c.cases.len())];
        let ending = c.endings[pick(&mut rng, c.endings.len())].clone();
        Instruction {
            word,
            count,
            case,
            ending,
        }
    }

    /// Example `index`: id `instructions-synth/{seed}/{index}`, domain `instructions`, reference
    /// the rules, `meta.answer` the canonical answer.
    pub fn example(&self, index: u64) -> Example {
        let inst = self.instance(index);
        let mut meta = serde_json::Map::new();
        meta.insert("answer".into(), json!(inst.answer_with(inst.count)));
        meta.insert("generator".into(), json!("instructions"));
        Example {
            id: format!("instructions-synth/{}/{index}", self.seed),
            domain: crate::domain::INSTRUCTIONS.into(),
            prompt: Prompt::Text(inst.prompt()),
            reference: Reference::Instructions(inst.rules()),
            meta,
        }
    }

    /// Examples `0..n`.
    pub fn generate(&self, n: u64) -> Vec<Example> {
        (0..n).map(|i| self.example(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_answer_and_rules_agree() {
        let inst = Instruction {
            word: "fox".into(),
            count: 4,
            case: LetterCase::Upper,
            ending: "!".into(),
        };
        assert_eq!(inst.prompt(), "say fox 4 times, uppercase, end with !:");
        assert_eq!(inst.answer_with(4), "FOX FOX FOX FOX!");
        assert_eq!(inst.answer_with(3), "FOX FOX FOX!");
        assert_eq!(
            inst.rules(),
            ["words 4", "only fox", "case upper", "ends-with !"]
        );
    }

    #[test]
    fn examples_are_deterministic_and_cover_the_knobs() {
        let g = InstructionGenerator::new(InstructionConfig::default(), 3).unwrap();
        assert_eq!(g.example(17), g.example(17));
        let all: Vec<Instruction> = (0..400).map(|i| g.instance(i)).collect();
        let counts: std::collections::BTreeSet<u32> = all.iter().map(|i| i.count).collect();
        assert_eq!(counts, (2..=6).collect());
        assert!(all.iter().any(|i| i.case == LetterCase::Lower));
        assert!(all.iter().any(|i| i.case == LetterCase::Upper));
        let other = InstructionGenerator::new(InstructionConfig::default(), 4).unwrap();
        assert!((0..20).any(|i| other.instance(i) != g.instance(i)));
    }

    #[test]
    fn bad_knobs_are_refused_with_the_reason() {
        let err = |c: InstructionConfig| InstructionGenerator::new(c, 0).unwrap_err().to_string();
        let base = InstructionConfig::default;
        assert!(
            err(InstructionConfig {
                words: vec!["two words".into()],
                ..base()
            })
            .contains("ASCII letters")
        );
        assert!(
            err(InstructionConfig {
                endings: vec!["a".into()],
                ..base()
            })
            .contains("punctuation")
        );
        assert!(
            err(InstructionConfig {
                min_count: 0,
                ..base()
            })
            .contains("min_count")
        );
        assert!(
            err(InstructionConfig {
                cases: vec![],
                ..base()
            })
            .contains("non-empty")
        );
    }
}
