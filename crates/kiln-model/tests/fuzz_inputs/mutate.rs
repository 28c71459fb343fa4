//! Mutations: of bytes, of numbers in text, of JSON nodes, and of safetensors headers.

use super::*;

/// Decimal numbers written over numbers in text files (JSON, TOML, Jinja).
pub const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "3",
    "1.5",
    "1e999",
    "-1e999",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1152921504606846976",
    "4611686018427387904",
    "-9223372036854775808",
    "99999999999999999999999999999",
    "NaN",
];

/// Byte strings inserted by [`Mutation::Insert`]: syntax of the formats, odd Unicode, controls.
pub const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    ",",
    ":",
    "=",
    "\n",
    "\0",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "\"\":",
    "null",
    "[[[[[[[[",
    "]]]]",
    "true",
    "-",
    ".",
    "e",
    "\u{0301}",
    "<|im_start|>",
    "$A",
    "$B",
    "#",
];

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    Truncate(Index),
    /// An 8-byte little-endian value written at a random offset.
    Le64(Index, u64),
    /// A 4-byte little-endian value written at a random offset.
    Le32(Index, u32),
    /// A value written over one of the input's known fields (see [`gguf_fields`]): counts,
    /// lengths, types, dims, offsets. Falls back to [`Mutation::Le64`] when none are known.
    Field(Index, u64),
    /// The n-th run of ASCII digits replaced by a number.
    Number(Index, &'static str),
    /// A JSON node (any depth, the root included) replaced by a value; a no-op for non-JSON.
    Json(Index, JsonValue),
    /// `len` bytes copied from one place over another.
    Splice(Index, Index, u8),
    /// A chunk repeated `times` times in place.
    Repeat(Index, u8, u8),
}

/// A JSON value to plant (kept as a strategy-friendly enum for readable failure reports).
#[derive(Debug, Clone)]
pub enum JsonValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    EmptyArray,
    EmptyObject,
    Array(Vec<i64>),
    Tagged(String),
}

impl JsonValue {
    pub fn to_value(&self) -> Value {
        match self {
            JsonValue::Null => Value::Null,
            JsonValue::Bool(b) => json!(b),
            JsonValue::Int(i) => json!(i),
            JsonValue::UInt(u) => json!(u),
            JsonValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            JsonValue::Str(s) => json!(s),
            JsonValue::EmptyArray => json!([]),
            JsonValue::EmptyObject => json!({}),
            JsonValue::Array(v) => json!(v),
            JsonValue::Tagged(t) => json!({ "type": t }),
        }
    }
}

/// Strings that mean something to one of the formats.
pub const WORDS: &[&str] = &[
    "",
    "F32",
    "F16",
    "BF16",
    "F64",
    "I64",
    "U8",
    "BOOL",
    "F8_E4M3",
    "llama",
    "qwen2",
    "qwen3",
    "BPE",
    "WordLevel",
    "WordPiece",
    "Unigram",
    "Sequence",
    "ByteLevel",
    "Split",
    "NFC",
    "Lowercase",
    "Metaspace",
    "TemplateProcessing",
    "Fuse",
    "Strip",
    "Replace",
    "Digits",
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "$A",
    "$B",
    "$A:0",
    "default",
    "linear",
    "llama3",
    "yarn",
    "a b",
    "{{ 7 * 7 }}",
    "{% for x in messages %}",
    "model.layers.0.self_attn.q_proj.weight",
    "model.embed_tokens.weight",
    "lm_head.weight",
    "model.norm.weight",
];

pub fn json_value() -> impl Strategy<Value = JsonValue> {
    prop_oneof![
        Just(JsonValue::Null),
        any::<bool>().prop_map(JsonValue::Bool),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(1),
            Just(i64::MIN),
            Just(i64::MAX),
            -10i64..300
        ]
        .prop_map(JsonValue::Int),
        prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 62),
            Just(1u64 << 32),
            Just(u32::MAX as u64)
        ]
        .prop_map(JsonValue::UInt),
        prop_oneof![Just(1e300), Just(-0.0), Just(1e-300), any::<f64>()].prop_map(JsonValue::Float),
        prop_oneof![select(WORDS).prop_map(str::to_owned), ".{0,12}"].prop_map(JsonValue::Str),
        Just(JsonValue::EmptyArray),
        Just(JsonValue::EmptyObject),
        proptest::collection::vec(prop_oneof![Just(i64::MAX), Just(-1), 0i64..64], 0..5)
            .prop_map(JsonValue::Array),
        select(WORDS).prop_map(|s| JsonValue::Tagged(s.to_owned())),
    ]
}

pub fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(i64::MAX as u64),
        Just(1 << 60),
        Just(1 << 62),
        Just(1 << 32),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 + 1),
        0u64..64,
        any::<u64>(),
    ]
}

pub fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(i32::MAX as u32),
        Just(1 << 31),
        0u32..40,
        any::<u32>(),
    ]
}

pub fn insert_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(TOKENS).prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 1..16),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (any::<Index>(), insert_bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), extreme_u64()).prop_map(|(i, v)| Mutation::Le64(i, v)),
        1 => (any::<Index>(), extreme_u32()).prop_map(|(i, v)| Mutation::Le32(i, v)),
        3 => (any::<Index>(), extreme_u64()).prop_map(|(i, v)| Mutation::Field(i, v)),
        2 => (any::<Index>(), select(NUMBERS)).prop_map(|(i, n)| Mutation::Number(i, n)),
        3 => (any::<Index>(), json_value()).prop_map(|(i, v)| Mutation::Json(i, v)),
        1 => (any::<Index>(), any::<Index>(), 1u8..128).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        1 => (any::<Index>(), 1u8..32, 2u8..16).prop_map(|(i, n, t)| Mutation::Repeat(i, n, t)),
    ]
}

pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..=max)
}

/// Mutations for text files (JSON, Jinja): mostly ones that keep the text UTF-8 and often keep
/// it JSON, so that cases get past the first parser.
pub fn text_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..7).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), select(TOKENS).prop_map(|s| s.as_bytes().to_vec()))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), select(NUMBERS)).prop_map(|(i, n)| Mutation::Number(i, n)),
        6 => (any::<Index>(), json_value()).prop_map(|(i, v)| Mutation::Json(i, v)),
        1 => (any::<Index>(), any::<Index>(), 1u8..128).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

/// Mutations for a file of either kind: binary ones and text ones, used by file type.
pub fn file_mutations(max: usize) -> impl Strategy<Value = (Vec<Mutation>, Vec<Mutation>)> {
    (
        mutations(max),
        proptest::collection::vec(text_mutation(), 1..=max),
    )
}

/// Whether `name` is a text file (JSON, Jinja, TOML).
pub fn is_text(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".jinja")
}

/// Every node of a JSON document, as a pointer (`/a/0/b`).
pub fn json_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                json_pointers(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                json_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Applies `m` to `data`; `fields` are known (offset, width) fields of the original input.
pub fn apply(data: &mut Vec<u8>, m: &Mutation, fields: &[(usize, u8)]) {
    let len = data.len();
    let write = |data: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        let end = (at + bytes.len()).min(data.len());
        data[at..end].copy_from_slice(&bytes[..end - at]);
    };
    match m {
        Mutation::Insert(i, bytes) => {
            let at = if len == 0 { 0 } else { i.index(len + 1) };
            data.splice(at..at, bytes.iter().copied());
        }
        _ if len == 0 => {}
        Mutation::FlipBit(i, bit) => data[i.index(len)] ^= 1 << bit,
        Mutation::SetByte(i, b) => data[i.index(len)] = *b,
        Mutation::Delete(i, n) => {
            let at = i.index(len);
            data.drain(at..(at + *n as usize).min(len));
        }
        Mutation::Truncate(i) => data.truncate(i.index(len)),
        Mutation::Le64(i, v) => write(data, i.index(len), &v.to_le_bytes()),
        Mutation::Le32(i, v) => write(data, i.index(len), &v.to_le_bytes()),
        Mutation::Field(i, v) => match fields.get(i.index(fields.len().max(1))) {
            Some(&(at, 4)) if at < len => write(data, at, &(*v as u32).to_le_bytes()),
            Some(&(at, _)) if at < len => write(data, at, &v.to_le_bytes()),
            _ => write(data, i.index(len), &v.to_le_bytes()),
        },
        Mutation::Number(i, n) => {
            let mut runs = Vec::new();
            let mut start = None;
            for (j, b) in data.iter().enumerate() {
                match (b.is_ascii_digit(), start) {
                    (true, None) => start = Some(j),
                    (false, Some(s)) => {
                        runs.push(s..j);
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                runs.push(s..len);
            }
            if !runs.is_empty() {
                let r = runs[i.index(runs.len())].clone();
                data.splice(r, n.bytes());
            }
        }
        Mutation::Json(i, v) => {
            let Ok(mut doc) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            let mut pointers = Vec::new();
            json_pointers(&doc, String::new(), &mut pointers);
            let p = &pointers[i.index(pointers.len())];
            if p.is_empty() {
                doc = v.to_value();
            } else if let Some(node) = doc.pointer_mut(p) {
                *node = v.to_value();
            }
            *data = serde_json::to_vec_pretty(&doc).unwrap();
        }
        Mutation::Splice(from, to, n) => {
            let (from, to) = (from.index(len), to.index(len));
            let n = (*n as usize).min(len - from).min(len - to);
            data.copy_within(from..from + n, to);
        }
        Mutation::Repeat(i, n, times) => {
            let at = i.index(len);
            let chunk = data[at..(at + *n as usize).min(len)].to_vec();
            for _ in 1..*times {
                data.splice(at..at, chunk.iter().copied());
            }
        }
    }
}

pub fn mutated(seed: &[u8], ms: &[Mutation], fields: &[(usize, u8)]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for m in ms {
        apply(&mut data, m, fields);
    }
    data
}

// ---------------------------------------------------------------------------------------------
// Safetensors header edits.

/// An edit of a safetensors header (the JSON after the length).
#[derive(Debug, Clone)]
pub enum HeaderEdit {
    Dtype(Index, &'static str),
    Shape(Index, Vec<u64>),
    Offsets(Index, u64, u64),
    Remove(Index),
    Duplicate(Index, &'static str),
    Metadata(JsonValue),
}

pub fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let n = prop_oneof![
        0u64..20,
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 62),
        Just(u64::MAX)
    ];
    prop_oneof![
        1 => (any::<Index>(), select(&["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "F4", "X"][..]))
            .prop_map(|(i, d)| HeaderEdit::Dtype(i, d)),
        2 => (any::<Index>(), proptest::collection::vec(n.clone(), 0..5)).prop_map(|(i, s)| HeaderEdit::Shape(i, s)),
        2 => (any::<Index>(), n.clone(), n).prop_map(|(i, a, b)| HeaderEdit::Offsets(i, a, b)),
        1 => any::<Index>().prop_map(HeaderEdit::Remove),
        1 => (any::<Index>(), select(&["lm_head.weight", "model.norm.weight", "__metadata__", "model.layers.0.self_attn.q_proj.bias"][..]))
            .prop_map(|(i, n)| HeaderEdit::Duplicate(i, n)),
        1 => json_value().prop_map(HeaderEdit::Metadata),
    ]
}

/// Rebuilds a safetensors file with an edited header (the data bytes stay as they are); the
/// header length written is the true one, or `length` when given.
pub fn edit_safetensors(bytes: &[u8], edits: &[HeaderEdit], length: Option<u64>) -> Vec<u8> {
    rebuild_safetensors(bytes, length, |header| {
        for e in edits {
            apply_header_edit(header, e);
        }
    })
}

/// A safetensors file with its header JSON changed by `edit`.
pub fn rebuild_safetensors(
    bytes: &[u8],
    length: Option<u64>,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = length.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

pub fn apply_header_edit(header: &mut serde_json::Map<String, Value>, e: &HeaderEdit) {
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let pick = |i: &Index| names.get(i.index(names.len().max(1))).cloned();
    match e {
        HeaderEdit::Dtype(i, d) => {
            if let Some(k) = pick(i) {
                header[&k]["dtype"] = json!(d);
            }
        }
        HeaderEdit::Shape(i, s) => {
            if let Some(k) = pick(i) {
                header[&k]["shape"] = json!(s);
            }
        }
        HeaderEdit::Offsets(i, a, b) => {
            if let Some(k) = pick(i) {
                header[&k]["data_offsets"] = json!([a, b]);
            }
        }
        HeaderEdit::Remove(i) => {
            if let Some(k) = pick(i) {
                header.remove(&k);
            }
        }
        HeaderEdit::Duplicate(i, new) => {
            if let Some(k) = pick(i) {
                let v = header[&k].clone();
                header.insert((*new).into(), v);
            }
        }
        HeaderEdit::Metadata(v) => {
            header.insert("__metadata__".into(), v.to_value());
        }
    }
}
