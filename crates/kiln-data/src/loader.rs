//! Generic JSONL and Parquet loaders driven by a [`FieldMap`].
//!
//! A record (a JSONL line, or a Parquet row converted to JSON) is mapped to an [`Example`]: which
//! field holds the id, the question, the answer (or Countdown's target and numbers), which
//! template turns the question into a [`Prompt`], and which fields go into `meta`. Field paths
//! are dotted, with numeric segments indexing lists: `reward_model.ground_truth.target`,
//! `prompt.0.content`. A key that itself contains dots is matched whole first.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DataError, Loc, Result};
use crate::example::{ChatMessage, Example, Prompt, Reference};
use crate::templates::{CountdownTemplate, MathTemplate, countdown_prompt, math_prompt};

/// How the answer text is taken out of the answer field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerExtract {
    /// The field as it is (a number is written in decimal).
    #[default]
    Verbatim,
    /// GSM8K: the text after the last `####`, trimmed, with thousands commas removed.
    AfterLastHashes,
    /// MATH solutions: the content of the last `\boxed{..}` / `\fbox{..}` / `\boxed x`.
    LastBoxed,
}

/// Where the reference comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReferenceField {
    /// `Reference::Answer` from one field.
    Answer {
        field: String,
        #[serde(default)]
        extract: AnswerExtract,
    },
    /// `Reference::Countdown` from an integer field and a list-of-integers field.
    Countdown { target: String, nums: String },
}

/// How the question becomes a prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptTemplate {
    /// The question field verbatim as a text prompt.
    Raw,
    /// The question field verbatim as one user message.
    User,
    /// The question field already is a list of `{role, content}` messages (verl-style `prompt`).
    Messages,
    /// [`math_prompt`] of the question.
    Math(MathTemplate),
    /// [`countdown_prompt`] of the reference's numbers and target (no question field needed).
    Countdown(CountdownTemplate),
}

/// Maps records of a file to examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// Domain of every example (selects the verifier).
    pub domain: String,
    /// Field holding the id (string or integer). `None`: the record's 0-based index.
    #[serde(default)]
    pub id: Option<String>,
    /// Prefix joined to the id with `/`. `None`: `"{domain}/{file stem}"`; `Some("")`: none.
    #[serde(default)]
    pub id_prefix: Option<String>,
    /// Field holding the question. Needed by every template except `Countdown`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// How the question becomes a prompt.
    pub template: PromptTemplate,
    /// Where the reference comes from.
    pub reference: ReferenceField,
    /// Extra fields to keep: meta key -> field path. Absent or null fields are skipped.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Drop (with a logged warning) records whose answer is empty instead of failing.
    #[serde(default = "yes")]
    pub drop_empty_answer: bool,
}

fn yes() -> bool {
    true
}

impl FieldMap {
    /// A mapping from a question field and an answer field, with the id from the record index.
    pub fn new(
        domain: impl Into<String>,
        prompt: impl Into<String>,
        answer: impl Into<String>,
        template: PromptTemplate,
    ) -> Self {
        Self {
            domain: domain.into(),
            id: None,
            id_prefix: None,
            prompt: Some(prompt.into()),
            template,
            reference: ReferenceField::Answer {
                field: answer.into(),
                extract: AnswerExtract::Verbatim,
            },
            meta: BTreeMap::new(),
            drop_empty_answer: true,
        }
    }

    /// MATH-500 (`problem`, `answer`, `unique_id` as the id; subject, level, solution in meta).
    pub fn math500(template: MathTemplate) -> Self {
        let mut m = Self::new(
            crate::domain::MATH,
            "problem",
            "answer",
            PromptTemplate::Math(template),
        );
        m.id = Some("unique_id".into());
        m.id_prefix = Some(String::new());
        m.meta = meta_map(&[
            ("subject", "subject"),
            ("level", "level"),
            ("solution", "solution"),
        ]);
        m
    }

    /// The MATH train set (`problem`, `answer`; id `math/train/{idx}`; subject, level, solution
    /// in meta). Empty answers are dropped with a warning.
    pub fn math_train(template: MathTemplate) -> Self {
        let mut m = Self::new(
            crate::domain::MATH,
            "problem",
            "answer",
            PromptTemplate::Math(template),
        );
        m.id = Some("idx".into());
        m.id_prefix = Some("math/train".into());
        m.meta = meta_map(&[
            ("subject", "subject"),
            ("level", "level"),
            ("solution", "solution"),
        ]);
        m
    }

    /// GSM8K (`question`; reference = number after the last `####` of `answer`; the worked
    /// solution in meta as `solution`; id `gsm8k/{file stem}/{index}`).
    pub fn gsm8k(template: MathTemplate) -> Self {
        let mut m = Self::new(
            crate::domain::GSM8K,
            "question",
            "answer",
            PromptTemplate::Math(template),
        );
        m.reference = ReferenceField::Answer {
            field: "answer".into(),
            extract: AnswerExtract::AfterLastHashes,
        };
        m.meta = meta_map(&[("solution", "answer")]);
        m
    }

    /// Countdown (`target`, `nums`; id `countdown/{file stem}/{index}`).
    pub fn countdown(template: CountdownTemplate) -> Self {
        Self {
            domain: crate::domain::COUNTDOWN.into(),
            id: None,
            id_prefix: None,
            prompt: None,
            template: PromptTemplate::Countdown(template),
            reference: ReferenceField::Countdown {
                target: "target".into(),
                nums: "nums".into(),
            },
            meta: BTreeMap::new(),
            drop_empty_answer: true,
        }
    }

    /// A verl-style parquet (TinyZero, verl's `examples/data_preprocess`): the `prompt` column
    /// holds the chat messages, `reward_model.ground_truth` the answer, `extra_info.index` goes
    /// to meta.
    pub fn verl(domain: impl Into<String>) -> Self {
        let mut m = Self::new(
            domain,
            "prompt",
            "reward_model.ground_truth",
            PromptTemplate::Messages,
        );
        m.meta = meta_map(&[
            ("index", "extra_info.index"),
            ("data_source", "data_source"),
        ]);
        m
    }

    /// TinyZero's Countdown parquet (`reward_model.ground_truth.{target, numbers}`), with the
    /// prompt rebuilt from the numbers by `template` (the stored prompt text is ignored).
    pub fn verl_countdown(template: CountdownTemplate) -> Self {
        let mut m = Self::countdown(template);
        m.reference = ReferenceField::Countdown {
            target: "reward_model.ground_truth.target".into(),
            nums: "reward_model.ground_truth.numbers".into(),
        };
        m.meta = meta_map(&[("index", "extra_info.index")]);
        m
    }

    /// Checks that the mapping is coherent.
    pub fn validate(&self) -> Result<()> {
        match self.template {
            PromptTemplate::Countdown(_) => {
                if !matches!(self.reference, ReferenceField::Countdown { .. }) {
                    return Err(DataError::Config(
                        "template `countdown` needs a `countdown` reference (target and nums)"
                            .into(),
                    ));
                }
            }
            _ => {
                if self.prompt.is_none() {
                    return Err(DataError::Config(format!(
                        "template {:?} needs a `prompt` field",
                        self.template
                    )));
                }
            }
        }
        if self.domain.is_empty() {
            return Err(DataError::Config("`domain` is empty".into()));
        }
        Ok(())
    }

    /// Maps one record. `Ok(Err(reason))` means: drop this record.
    fn map_record(
        &self,
        rec: &Value,
        index: usize,
        prefix: &str,
        ctx: &Ctx<'_>,
    ) -> Result<std::result::Result<Example, (String, String)>> {
        if !rec.is_object() {
            return Err(DataError::NotAnObject {
                path: ctx.path.to_path_buf(),
                loc: ctx.loc,
                found: type_name(rec).into(),
            });
        }
        let raw_id = match &self.id {
            None => index.to_string(),
            Some(f) => match ctx.field(rec, f)? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(ctx.bad(
                        f,
                        format!(
                            "expected a string or integer id, found {}",
                            type_name(other)
                        ),
                    ));
                }
            },
        };
        let id = if prefix.is_empty() {
            raw_id
        } else {
            format!("{prefix}/{raw_id}")
        };

        let reference = match &self.reference {
            ReferenceField::Answer { field, extract } => {
                let v = ctx.field(rec, field)?;
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(ctx.bad(
                            field,
                            format!("expected a string or number, found {}", type_name(other)),
                        ));
                    }
                };
                let answer = match extract {
                    AnswerExtract::Verbatim => text,
                    AnswerExtract::AfterLastHashes => match text.rfind("####") {
                        Some(i) => text[i + 4..].trim().replace(',', ""),
                        None => {
                            return Err(
                                ctx.bad(field, "no `####` marker before the final answer".into())
                            );
                        }
                    },
                    AnswerExtract::LastBoxed => match last_boxed(&text) {
                        Some(a) => a.to_string(),
                        None => {
                            return Err(ctx.bad(field, "no \\boxed{} answer in the text".into()));
                        }
                    },
                };
                if answer.trim().is_empty() {
                    if self.drop_empty_answer {
                        return Ok(Err((id, format!("field `{field}`: empty answer"))));
                    }
                    return Err(ctx.bad(field, "empty answer".into()));
                }
                Reference::Answer(answer)
            }
            ReferenceField::Countdown { target, nums } => {
                let t = ctx.field(rec, target)?;
                let t = as_int(t)
                    .ok_or_else(|| ctx.bad(target, format!("expected an integer, found {t}")))?;
                let n = ctx.field(rec, nums)?;
                let list = n.as_array().ok_or_else(|| {
                    ctx.bad(
                        nums,
                        format!("expected a list of integers, found {}", type_name(n)),
                    )
                })?;
                let mut ns = Vec::with_capacity(list.len());
                for (i, x) in list.iter().enumerate() {
                    ns.push(as_int(x).ok_or_else(|| {
                        ctx.bad(nums, format!("element {i}: expected an integer, found {x}"))
                    })?);
                }
                if ns.is_empty() {
                    return Err(ctx.bad(nums, "empty list of numbers".into()));
                }
                Reference::Countdown {
                    target: t,
                    nums: ns,
                }
            }
        };

        let prompt = match self.template {
            PromptTemplate::Countdown(t) => match &reference {
                Reference::Countdown { target, nums } => countdown_prompt(nums, *target, t),
                Reference::Answer(_) | Reference::Instructions(_) => {
                    unreachable!("validated: countdown template has a countdown reference")
                }
            },
            PromptTemplate::Messages => {
                let f = self.prompt.as_deref().unwrap_or_default();
                let v = ctx.field(rec, f)?;
                let msgs: Vec<ChatMessage> = serde_json::from_value(v.clone()).map_err(|e| {
                    ctx.bad(
                        f,
                        format!("expected a list of {{role, content}} messages: {e}"),
                    )
                })?;
                if msgs.is_empty() {
                    return Err(ctx.bad(f, "empty message list".into()));
                }
                Prompt::Chat(msgs)
            }
            t => {
                let f = self.prompt.as_deref().unwrap_or_default();
                let q = ctx.str_field(rec, f)?;
                match t {
                    PromptTemplate::Raw => Prompt::Text(q.to_string()),
                    PromptTemplate::User => Prompt::Chat(vec![ChatMessage::user(q)]),
                    PromptTemplate::Math(m) => math_prompt(q, m),
                    PromptTemplate::Messages | PromptTemplate::Countdown(_) => unreachable!(),
                }
            }
        };

        let mut meta = serde_json::Map::new();
        for (key, path) in &self.meta {
            if let Some(v) = lookup(rec, path).filter(|v| !v.is_null()) {
                meta.insert(key.clone(), v.clone());
            }
        }
        Ok(Ok(Example {
            id,
            domain: self.domain.clone(),
            prompt,
            reference,
            meta,
        }))
    }
}

fn meta_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Looks up a dotted field path (`a.b.0.c`; a whole key containing dots is tried first).
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(x) = v.as_object().and_then(|o| o.get(path)) {
        return Some(x);
    }
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(o) => o.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The content of the last `\boxed{...}` (balanced braces), `\fbox{...}`, or `\boxed x` in `s`.
pub fn last_boxed(s: &str) -> Option<&str> {
    let (start, name) = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|n| s.rfind(n).map(|i| (i, *n)))
        .max_by_key(|(i, _)| *i)?;
    let rest = &s[start + name.len()..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut depth = 1usize;
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&body[..i]);
                    }
                }
                _ => {}
            }
        }
        None
    } else if let Some(body) = rest.strip_prefix(' ') {
        // `\boxed 5`: up to the next `$` or whitespace.
        let end = body
            .find(|c: char| c == '$' || c.is_whitespace())
            .unwrap_or(body.len());
        Some(&body[..end])
    } else {
        None
    }
}

/// Where a record is, for error messages.
struct Ctx<'a> {
    path: &'a Path,
    loc: Loc,
}

impl Ctx<'_> {
    fn bad(&self, field: &str, message: String) -> DataError {
        DataError::BadField {
            path: self.path.to_path_buf(),
            loc: self.loc,
            field: field.to_string(),
            message,
        }
    }

    fn field<'v>(&self, rec: &'v Value, field: &str) -> Result<&'v Value> {
        lookup(rec, field)
            .filter(|v| !v.is_null())
            .ok_or_else(|| DataError::MissingField {
                path: self.path.to_path_buf(),
                loc: self.loc,
                field: field.to_string(),
            })
    }

    fn str_field<'v>(&self, rec: &'v Value, field: &str) -> Result<&'v str> {
        let v = self.field(rec, field)?;
        v.as_str()
            .ok_or_else(|| self.bad(field, format!("expected a string, found {}", type_name(v))))
    }
}

/// A record that was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Where it was.
    pub loc: Loc,
    /// The id it would have had.
    pub id: String,
    /// Why it was dropped.
    pub reason: String,
}

/// What a load produced.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The examples, in file order.
    pub examples: Vec<Example>,
    /// The records left out (each also logged as a warning).
    pub dropped: Vec<Dropped>,
}

/// Collects mapped records, checking id uniqueness and logging drops.
struct Collector<'a> {
    map: &'a FieldMap,
    path: &'a Path,
    prefix: String,
    out: Loaded,
    seen: HashMap<String, Loc>,
}

impl<'a> Collector<'a> {
    fn new(map: &'a FieldMap, path: &'a Path) -> Result<Self> {
        map.validate()?;
        let prefix = match &map.id_prefix {
            Some(p) => p.clone(),
            None => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{}/{stem}", map.domain)
            }
        };
        Ok(Self {
            map,
            path,
            prefix,
            out: Loaded::default(),
            seen: HashMap::new(),
        })
    }

    fn push(&mut self, rec: &Value, index: usize, loc: Loc) -> Result<()> {
        let ctx = Ctx {
            path: self.path,
            loc,
        };
        match self.map.map_record(rec, index, &self.prefix, &ctx)? {
            Ok(ex) => {
                if let Some(first) = self.seen.insert(ex.id.clone(), loc) {
                    return Err(ctx.bad(
                        self.map.id.as_deref().unwrap_or("<index>"),
                        format!("duplicate id `{}` (first at {first})", ex.id),
                    ));
                }
                self.out.examples.push(ex);
            }
            Err((id, reason)) => {
                tracing::warn!(file = %self.path.display(), %loc, %id, %reason, "dropped a record");
                self.out.dropped.push(Dropped { loc, id, reason });
            }
        }
        Ok(())
    }

    fn finish(self) -> Loaded {
        if !self.out.dropped.is_empty() {
            tracing::info!(
                file = %self.path.display(),
                kept = self.out.examples.len(),
                dropped = self.out.dropped.len(),
                "loaded with dropped records"
            );
        }
        self.out
    }
}

/// Loads JSONL files (one JSON object per line; blank lines are skipped).
#[derive(Clone, Debug)]
pub struct JsonlLoader {
    /// The mapping applied to every line.
    pub map: FieldMap,
}

impl JsonlLoader {
    /// A loader with this mapping.
    pub fn new(map: FieldMap) -> Self {
        Self { map }
    }

    /// Loads the examples of a file (dropped records are logged).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Vec<Example>> {
        Ok(self.load_report(path)?.examples)
    }

    /// Loads a file and reports the records left out.
    pub fn load_report(&self, path: impl AsRef<Path>) -> Result<Loaded> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_reader(BufReader::new(file), path)
    }

    /// Loads from any reader; `path` names it in ids and error messages.
    pub fn load_reader(&self, reader: impl Read, path: impl AsRef<Path>) -> Result<Loaded> {
        let path = path.as_ref();
        let mut c = Collector::new(&self.map, path)?;
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        let (mut lineno, mut index) = (0usize, 0usize);
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lineno += 1;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let loc = Loc::Line(lineno);
            let rec: Value = serde_json::from_str(text).map_err(|source| DataError::Json {
                path: path.to_path_buf(),
                loc,
                source,
            })?;
            c.push(&rec, index, loc)?;
            index += 1;
        }
        Ok(c.finish())
    }
}

#[cfg(feature = "parquet")]
/// Loads Parquet files through the `parquet` crate's record API (no Arrow). Each row becomes a
/// JSON object (groups -> objects, lists -> arrays, maps -> objects, UTF-8 byte arrays -> strings),
/// then goes through the same [`FieldMap`] as JSONL. Codecs: snappy, gzip, lz4; zstd with the
/// `parquet-zstd` feature. Needs the `parquet` feature (on by default).
#[derive(Clone, Debug)]
#[cfg(feature = "parquet")]
pub struct ParquetLoader {
    /// The mapping applied to every row.
    pub map: FieldMap,
}

#[cfg(feature = "parquet")]
impl ParquetLoader {
    /// A loader with this mapping.
    pub fn new(map: FieldMap) -> Self {
        Self { map }
    }

    /// Loads the examples of a file (dropped rows are logged).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Vec<Example>> {
        Ok(self.load_report(path)?.examples)
    }

    /// Loads a file and reports the rows left out.
    pub fn load_report(&self, path: impl AsRef<Path>) -> Result<Loaded> {
        use parquet::file::reader::SerializedFileReader;
        let path = path.as_ref();
        let perr = |e: parquet::errors::ParquetError| DataError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = SerializedFileReader::new(file).map_err(perr)?;
        let mut c = Collector::new(&self.map, path)?;
        for (index, row) in reader.into_iter().enumerate() {
            let row = row.map_err(|e| DataError::Parquet {
                path: path.to_path_buf(),
                message: format!("row {index}: {e}"),
            })?;
            c.push(&row_to_json(&row), index, Loc::Row(index))?;
        }
        Ok(c.finish())
    }
}

#[cfg(feature = "parquet")]
fn row_to_json(row: &parquet::record::Row) -> Value {
    Value::Object(
        row.get_column_iter()
            .map(|(k, f)| (k.clone(), field_to_json(f)))
            .collect(),
    )
}

#[cfg(feature = "parquet")]
fn field_to_json(f: &parquet::record::Field) -> Value {
    use parquet::record::Field;
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(n) => Value::from(f64::from(f32::from(*n))),
        Field::Float(n) => Value::from(f64::from(*n)),
        Field::Double(n) => Value::from(*n),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::Array(b.data().iter().map(|x| Value::from(*x)).collect()),
        },
        Field::Group(row) => row_to_json(row),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(field_to_json).collect())
        }
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Field::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (key, field_to_json(v))
                })
                .collect(),
        ),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::MATH_INSTRUCTION;
    use serde_json::json;

    fn load(map: FieldMap, text: &str) -> Result<Loaded> {
        JsonlLoader::new(map).load_reader(text.as_bytes(), "data/qa.jsonl")
    }

    fn qa() -> FieldMap {
        FieldMap::new("math", "q", "a", PromptTemplate::Math(MathTemplate::Chat))
    }

    #[test]
    fn maps_records_and_skips_blank_lines() {
        let out = load(
            qa(),
            "{\"q\": \"1+1?\", \"a\": \"2\"}\n\n{\"q\": \"2+2?\", \"a\": 4}\n",
        )
        .unwrap();
        assert_eq!(out.examples.len(), 2);
        let e = &out.examples[1];
        assert_eq!(e.id, "math/qa/1");
        assert_eq!(e.domain, "math");
        assert_eq!(e.reference, Reference::Answer("4".into()));
        assert_eq!(
            e.prompt,
            Prompt::Chat(vec![ChatMessage::user(format!("2+2? {MATH_INSTRUCTION}"))])
        );
    }

    #[test]
    fn invalid_json_names_file_and_line() {
        let err = load(
            qa(),
            "{\"q\": \"x\", \"a\": \"1\"}\n\n{\"q\": \"x\", \"a\": \n",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Json {
                    loc: Loc::Line(3),
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("data/qa.jsonl: line 3: invalid JSON"),
            "{msg}"
        );
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let err = load(qa(), "{\"q\": \"x\", \"a\": \"1\"}\n{\"q\": \"y\"}\n").unwrap_err();
        assert_eq!(err.to_string(), "data/qa.jsonl: line 2: missing field `a`");
        let err = load(qa(), "{\"q\": 5, \"a\": \"1\"}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data/qa.jsonl: line 1: field `q`: expected a string, found a number"
        );
        let err = load(qa(), "[1, 2]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data/qa.jsonl: line 1: expected a JSON object, found a list"
        );
        let err = load(
            FieldMap::countdown(CountdownTemplate::Base),
            "{\"target\": 5, \"nums\": [1, \"x\"]}\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "data/qa.jsonl: line 1: field `nums`: element 1: expected an integer, found \"x\""
        );
        let err = load(
            FieldMap::gsm8k(MathTemplate::Chat),
            "{\"question\": \"q\", \"answer\": \"no marker\"}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1: field `answer`: no `####`"),
            "{err}"
        );
    }

    #[test]
    fn io_error_names_file() {
        let err = JsonlLoader::new(qa())
            .load("/nonexistent/kiln/x.jsonl")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/kiln/x.jsonl: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn empty_answers_dropped_or_rejected() {
        let text = "{\"q\": \"x\", \"a\": \"1\"}\n{\"q\": \"y\", \"a\": \"\"}\n";
        let out = load(qa(), text).unwrap();
        assert_eq!(out.examples.len(), 1);
        assert_eq!(
            out.dropped,
            vec![Dropped {
                loc: Loc::Line(2),
                id: "math/qa/1".into(),
                reason: "field `a`: empty answer".into()
            }]
        );
        let mut strict = qa();
        strict.drop_empty_answer = false;
        assert_eq!(
            load(strict, text).unwrap_err().to_string(),
            "data/qa.jsonl: line 2: field `a`: empty answer"
        );
    }

    #[test]
    fn duplicate_ids_rejected() {
        let mut m = qa();
        m.id = Some("id".into());
        let err = load(
            m,
            "{\"id\": 1, \"q\": \"x\", \"a\": \"1\"}\n{\"id\": 1, \"q\": \"y\", \"a\": \"2\"}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2: field `id`: duplicate id `math/qa/1` (first at line 1)"),
            "{err}"
        );
    }

    #[test]
    fn dotted_paths_messages_meta_and_extractors() {
        let rec = r#"{"prompt": [{"role": "user", "content": "Solve"}], "rm": {"gt": {"target": 7, "numbers": [3, 4]}}, "sol": "so \\boxed{\\frac{1}{2}} and \\boxed{7}", "lvl": 3}"#;
        let map = FieldMap {
            domain: "countdown".into(),
            id: None,
            id_prefix: Some(String::new()),
            prompt: Some("prompt".into()),
            template: PromptTemplate::Messages,
            reference: ReferenceField::Countdown {
                target: "rm.gt.target".into(),
                nums: "rm.gt.numbers".into(),
            },
            meta: meta_map(&[
                ("level", "lvl"),
                ("first", "prompt.0.content"),
                ("absent", "nope"),
            ]),
            drop_empty_answer: true,
        };
        let e = &load(map, rec).unwrap().examples[0];
        assert_eq!(e.id, "0");
        assert_eq!(e.prompt, Prompt::Chat(vec![ChatMessage::user("Solve")]));
        assert_eq!(
            e.reference,
            Reference::Countdown {
                target: 7,
                nums: vec![3, 4]
            }
        );
        assert_eq!(e.meta.get("level"), Some(&json!(3)));
        assert_eq!(e.meta.get("first"), Some(&json!("Solve")));
        assert!(!e.meta.contains_key("absent"));

        let mut boxed = FieldMap::new("math", "prompt.0.content", "sol", PromptTemplate::Raw);
        boxed.reference = ReferenceField::Answer {
            field: "sol".into(),
            extract: AnswerExtract::LastBoxed,
        };
        let e = &load(boxed, rec).unwrap().examples[0];
        assert_eq!(e.reference, Reference::Answer("7".into()));
        assert_eq!(e.prompt, Prompt::Text("Solve".into()));
    }

    #[test]
    fn verl_presets() {
        let rec = r#"{"data_source": "countdown", "prompt": [{"role": "user", "content": "<|im_start|>system\n..."}], "ability": "math", "reward_model": {"style": "rule", "ground_truth": {"target": 36, "numbers": [79, 17, 60]}}, "extra_info": {"split": "test", "index": 3}}"#;
        let e = &load(
            FieldMap::verl_countdown(CountdownTemplate::QwenInstruct),
            rec,
        )
        .unwrap()
        .examples[0];
        assert_eq!(
            e.reference,
            Reference::Countdown {
                target: 36,
                nums: vec![79, 17, 60]
            }
        );
        assert_eq!(
            e.prompt,
            countdown_prompt(&[79, 17, 60], 36, CountdownTemplate::QwenInstruct)
        );
        assert_eq!(e.meta["index"], json!(3));
        let rec = r#"{"data_source": "lighteval/MATH", "prompt": [{"role": "user", "content": "Find x."}], "reward_model": {"style": "rule", "ground_truth": "5"}, "extra_info": {"index": 0}}"#;
        let e = &load(FieldMap::verl("math"), rec).unwrap().examples[0];
        assert_eq!(e.prompt, Prompt::Chat(vec![ChatMessage::user("Find x.")]));
        assert_eq!(e.reference, Reference::Answer("5".into()));
        assert_eq!(e.meta["data_source"], json!("lighteval/MATH"));
    }

    #[test]
    fn last_boxed_variants() {
        assert_eq!(
            last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b}}."),
            Some("\\frac{a}{b}")
        );
        assert_eq!(last_boxed("\\fbox{x} then \\boxed 5$"), Some("5"));
        assert_eq!(last_boxed("\\boxed{} empty"), Some(""));
        assert_eq!(last_boxed("\\boxed{unbalanced"), None);
        assert_eq!(last_boxed("nothing"), None);
    }

    #[test]
    fn gsm8k_answer_extraction() {
        let out = load(
            FieldMap::gsm8k(MathTemplate::Chat),
            "{\"question\": \"q\", \"answer\": \"a #### b\\n#### 1,234\"}\n",
        )
        .unwrap();
        assert_eq!(out.examples[0].reference, Reference::Answer("1234".into()));
        assert_eq!(
            out.examples[0].meta["solution"],
            json!("a #### b\n#### 1,234")
        );
    }

    #[test]
    fn invalid_mappings_rejected() {
        let mut m = qa();
        m.prompt = None;
        assert!(matches!(load(m, "").unwrap_err(), DataError::Config(_)));
        let mut m = qa();
        m.template = PromptTemplate::Countdown(CountdownTemplate::Base);
        assert!(matches!(load(m, "").unwrap_err(), DataError::Config(_)));
    }

    #[test]
    fn field_map_serde_roundtrip() {
        let m = FieldMap::gsm8k(MathTemplate::Chat);
        let s = serde_json::to_string(&m).unwrap();
        let back: FieldMap = serde_json::from_str(&s).unwrap();
        assert_eq!(back, m);
        let bad = serde_json::from_str::<FieldMap>(
            r#"{"domain": "x", "template": "raw", "reference": {"answer": {"field": "a"}}, "oops": 1}"#,
        );
        assert!(bad.is_err());
    }

    #[cfg(feature = "parquet")]
    mod parquet_files {
        use super::*;
        use parquet::basic::Compression;
        use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        use std::sync::Arc;

        fn tmp(name: &str) -> std::path::PathBuf {
            let dir = std::env::temp_dir().join(format!("kiln-data-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            dir.join(name)
        }

        /// Writes rows (question, answer, id, target, nums) with a LIST column, snappy-compressed.
        fn write(path: &Path, rows: &[(&str, &str, i64, i64, Vec<i64>)]) {
            let schema = Arc::new(
                parse_message_type(
                    "message schema {
                        REQUIRED BINARY question (UTF8);
                        REQUIRED BINARY answer (UTF8);
                        REQUIRED INT64 id;
                        REQUIRED group reward_model { REQUIRED INT64 target; }
                        REQUIRED group nums (LIST) { REPEATED group list { REQUIRED INT64 element; } }
                    }",
                )
                .unwrap(),
            );
            let props = Arc::new(
                WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build(),
            );
            let file = File::create(path).unwrap();
            let mut w = SerializedFileWriter::new(file, schema, props).unwrap();
            let mut rg = w.next_row_group().unwrap();
            let questions: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.0)).collect();
            let answers: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.1)).collect();
            for vals in [questions, answers] {
                let mut col = rg.next_column().unwrap().unwrap();
                col.typed::<ByteArrayType>()
                    .write_batch(&vals, None, None)
                    .unwrap();
                col.close().unwrap();
            }
            for get in [
                |r: &(&str, &str, i64, i64, Vec<i64>)| r.2,
                |r: &(&str, &str, i64, i64, Vec<i64>)| r.3,
            ] {
                let mut col = rg.next_column().unwrap().unwrap();
                let vals: Vec<i64> = rows.iter().map(get).collect();
                col.typed::<Int64Type>()
                    .write_batch(&vals, None, None)
                    .unwrap();
                col.close().unwrap();
            }
            let mut col = rg.next_column().unwrap().unwrap();
            let (mut vals, mut defs, mut reps) = (vec![], vec![], vec![]);
            for r in rows {
                for (i, x) in r.4.iter().enumerate() {
                    vals.push(*x);
                    defs.push(1i16);
                    reps.push(if i == 0 { 0i16 } else { 1 });
                }
            }
            col.typed::<Int64Type>()
                .write_batch(&vals, Some(&defs), Some(&reps))
                .unwrap();
            col.close().unwrap();
            rg.close().unwrap();
            w.close().unwrap();
        }

        #[test]
        fn parquet_rows_map_like_jsonl() {
            let path = tmp("qa.parquet");
            write(
                &path,
                &[
                    ("What is 2+3?", "5", 10, 7, vec![3, 4]),
                    ("And 6*7?", "42", 11, 24, vec![2, 3, 4]),
                ],
            );

            let mut m = FieldMap::new("math", "question", "answer", PromptTemplate::User);
            m.id = Some("id".into());
            let out = ParquetLoader::new(m).load_report(&path).unwrap();
            assert_eq!(out.examples.len(), 2);
            assert_eq!(out.examples[1].id, "math/qa/11");
            assert_eq!(
                out.examples[1].prompt,
                Prompt::Chat(vec![ChatMessage::user("And 6*7?")])
            );
            assert_eq!(out.examples[1].reference, Reference::Answer("42".into()));

            let mut cd = FieldMap::countdown(CountdownTemplate::Base);
            cd.reference = ReferenceField::Countdown {
                target: "reward_model.target".into(),
                nums: "nums".into(),
            };
            let ex = ParquetLoader::new(cd).load(&path).unwrap();
            assert_eq!(
                ex[1].reference,
                Reference::Countdown {
                    target: 24,
                    nums: vec![2, 3, 4]
                }
            );
            assert!(
                ex[1]
                    .prompt
                    .as_text()
                    .unwrap()
                    .contains("Using the numbers [2, 3, 4], create an equation that equals 24.")
            );

            let mut bad = FieldMap::new("math", "question", "missing", PromptTemplate::Raw);
            bad.id_prefix = Some(String::new());
            let err = ParquetLoader::new(bad).load(&path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{}: row 0: missing field `missing`", path.display())
            );
            std::fs::remove_file(&path).ok();
        }

        #[test]
        fn parquet_garbage_is_an_error_not_a_panic() {
            let path = tmp("garbage.parquet");
            std::fs::write(&path, b"this is not parquet at all").unwrap();
            let err = ParquetLoader::new(qa()).load(&path).unwrap_err();
            assert!(matches!(err, DataError::Parquet { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with(&format!("{}: parquet:", path.display())),
                "{err}"
            );
            std::fs::remove_file(&path).ok();
        }
    }
}
