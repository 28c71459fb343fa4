//! The benchmark harness behind `kiln eval`: greedy pass@1, sampled pass@k (the unbiased
//! estimator) and maj@k, mean response length, and a breakdown by MATH level and subject; as
//! JSON and as Markdown. Problems are answered in chunks with [`crate::eval::answer`], the
//! routine evaluation during training uses, and each finished problem is appended to a results
//! file, so a stopped run continues where it stopped.
//!
//! maj@k: the samples vote with the answer their verifier extracted (trimmed, inner whitespace
//! removed); samples without one do not vote; the most voted answer wins, ties going to the
//! answer seen first; the problem counts as solved when a sample giving that answer is correct.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::Example;
use kiln_reward::Verifier;
use kiln_rollout::{Engine, SamplingParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TrainError};
use crate::eval::{Answer, answer, pass_at_k};

/// How each problem is answered.
#[derive(Debug, Clone)]
pub struct HarnessParams {
    /// The greedy response (temperature 0) behind pass@1.
    pub greedy: SamplingParams,
    /// `sampled.n` samples per problem for pass@k and maj@k (`n = 0`: none).
    pub sampled: SamplingParams,
    /// Put the stop string that ended a response back for the verifier.
    pub include_stop: bool,
    /// Problems per engine call (and per write to the results file). Part of what a results
    /// file is made with: the samples depend on it.
    pub chunk: usize,
}

/// One finished problem, as kept in the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub greedy: Answer,
    /// The sampled responses, without their text (the results file stays small).
    #[serde(default)]
    pub samples: Vec<SampleRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub correct: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<String>,
    pub tokens: usize,
}

/// The numbers of a set of problems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub problems: usize,
    /// Greedy accuracy.
    pub pass_at_1: f64,
    /// Mean greedy response length in tokens.
    pub mean_response_tokens: f64,
    /// Sampled pass@1 (mean fraction correct), pass@k and maj@k with k = the sample count;
    /// `None` without samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_pass_at_1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_at_k: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maj_at_k: Option<f64>,
}

/// What `kiln eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarnessReport {
    pub task: String,
    /// Samples per problem (k of pass@k and maj@k; 0 = greedy only).
    pub k: usize,
    pub overall: Scores,
    /// By MATH level (`Level 1` ..), when the data has levels.
    pub by_level: BTreeMap<String, Scores>,
    /// By MATH subject, when the data has subjects.
    pub by_subject: BTreeMap<String, Scores>,
    /// Problems answered by this invocation (the rest came from the results file).
    pub answered_now: usize,
    pub seconds: f64,
}

/// Whether the majority answer of `samples` is correct (see the module docs).
pub fn majority_correct(samples: &[SampleRecord]) -> bool {
    let key = |s: &str| s.split_whitespace().collect::<String>();
    let mut votes: Vec<(String, usize, bool)> = Vec::new();
    for s in samples {
        let Some(a) = s.extracted.as_deref().map(key) else {
            continue;
        };
        match votes.iter_mut().find(|v| v.0 == a) {
            Some(v) => {
                v.1 += 1;
                v.2 |= s.correct;
            }
            None => votes.push((a, 1, s.correct)),
        }
    }
    // max_by_key keeps the last maximum: scan in reverse so the first-seen answer wins ties.
    votes.iter().rev().max_by_key(|v| v.1).is_some_and(|v| v.2)
}

/// The scores of `records`.
pub fn scores(records: &[&ProblemRecord]) -> Scores {
    let n = records.len().max(1) as f64;
    let mean = |f: &dyn Fn(&ProblemRecord) -> f64| records.iter().map(|r| f(r)).sum::<f64>() / n;
    let k = records.iter().map(|r| r.samples.len()).min().unwrap_or(0);
    let sampled = k > 0;
    Scores {
        problems: records.len(),
        pass_at_1: mean(&|r| f64::from(u8::from(r.greedy.correct))),
        mean_response_tokens: mean(&|r| r.greedy.tokens as f64),
        sampled_pass_at_1: sampled.then(|| {
            mean(&|r| {
                r.samples.iter().filter(|s| s.correct).count() as f64 / r.samples.len() as f64
            })
        }),
        pass_at_k: sampled.then(|| {
            mean(&|r| {
                let c = r.samples.iter().filter(|s| s.correct).count();
                pass_at_k(r.samples.len(), c, k)
            })
        }),
        maj_at_k: sampled.then(|| mean(&|r| f64::from(u8::from(majority_correct(&r.samples))))),
    }
}

fn meta_label(e: &Example, key: &str) -> Option<String> {
    match e.meta.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if key == "level" => Some(format!("Level {n}")),
        other => Some(other.to_string()),
    }
}

/// The results file: a header line with the settings, then one [`ProblemRecord`] per line.
struct ResultsFile {
    path: PathBuf,
    file: std::fs::File,
}

impl ResultsFile {
    /// Opens (or starts) `path` for `settings`; returns the records already there. A file made
    /// with other settings is an error; a torn last line (a killed run) is dropped.
    fn open(path: &Path, settings: &Value) -> Result<(Self, Vec<ProblemRecord>)> {
        let bad = |message: String| TrainError::recipe(&path.display().to_string(), message);
        let mut records = Vec::new();
        let mut keep = String::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            let mut lines = text.lines();
            if let Some(first) = lines.next() {
                let header: Value = serde_json::from_str(first)
                    .map_err(|e| bad(format!("line 1 is not a kiln eval header: {e}")))?;
                if header.get("settings") != Some(settings) {
                    return Err(bad(format!(
                        "these results were made with other settings ({}); pass --fresh to start over or --out for another file",
                        header.get("settings").cloned().unwrap_or(Value::Null)
                    )));
                }
                keep.push_str(first);
                keep.push('\n');
                for (i, line) in lines.enumerate() {
                    match serde_json::from_str::<ProblemRecord>(line) {
                        Ok(r) => {
                            records.push(r);
                            keep.push_str(line);
                            keep.push('\n');
                        }
                        Err(_) if i + 2 == text.lines().count() => {
                            tracing::warn!("{}: dropping a torn last line", path.display());
                        }
                        Err(e) => return Err(bad(format!("line {}: {e}", i + 2))),
                    }
                }
            }
        }
        if keep.is_empty() {
            keep = format!(
                "{}\n",
                serde_json::json!({ "kiln_eval": 1, "settings": settings })
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        }
        std::fs::write(path, &keep).map_err(TrainError::io(path))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(TrainError::io(path))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    fn append(&mut self, records: &[ProblemRecord]) -> Result<()> {
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).expect("plain data"));
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(TrainError::io(&self.path))
    }
}

/// Answers every problem of `examples` not yet in `results` (if given), then reports on all.
/// `settings` identifies the run in the results file (model, task, sampling settings).
pub fn run_harness(
    engine: &Engine,
    task: &str,
    examples: &[Example],
    verifier: &dyn Verifier,
    params: &HarnessParams,
    results: Option<(&Path, &Value)>,
    progress: bool,
) -> Result<HarnessReport> {
    let t0 = Instant::now();
    let (mut file, mut done) = match results {
        Some((path, settings)) => {
            let (f, r) = ResultsFile::open(path, settings)?;
            (Some(f), r)
        }
        None => (None, Vec::new()),
    };
    let finished: HashSet<String> = done.iter().map(|r| r.id.clone()).collect();
    let todo: Vec<&Example> = examples
        .iter()
        .filter(|e| !finished.contains(&e.id))
        .collect();
    let bar = if progress {
        let b = ProgressBar::new(examples.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {pos}/{len} problems [{bar:30}] {elapsed_precise} ETA {eta_precise}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        b.set_message(task.to_string());
        b.set_position((examples.len() - todo.len()) as u64);
        b
    } else {
        ProgressBar::hidden()
    };
    let greedy = SamplingParams {
        n: 1,
        temperature: 0.0,
        ..params.greedy.clone()
    };
    for chunk in todo.chunks(params.chunk.max(1)) {
        let chunk: Vec<Example> = chunk.iter().map(|e| (*e).clone()).collect();
        let g = answer(engine, &chunk, verifier, &greedy, params.include_stop)?;
        let s = if params.sampled.n > 0 {
            // The chunk's seed comes from its first problem: finished problems form whole
            // chunks from the start, so a resumed run draws the same samples as an
            // uninterrupted one with the same `chunk`.
            let p = SamplingParams {
                seed: kiln_data::derive_seed(params.sampled.seed, &chunk[0].id),
                ..params.sampled.clone()
            };
            answer(engine, &chunk, verifier, &p, params.include_stop)?
        } else {
            vec![Vec::new(); chunk.len()]
        };
        let records: Vec<ProblemRecord> = chunk
            .iter()
            .zip(g)
            .zip(s)
            .map(|((e, mut g), s)| ProblemRecord {
                id: e.id.clone(),
                level: meta_label(e, "level"),
                subject: meta_label(e, "subject"),
                greedy: g.pop().expect("one greedy answer per problem"),
                samples: s
                    .into_iter()
                    .map(|a| SampleRecord {
                        correct: a.correct,
                        extracted: a.extracted,
                        tokens: a.tokens,
                    })
                    .collect(),
            })
            .collect();
        if let Some(f) = file.as_mut() {
            f.append(&records)?;
        }
        bar.inc(records.len() as u64);
        done.extend(records);
    }
    bar.finish_and_clear();
    // Report on this run's problems only, in the data's order.
    let by_id: BTreeMap<&str, &ProblemRecord> = done.iter().map(|r| (r.id.as_str(), r)).collect();
    let mine: Vec<&ProblemRecord> = examples
        .iter()
        .filter_map(|e| by_id.get(e.id.as_str()).copied())
        .collect();
    let group = |key: &dyn Fn(&ProblemRecord) -> Option<String>| {
        let mut g: BTreeMap<String, Vec<&ProblemRecord>> = BTreeMap::new();
        for r in &mine {
            if let Some(k) = key(r) {
                g.entry(k).or_default().push(r);
            }
        }
        g.into_iter().map(|(k, v)| (k, scores(&v))).collect()
    };
    Ok(HarnessReport {
        task: task.to_string(),
        k: params.sampled.n,
        overall: scores(&mine),
        by_level: group(&|r| r.level.clone()),
        by_subject: group(&|r| r.subject.clone()),
        answered_now: todo.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl HarnessReport {
    /// The report as Markdown tables: overall, then by level and by subject when present.
    pub fn markdown(&self, model: &str) -> String {
        let k = self.k;
        let table = |title: &str, first: &str, rows: Vec<(&str, &Scores)>| {
            let (pk, mk) = (format!("pass@{k}"), format!("maj@{k}"));
            let mut cols = vec![first, "problems", "pass@1 (greedy)"];
            if k > 0 {
                cols.extend(["pass@1 (sampled)", pk.as_str(), mk.as_str()]);
            }
            cols.push("mean response tokens");
            let mut t = format!(
                "{title}\n\n| {} |\n|{}\n",
                cols.join(" | "),
                "---|".repeat(cols.len())
            );
            let pct = |x: f64| format!("{:.1}%", 100.0 * x);
            for (label, s) in rows {
                let mut cells = vec![label.to_string(), s.problems.to_string(), pct(s.pass_at_1)];
                if k > 0 {
                    for x in [s.sampled_pass_at_1, s.pass_at_k, s.maj_at_k] {
                        cells.push(x.map(pct).unwrap_or_default());
                    }
                }
                cells.push(format!("{:.1}", s.mean_response_tokens));
                t.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
            t
        };
        let mut out = table(
            &format!("{} on {}:", model, self.task),
            "model",
            vec![(model, &self.overall)],
        );
        for (title, first, groups) in [
            ("By level:", "level", &self.by_level),
            ("By subject:", "subject", &self.by_subject),
        ] {
            if !groups.is_empty() {
                out.push('\n');
                out.push_str(&table(
                    title,
                    first,
                    groups.iter().map(|(l, s)| (l.as_str(), s)).collect(),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(correct: bool, extracted: Option<&str>) -> SampleRecord {
        SampleRecord {
            correct,
            extracted: extracted.map(String::from),
            tokens: 1,
        }
    }

    #[test]
    fn majority_vote_by_hand() {
        // Two votes for 4 (right) against one for 5.
        assert!(majority_correct(&[
            s(true, Some("4")),
            s(false, Some("5")),
            s(true, Some(" 4 "))
        ]));
        // The wrong answer wins 2 to 1.
        assert!(!majority_correct(&[
            s(false, Some("5")),
            s(true, Some("4")),
            s(false, Some("5"))
        ]));
        // A tie goes to the answer seen first.
        assert!(majority_correct(&[s(true, Some("4")), s(false, Some("5"))]));
        assert!(!majority_correct(&[
            s(false, Some("5")),
            s(true, Some("4"))
        ]));
        // Samples without an answer do not vote; no votes at all is wrong.
        assert!(majority_correct(&[
            s(false, None),
            s(false, None),
            s(true, Some("4"))
        ]));
        assert!(!majority_correct(&[s(false, None)]));
        assert!(!majority_correct(&[]));
        // Whitespace inside an answer does not split the vote.
        assert!(majority_correct(&[
            s(true, Some("x + 1")),
            s(true, Some("x+1")),
            s(false, Some("2"))
        ]));
    }

    #[test]
    fn scores_by_hand() {
        let rec = |greedy: bool, samples: Vec<SampleRecord>| ProblemRecord {
            id: "x".into(),
            level: None,
            subject: None,
            greedy: Answer {
                text: String::new(),
                correct: greedy,
                score: 0.0,
                extracted: None,
                tokens: 10,
            },
            samples,
        };
        let a = rec(
            true,
            vec![
                s(true, Some("1")),
                s(false, Some("2")),
                s(false, Some("2")),
                s(false, None),
            ],
        );
        let b = rec(false, vec![s(false, Some("3")); 4]);
        let sc = scores(&[&a, &b]);
        assert_eq!(sc.problems, 2);
        assert_eq!(sc.pass_at_1, 0.5);
        assert_eq!(sc.mean_response_tokens, 10.0);
        // Sampled pass@1: (1/4 + 0) / 2; pass@4: (1 + 0) / 2; maj@4: 2 wins in a, 3 in b.
        assert_eq!(sc.sampled_pass_at_1, Some(0.125));
        assert_eq!(sc.pass_at_k, Some(0.5));
        assert_eq!(sc.maj_at_k, Some(0.0));
        let greedy_only = scores(&[&rec(true, vec![])]);
        assert_eq!(greedy_only.pass_at_k, None);
    }
}
