//! GGUF: a writer (for the seeds and the structure-aware target), a walker that finds the
//! length, count and type fields of a file, the seeds, and structure-aware edits.

use super::*;

pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml type ids used by the seeds.
pub mod ggml {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q8_0: u32 = 8;
    pub const BF16: u32 = 30;
}

#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub ggml_type: u32,
    /// GGUF order (fastest-varying first).
    pub dims: Vec<u64>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct GgufSpec {
    pub version: u32,
    pub kv: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorSpec>,
}

pub fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => ty::U8,
        MetaValue::I8(_) => ty::I8,
        MetaValue::U16(_) => ty::U16,
        MetaValue::I16(_) => ty::I16,
        MetaValue::U32(_) => ty::U32,
        MetaValue::I32(_) => ty::I32,
        MetaValue::F32(_) => ty::F32,
        MetaValue::Bool(_) => ty::BOOL,
        MetaValue::String(_) => ty::STRING,
        MetaValue::Array { .. } => ty::ARRAY,
        MetaValue::U64(_) => ty::U64,
        MetaValue::I64(_) => ty::I64,
        MetaValue::F64(_) => ty::F64,
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Writes `v` as its own type says; an array's items are written as they are, whatever its
/// declared element type (so generated arrays may lie about their element type).
pub fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.extend(x.to_le_bytes()),
        MetaValue::I8(x) => out.extend(x.to_le_bytes()),
        MetaValue::U16(x) => out.extend(x.to_le_bytes()),
        MetaValue::I16(x) => out.extend(x.to_le_bytes()),
        MetaValue::U32(x) => out.extend(x.to_le_bytes()),
        MetaValue::I32(x) => out.extend(x.to_le_bytes()),
        MetaValue::F32(x) => out.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array { elem_type, items } => {
            out.extend(elem_type.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        MetaValue::U64(x) => out.extend(x.to_le_bytes()),
        MetaValue::I64(x) => out.extend(x.to_le_bytes()),
        MetaValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

impl GgufSpec {
    pub fn kv(mut self, key: &str, value: MetaValue) -> Self {
        self.kv.push((key.to_owned(), value));
        self
    }

    pub fn tensor(mut self, name: &str, ggml_type: u32, dims: &[u64], data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec {
            name: name.to_owned(),
            ggml_type,
            dims: dims.to_vec(),
            data,
        });
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // The declared alignment when it is sane for a writer, else the default (the file then
        // lies about its alignment, which is a fine input too).
        let alignment = self
            .kv
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_int())
            .filter(|&a| a > 0 && a <= 4096 && (a as u64).is_power_of_two())
            .map_or(32, |a| a as u64);
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(value_type(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(alignment);
        }
        let data_start = (out.len() as u64).next_multiple_of(alignment);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(&t.data);
        }
        out
    }
}

/// Fields of a file: (offset, width in bytes).
pub type Fields = Vec<(usize, u8)>;

/// The (offset, width) of every count, length, type, dimension and offset field of a GGUF file,
/// as far as it parses.
pub fn gguf_fields(b: &[u8]) -> Fields {
    struct Walk<'a> {
        b: &'a [u8],
        pos: usize,
        fields: Fields,
    }
    impl Walk<'_> {
        fn int(&mut self, width: u8, record: bool) -> Option<u64> {
            let bytes = self.b.get(self.pos..self.pos + width as usize)?;
            let mut a = [0u8; 8];
            a[..width as usize].copy_from_slice(bytes);
            if record {
                self.fields.push((self.pos, width));
            }
            self.pos += width as usize;
            Some(u64::from_le_bytes(a))
        }
        fn string(&mut self) -> Option<()> {
            let len = self.int(8, true)?;
            self.pos = self.pos.checked_add(usize::try_from(len).ok()?)?;
            (self.pos <= self.b.len()).then_some(())
        }
        fn value(&mut self, t: u32) -> Option<()> {
            match t {
                ty::U8 | ty::I8 | ty::BOOL => self.pos += 1,
                ty::U16 | ty::I16 => self.pos += 2,
                ty::U32 | ty::I32 | ty::F32 => {
                    self.int(4, true)?;
                }
                ty::U64 | ty::I64 | ty::F64 => {
                    self.int(8, true)?;
                }
                ty::STRING => self.string()?,
                ty::ARRAY => {
                    let elem = self.int(4, true)? as u32;
                    let n = self.int(8, true)?;
                    for _ in 0..n.min(1 << 20) {
                        self.value(elem)?;
                    }
                }
                _ => return None,
            }
            Some(())
        }
    }
    let mut w = Walk {
        b,
        pos: 4,
        fields: Vec::new(),
    };
    let _ = (|| -> Option<()> {
        w.int(4, true)?;
        let n_tensors = w.int(8, true)?;
        let n_kv = w.int(8, true)?;
        for _ in 0..n_kv.min(1 << 16) {
            w.string()?;
            let t = w.int(4, true)? as u32;
            w.value(t)?;
        }
        for _ in 0..n_tensors.min(1 << 16) {
            w.string()?;
            let n_dims = w.int(4, true)?;
            for _ in 0..n_dims.min(8) {
                w.int(8, true)?;
            }
            w.int(4, true)?;
            w.int(8, true)?;
        }
        Some(())
    })();
    w.fields
}

/// Deterministic pseudo-random bytes (the seeds' tensor data).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Small finite floats.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    noise(n, seed)
        .into_iter()
        .map(|b| (b as f32 - 128.0) / 512.0)
        .collect()
}

pub fn f32_data(n: usize, seed: u64) -> Vec<u8> {
    values(n, seed)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

pub fn f16_data(n: usize, seed: u64) -> Vec<u8> {
    values(n, seed)
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

pub fn bf16_data(n: usize, seed: u64) -> Vec<u8> {
    values(n, seed)
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect()
}

/// Quantized blocks of a ggml type (32 elements each): a small f16 scale (and min), then noise.
pub fn quant_data(ggml_type: u32, n: usize, seed: u64) -> Vec<u8> {
    let (scales, quants) = match ggml_type {
        ggml::Q8_0 => (1, 32),
        ggml::Q4_0 => (1, 16),
        ggml::Q4_1 => (2, 16),
        other => panic!("no seed data for ggml type {other}"),
    };
    let mut out = Vec::new();
    for block in 0..n / 32 {
        for _ in 0..scales {
            out.extend(half::f16::from_f32(0.01).to_le_bytes());
        }
        out.extend(noise(quants, seed + block as u64));
    }
    out
}

pub fn str_array(items: &[&str]) -> MetaValue {
    MetaValue::Array {
        elem_type: ty::STRING,
        items: items
            .iter()
            .map(|s| MetaValue::String((*s).into()))
            .collect(),
    }
}

pub fn s(v: &str) -> MetaValue {
    MetaValue::String(v.into())
}

/// The GGUF seeds: (file name, spec).
pub fn gguf_seeds() -> Vec<(&'static str, GgufSpec)> {
    let empty = GgufSpec {
        version: 3,
        kv: Vec::new(),
        tensors: Vec::new(),
    };
    // A Llama with one layer, hidden 32, 4 heads of 8 (2 kv heads), every tensor type kiln reads
    // except the K-quants, Llama 3 rope scaling, and a byte-level BPE tokenizer of 8 tokens.
    let (d, ff, kv, vocab) = (32u64, 32u64, 16u64, 8u64);
    let llama = empty
        .clone()
        .kv("general.architecture", s("llama"))
        .kv("general.name", s("tiny-llama"))
        .kv("general.alignment", MetaValue::U32(32))
        .kv("llama.block_count", MetaValue::U32(1))
        .kv("llama.context_length", MetaValue::U32(64))
        .kv("llama.embedding_length", MetaValue::U32(d as u32))
        .kv("llama.feed_forward_length", MetaValue::U32(ff as u32))
        .kv("llama.attention.head_count", MetaValue::U32(4))
        .kv("llama.attention.head_count_kv", MetaValue::U32(2))
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        )
        .kv("llama.rope.freq_base", MetaValue::F32(10000.0))
        .kv("llama.rope.dimension_count", MetaValue::U32(8))
        .kv("llama.rope.scaling.type", s("llama3"))
        .kv("llama.rope.scaling.factor", MetaValue::F32(8.0))
        .kv(
            "llama.rope.scaling.original_context_length",
            MetaValue::U32(32),
        )
        .kv("llama.vocab_size", MetaValue::U32(vocab as u32))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.pre", s("llama-bpe"))
        .kv(
            "tokenizer.ggml.tokens",
            str_array(&[
                "<|begin_of_text|>",
                "<|eot_id|>",
                "a",
                "b",
                "ab",
                "Ġ",
                "Ġa",
                "c",
            ]),
        )
        .kv("tokenizer.ggml.merges", str_array(&["a b", "Ġ a"]))
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array {
                elem_type: ty::I32,
                items: [3, 3, 1, 1, 1, 1, 1, 4].map(MetaValue::I32).to_vec(),
            },
        )
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(0))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.padding_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .kv("tokenizer.chat_template", s(LLAMA3_LIKE_TEMPLATE))
        .tensor(
            "token_embd.weight",
            ggml::F16,
            &[d, vocab],
            f16_data((d * vocab) as usize, 1),
        )
        .tensor(
            "output_norm.weight",
            ggml::F32,
            &[d],
            f32_data(d as usize, 2),
        )
        .tensor(
            "output.weight",
            ggml::BF16,
            &[d, vocab],
            bf16_data((d * vocab) as usize, 3),
        )
        .tensor(
            "blk.0.attn_norm.weight",
            ggml::F32,
            &[d],
            f32_data(d as usize, 4),
        )
        .tensor(
            "blk.0.attn_q.weight",
            ggml::Q4_0,
            &[d, d],
            quant_data(ggml::Q4_0, (d * d) as usize, 5),
        )
        .tensor(
            "blk.0.attn_k.weight",
            ggml::Q4_1,
            &[d, kv],
            quant_data(ggml::Q4_1, (d * kv) as usize, 6),
        )
        .tensor(
            "blk.0.attn_v.weight",
            ggml::Q8_0,
            &[d, kv],
            quant_data(ggml::Q8_0, (d * kv) as usize, 7),
        )
        .tensor(
            "blk.0.attn_output.weight",
            ggml::Q8_0,
            &[d, d],
            quant_data(ggml::Q8_0, (d * d) as usize, 8),
        )
        .tensor(
            "blk.0.ffn_norm.weight",
            ggml::F32,
            &[d],
            f32_data(d as usize, 9),
        )
        .tensor(
            "blk.0.ffn_gate.weight",
            ggml::Q4_0,
            &[d, ff],
            quant_data(ggml::Q4_0, (d * ff) as usize, 10),
        )
        .tensor(
            "blk.0.ffn_up.weight",
            ggml::Q4_1,
            &[d, ff],
            quant_data(ggml::Q4_1, (d * ff) as usize, 11),
        )
        .tensor(
            "blk.0.ffn_down.weight",
            ggml::Q8_0,
            &[ff, d],
            quant_data(ggml::Q8_0, (d * ff) as usize, 12),
        );
    // A Qwen3 with one layer, hidden 16, 2 heads of 8 (1 kv head), q/k norms, tied embeddings.
    let (d, ff, hd, vocab) = (16u64, 16u64, 8u64, 6u64);
    let qwen3 = empty
        .kv("general.architecture", s("qwen3"))
        .kv("qwen3.block_count", MetaValue::U32(1))
        .kv("qwen3.context_length", MetaValue::U64(128))
        .kv("qwen3.embedding_length", MetaValue::U32(d as u32))
        .kv("qwen3.feed_forward_length", MetaValue::U32(ff as u32))
        .kv("qwen3.attention.head_count", MetaValue::U32(2))
        .kv("qwen3.attention.head_count_kv", MetaValue::U32(1))
        .kv("qwen3.attention.key_length", MetaValue::U32(hd as u32))
        .kv(
            "qwen3.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-6),
        )
        .kv("qwen3.rope.freq_base", MetaValue::F32(1e6))
        .kv("tokenizer.ggml.model", s("gpt2"))
        .kv("tokenizer.ggml.pre", s("qwen2"))
        .kv(
            "tokenizer.ggml.tokens",
            str_array(&["<|im_start|>", "<|im_end|>", "x", "y", "xy", "Ċ"]),
        )
        .kv("tokenizer.ggml.merges", str_array(&["x y"]))
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array {
                elem_type: ty::I32,
                items: [3, 3, 1, 1, 1, 1].map(MetaValue::I32).to_vec(),
            },
        )
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(false))
        .kv("tokenizer.chat_template", s(QWEN3_LIKE_TEMPLATE))
        .tensor(
            "token_embd.weight",
            ggml::F32,
            &[d, vocab],
            f32_data((d * vocab) as usize, 21),
        )
        .tensor(
            "output_norm.weight",
            ggml::F32,
            &[d],
            f32_data(d as usize, 22),
        )
        .tensor(
            "blk.0.attn_norm.weight",
            ggml::F32,
            &[d],
            f32_data(d as usize, 23),
        )
        .tensor(
            "blk.0.attn_q.weight",
            ggml::F16,
            &[d, 2 * hd],
            f16_data((d * 2 * hd) as usize, 24),
        )
        .tensor(
            "blk.0.attn_k.weight",
            ggml::F16,
            &[d, hd],
            f16_data((d * hd) as usize, 25),
        )
        .tensor(
            "blk.0.attn_v.weight",
            ggml::BF16,
            &[d, hd],
            bf16_data((d * hd) as usize, 26),
        )
        .tensor(
            "blk.0.attn_output.weight",
            ggml::F16,
            &[2 * hd, d],
            f16_data((d * 2 * hd) as usize, 27),
        )
        .tensor(
            "blk.0.attn_q_norm.weight",
            ggml::F32,
            &[hd],
            f32_data(hd as usize, 28),
        )
        .tensor(
            "blk.0.attn_k_norm.weight",
            ggml::F32,
            &[hd],
            f32_data(hd as usize, 29),
        )
        .tensor(
            "blk.0.ffn_norm.weight",
            ggml::F32,
            &[d],
            f32_data(d as usize, 30),
        )
        .tensor(
            "blk.0.ffn_gate.weight",
            ggml::F16,
            &[d, ff],
            f16_data((d * ff) as usize, 31),
        )
        .tensor(
            "blk.0.ffn_up.weight",
            ggml::F16,
            &[d, ff],
            f16_data((d * ff) as usize, 32),
        )
        .tensor(
            "blk.0.ffn_down.weight",
            ggml::F16,
            &[ff, d],
            f16_data((d * ff) as usize, 33),
        );
    vec![("tiny-llama.gguf", llama), ("tiny-qwen3.gguf", qwen3)]
}

// ---------------------------------------------------------------------------------------------
// Structure-aware edits.

/// Keys a generated entry may take: the seeds' own, other architectures', and a few more.
pub const GGUF_KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "llama.block_count",
    "llama.embedding_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.context_length",
    "llama.feed_forward_length",
    "llama.rope.scaling.type",
    "llama.rope.scaling.factor",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "qwen3.block_count",
    "qwen3.attention.key_length",
    "qwen2.block_count",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.chat_template",
];

pub const GGUF_TENSORS: &[&str] = &[
    "token_embd.weight",
    "output.weight",
    "output_norm.weight",
    "rope_freqs.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_q.bias",
    "blk.0.attn_k.weight",
    "blk.0.ffn_down.weight",
    "blk.1.attn_norm.weight",
    "blk.4294967295.attn_norm.weight",
];

pub const GGUF_STRINGS: &[&str] = &[
    "",
    "llama",
    "qwen2",
    "qwen3",
    "gpt2",
    "llama-bpe",
    "smollm",
    "qwen2",
    "linear",
    "llama3",
    "yarn",
    "none",
    "a b",
    "Ġ a",
    "<s>",
    "{{ raise_exception('x') }}",
];

pub fn meta_value() -> impl Strategy<Value = MetaValue> {
    let int = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(8),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        any::<u64>()
    ];
    let leaf = prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        int.clone().prop_map(|v| MetaValue::U32(v as u32)),
        int.clone().prop_map(|v| MetaValue::I32(v as i32)),
        int.clone().prop_map(MetaValue::U64),
        int.prop_map(|v| MetaValue::I64(v as i64)),
        prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(0.0f32),
            Just(-1.0),
            any::<f32>()
        ]
        .prop_map(MetaValue::F32),
        any::<f64>().prop_map(MetaValue::F64),
        any::<bool>().prop_map(MetaValue::Bool),
        prop_oneof![select(GGUF_STRINGS).prop_map(str::to_owned), ".{0,16}"]
            .prop_map(MetaValue::String),
    ];
    leaf.prop_recursive(3, 48, 12, |inner| {
        (
            prop_oneof![0u32..13, Just(13), Just(u32::MAX)],
            proptest::collection::vec(inner, 0..12),
        )
            .prop_map(|(elem_type, items)| {
                // Mostly an honest element type (the first item's), sometimes a lie.
                let elem_type = match items.first() {
                    Some(first) if elem_type < 11 => value_type(first),
                    _ => elem_type,
                };
                MetaValue::Array { elem_type, items }
            })
    })
}

#[derive(Debug, Clone)]
pub enum GgufEdit {
    RemoveKv(Index),
    SetValue(Index, MetaValue),
    InsertKv(Index, String, MetaValue),
    DuplicateKv(Index),
    RemoveTensor(Index),
    SetDims(Index, Vec<u64>),
    SetType(Index, u32),
    RenameTensor(Index, String),
    DuplicateTensor(Index),
    ResizeData(Index, u16),
    Version(u32),
}

pub fn gguf_edit() -> impl Strategy<Value = GgufEdit> {
    let key = prop_oneof![select(GGUF_KEYS).prop_map(str::to_owned), "[a-z._]{0,24}"];
    let dim = prop_oneof![
        0u64..70,
        Just(256),
        Just(1 << 32),
        Just(1 << 62),
        Just(u64::MAX)
    ];
    prop_oneof![
        1 => any::<Index>().prop_map(GgufEdit::RemoveKv),
        3 => (any::<Index>(), meta_value()).prop_map(|(i, v)| GgufEdit::SetValue(i, v)),
        2 => (any::<Index>(), key, meta_value()).prop_map(|(i, k, v)| GgufEdit::InsertKv(i, k, v)),
        1 => any::<Index>().prop_map(GgufEdit::DuplicateKv),
        1 => any::<Index>().prop_map(GgufEdit::RemoveTensor),
        2 => (any::<Index>(), proptest::collection::vec(dim, 0..6)).prop_map(|(i, d)| GgufEdit::SetDims(i, d)),
        1 => (any::<Index>(), prop_oneof![0u32..40, Just(u32::MAX)]).prop_map(|(i, t)| GgufEdit::SetType(i, t)),
        1 => (any::<Index>(), select(GGUF_TENSORS)).prop_map(|(i, n)| GgufEdit::RenameTensor(i, n.into())),
        1 => any::<Index>().prop_map(GgufEdit::DuplicateTensor),
        1 => (any::<Index>(), any::<u16>()).prop_map(|(i, n)| GgufEdit::ResizeData(i, n)),
        1 => prop_oneof![Just(1u32), Just(2), Just(4), Just(u32::MAX)].prop_map(GgufEdit::Version),
    ]
}

pub fn edit(spec: &mut GgufSpec, e: &GgufEdit) {
    let (nk, nt) = (spec.kv.len(), spec.tensors.len());
    match e {
        GgufEdit::RemoveKv(i) if nk > 0 => {
            spec.kv.remove(i.index(nk));
        }
        GgufEdit::SetValue(i, v) if nk > 0 => spec.kv[i.index(nk)].1 = v.clone(),
        GgufEdit::InsertKv(i, k, v) => spec.kv.insert(i.index(nk + 1), (k.clone(), v.clone())),
        GgufEdit::DuplicateKv(i) if nk > 0 => {
            let kv = spec.kv[i.index(nk)].clone();
            spec.kv.push(kv);
        }
        GgufEdit::RemoveTensor(i) if nt > 0 => {
            spec.tensors.remove(i.index(nt));
        }
        GgufEdit::SetDims(i, d) if nt > 0 => spec.tensors[i.index(nt)].dims = d.clone(),
        GgufEdit::SetType(i, t) if nt > 0 => spec.tensors[i.index(nt)].ggml_type = *t,
        GgufEdit::RenameTensor(i, n) if nt > 0 => spec.tensors[i.index(nt)].name = n.clone(),
        GgufEdit::DuplicateTensor(i) if nt > 0 => {
            let t = spec.tensors[i.index(nt)].clone();
            spec.tensors.push(t);
        }
        GgufEdit::ResizeData(i, n) if nt > 0 => {
            spec.tensors[i.index(nt)].data.resize(*n as usize, 7)
        }
        GgufEdit::Version(v) => spec.version = *v,
        _ => {}
    }
}
