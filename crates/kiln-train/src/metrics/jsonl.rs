//! `metrics.jsonl`: one JSON object per logged step, the run's record of truth.
//!
//! A line is `{"step":N,"time":T,"<key>":value,...}` with `step` and `time` first so a person
//! reading the file with `less` or `jq` sees them at once. Non-finite values are written as
//! `null` (JSON has no NaN or infinity) and read back as NaN.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

use super::{MetricsError, write_atomically};

/// Field names the line format reserves; metric keys may not use them.
pub const RESERVED_KEYS: [&str; 2] = ["step", "time"];

/// Formats one line, newline included. Keys are JSON-escaped; values keep full f64 precision.
pub fn format_line(step: u64, time: f64, metrics: &BTreeMap<String, f64>) -> String {
    let mut line = format!("{{\"step\":{step},\"time\":{}", json_number(time));
    for (key, value) in metrics {
        // Serializing a &str cannot fail.
        let key = serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".to_string());
        line.push(',');
        line.push_str(&key);
        line.push(':');
        line.push_str(&json_number(*value));
    }
    line.push_str("}\n");
    line
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        // serde_json prints the shortest representation that round-trips (ryu).
        serde_json::to_string(&v).unwrap_or_else(|_| "null".to_string())
    } else {
        "null".to_string()
    }
}

/// One parsed line: the step, and the metrics (without `step` and `time`).
pub type Record = (u64, BTreeMap<String, f64>);

/// Reads a metrics file written by [`super::MetricsSink`].
///
/// `null` values come back as NaN. The last line may be cut short by a crash in the middle of a
/// write: it is skipped with a warning. Any other malformed line is an error naming the line.
/// Fields that are neither numbers nor null are skipped with a warning.
pub fn read_metrics_jsonl(path: &Path) -> Result<Vec<Record>, MetricsError> {
    let bytes = fs::read(path).map_err(|e| MetricsError::io(path, "reading", e))?;
    Ok(parse_lines(path, &bytes)?
        .into_iter()
        .map(|line| line.record)
        .collect())
}

/// A parsed line with its original text, so that a rewrite keeps lines byte for byte.
pub(crate) struct Line<'a> {
    pub text: &'a [u8],
    pub record: Record,
}

/// Parses every complete line of `bytes` (`path` is only for messages).
pub(crate) fn parse_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<Line<'a>>, MetricsError> {
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let last = lines.len().saturating_sub(1);
    let mut out = Vec::with_capacity(lines.len());
    for (i, &(index, text)) in lines.iter().enumerate() {
        match parse_line(text) {
            Ok(record) => out.push(Line { text, record }),
            Err(message) if i == last => {
                tracing::warn!(
                    "{}: line {}: skipping an incomplete last line (a crash mid-write?): {message}",
                    path.display(),
                    index + 1
                );
            }
            Err(message) => {
                return Err(MetricsError::Parse {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message,
                });
            }
        }
    }
    Ok(out)
}

fn parse_line(text: &[u8]) -> Result<Record, String> {
    let object: serde_json::Map<String, Value> =
        serde_json::from_slice(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let step = object
        .get("step")
        .ok_or("no \"step\" field")?
        .as_u64()
        .ok_or("\"step\" is not a non-negative integer")?;
    let mut metrics = BTreeMap::new();
    for (key, value) in object {
        if RESERVED_KEYS.contains(&key.as_str()) {
            continue;
        }
        match value {
            Value::Number(n) => {
                metrics.insert(key, n.as_f64().unwrap_or(f64::NAN));
            }
            Value::Null => {
                metrics.insert(key, f64::NAN);
            }
            other => tracing::warn!("step {step}: skipping non-numeric field {key:?} = {other}"),
        }
    }
    Ok((step, metrics))
}

/// Drops every line with step > `keep_through` (and a truncated last line), rewriting the file
/// atomically: a temp file in the same directory is synced, then renamed over the original, so a
/// crash leaves either the old or the new file, never a mix. Returns the records kept.
pub fn truncate_after(path: &Path, keep_through: u64) -> Result<Vec<Record>, MetricsError> {
    let bytes = fs::read(path).map_err(|e| MetricsError::io(path, "reading", e))?;
    let lines = parse_lines(path, &bytes)?;
    let mut text = Vec::with_capacity(bytes.len());
    let mut kept = Vec::with_capacity(lines.len());
    for line in lines {
        if line.record.0 <= keep_through {
            text.extend_from_slice(line.text);
            text.push(b'\n');
            kept.push(line.record);
        }
    }
    write_atomically(path, &text)?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn line_format_is_valid_json_with_step_first() {
        let m = metrics(&[
            ("reward/mean", 0.5),
            ("actor/kl", f64::NAN),
            ("x\"quote", f64::INFINITY),
            ("huge", 1e300),
        ]);
        let line = format_line(3, 1.7e9, &m);
        assert!(line.starts_with("{\"step\":3,\"time\":"), "{line}");
        assert!(line.ends_with("}\n"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["actor/kl"], Value::Null);
        assert_eq!(v["x\"quote"], Value::Null);
        assert_eq!(v["huge"].as_f64(), Some(1e300));
        assert_eq!(v["reward/mean"].as_f64(), Some(0.5));
    }

    #[test]
    fn parse_skips_truncated_last_line_only() {
        let path = Path::new("m.jsonl");
        let good = "{\"step\":1,\"time\":1.0,\"a\":1}\n{\"step\":2,\"time\":2.0,\"a\":2}\n";
        let cut = format!("{good}{{\"step\":3,\"ti");
        let lines = parse_lines(path, cut.as_bytes()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].record.0, 2);

        // Broken UTF-8 at the end (a multi-byte character cut in half) is a truncation too.
        let mut bytes = good.as_bytes().to_vec();
        bytes.extend_from_slice(b"{\"step\":3,\"\xc3");
        assert_eq!(parse_lines(path, &bytes).unwrap().len(), 2);

        let broken_middle = format!("{{\"step\":1,\"a\":\n{good}");
        let err = parse_lines(path, broken_middle.as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("m.jsonl") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn parse_rejects_missing_step_and_skips_odd_fields() {
        let path = Path::new("m.jsonl");
        let text = "{\"time\":1.0,\"a\":1}\n{\"step\":1}\n";
        assert!(parse_lines(path, text.as_bytes()).is_err());
        let text = "{\"step\":1,\"note\":\"hi\",\"a\":2}\n{\"step\":2}\n";
        let lines = parse_lines(path, text.as_bytes()).unwrap();
        assert_eq!(lines[0].record.1, metrics(&[("a", 2.0)]));
    }
}
