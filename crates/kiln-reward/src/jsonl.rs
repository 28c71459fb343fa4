//! The engine of `kiln score`: read JSONL records, score them in parallel, write one JSON verdict
//! per line.
//!
//! Input records: `{"response": str, "reference": str}` for `math` and `gsm8k`;
//! `{"response": str, "target": int, "nums": [int]}` for `countdown` (`numbers` is accepted for
//! `nums`). Extra fields are ignored. Blank lines are skipped. Output lines:
//! `{"line": n, "score": f, "correct": b, "parts": {..}, "extracted": s|null, "error": s|null}`.

use std::io::{BufRead, Write};

use serde::Deserialize;
use serde_json::json;

use crate::{
    BatchOptions, CountdownVerifier, Gsm8kVerifier, InstructionVerifier, MathVerifier, Reference,
    Task, Verifier, score_batch_with,
};

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("line {line}: {msg}")]
    BadLine { line: usize, msg: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Options of [`score_jsonl`].
#[derive(Clone, Debug)]
pub struct ScoreOptions {
    /// Countdown's format score (TinyZero: 0.1).
    pub format_score: f64,
    pub batch: BatchOptions,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            format_score: 0.1,
            batch: BatchOptions::default(),
        }
    }
}

/// What a run scored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub records: usize,
    pub correct: usize,
    pub mean_score: f64,
    pub errors: usize,
}

#[derive(Deserialize)]
struct TextRecord {
    response: String,
    reference: serde_json::Value,
}

#[derive(Deserialize)]
struct CountdownRecord {
    response: String,
    target: i64,
    #[serde(alias = "numbers")]
    nums: Vec<i64>,
}

fn parse_line(task: Task, line: &str) -> Result<(String, Reference), String> {
    match task {
        Task::Countdown => {
            let r: CountdownRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
            Ok((
                r.response,
                Reference::Countdown {
                    target: r.target,
                    nums: r.nums,
                },
            ))
        }
        Task::Math | Task::Gsm8k => {
            let r: TextRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
            let reference = match r.reference {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                other => {
                    return Err(format!(
                        "\"reference\" must be a string or a number, got {other}"
                    ));
                }
            };
            Ok((r.response, Reference::Text(reference)))
        }
        Task::Instructions => {
            let r: TextRecord = serde_json::from_str(line).map_err(|e| e.to_string())?;
            let rules: Vec<String> = serde_json::from_value(r.reference).map_err(|_| {
                "\"reference\" must be a list of rule strings, e.g. [\"words 3\", \"case upper\"]"
                    .to_string()
            })?;
            Ok((r.response, Reference::Instructions(rules)))
        }
    }
}

/// The verifier `kiln score` uses for a task.
pub fn verifier_for(task: Task, opts: &ScoreOptions) -> Box<dyn Verifier> {
    match task {
        Task::Countdown => Box::new(CountdownVerifier::new(opts.format_score)),
        Task::Math => Box::new(MathVerifier::default()),
        Task::Gsm8k => Box::new(Gsm8kVerifier::default()),
        Task::Instructions => Box::new(InstructionVerifier::default()),
    }
}

/// Scores every record of `input` and writes one verdict per line to `output`. A line that is
/// not a valid record stops the run with an error naming its (1-based) line number.
pub fn score_jsonl(
    task: Task,
    opts: &ScoreOptions,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<Summary, JsonlError> {
    let verifier = verifier_for(task, opts);
    let mut summary = Summary::default();
    let mut total = 0.0;
    let mut chunk: Vec<(usize, (String, Reference))> = Vec::new();
    let mut flush = |chunk: &mut Vec<(usize, (String, Reference))>,
                     summary: &mut Summary,
                     total: &mut f64|
     -> Result<(), JsonlError> {
        let items: Vec<(String, Reference)> = chunk.iter().map(|(_, it)| it.clone()).collect();
        let verdicts = score_batch_with(verifier.as_ref(), &items, &opts.batch);
        for ((line, _), v) in chunk.iter().zip(verdicts) {
            summary.records += 1;
            summary.correct += v.correct as usize;
            summary.errors += v.error.is_some() as usize;
            *total += v.score;
            let out = json!({
                "line": line,
                "score": v.score,
                "correct": v.correct,
                "parts": v.parts,
                "extracted": v.extracted,
                "error": v.error,
            });
            writeln!(output, "{out}")?;
        }
        chunk.clear();
        Ok(())
    };
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| JsonlError::BadLine {
            line: n,
            msg: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = parse_line(task, &line).map_err(|msg| JsonlError::BadLine { line: n, msg })?;
        chunk.push((n, rec));
        if chunk.len() >= 1024 {
            flush(&mut chunk, &mut summary, &mut total)?;
        }
    }
    flush(&mut chunk, &mut summary, &mut total)?;
    if summary.records > 0 {
        summary.mean_score = total / summary.records as f64;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(task: Task, input: &str) -> Result<(Summary, Vec<serde_json::Value>), JsonlError> {
        let mut out = Vec::new();
        let s = score_jsonl(task, &ScoreOptions::default(), input.as_bytes(), &mut out)?;
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        Ok((s, lines))
    }

    #[test]
    fn countdown_jsonl() {
        let input = r#"{"response": "<answer>(1+2)*3</answer>", "target": 9, "nums": [3, 2, 1]}

{"response": "<answer>1+2+3</answer>", "target": 9, "numbers": [3, 2, 1]}
{"response": "no tags", "target": 9, "nums": [3, 2, 1]}
"#;
        let (s, v) = run(Task::Countdown, input).unwrap();
        assert_eq!(s.records, 3);
        assert_eq!(s.correct, 1);
        assert_eq!(v[0]["score"], 1.0);
        assert_eq!(v[0]["line"], 1);
        assert_eq!(v[0]["extracted"], "(1+2)*3");
        assert_eq!(v[1]["score"], 0.1);
        assert_eq!(v[1]["line"], 3);
        assert_eq!(v[2]["score"], 0.0);
        assert!((s.mean_score - 1.1 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn math_and_gsm8k_jsonl() {
        let (s, v) = run(
            Task::Math,
            r#"{"response": "so \\boxed{\\dfrac{1}{2}}", "reference": "0.5"}"#,
        )
        .unwrap();
        assert_eq!(s.correct, 1);
        assert_eq!(v[0]["extracted"], "\\dfrac{1}{2}");
        let (s, _) = run(Task::Gsm8k, "{\"response\": \"it is 18\", \"reference\": \"...\\n#### 18\"}\n{\"response\": \"7\", \"reference\": 7}").unwrap();
        assert_eq!(s.correct, 2);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = run(
            Task::Math,
            "{\"response\": \"a\", \"reference\": \"1\"}\n{not json}\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        let e = run(
            Task::Countdown,
            "{\"response\": \"a\", \"reference\": \"1\"}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("line 1:") && e.to_string().contains("target"),
            "{e}"
        );
    }
}
