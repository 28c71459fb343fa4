//! Reader tests: metadata of every type, accessors, and every kind of broken file (built with
//! the test writer), then the real SmolLM2 checkpoint against the gguf-py / transformers fixture.

use super::testutil::{TempFile, Writer, put_str, smollm2_gguf, str_array};
use super::value::type_id;
use super::*;

fn open(w: &Writer, tag: &str) -> Result<GgufFile, GgufError> {
    let f = w.write(tag);
    GgufFile::open(f.path())
}

fn open_bytes(bytes: &[u8], tag: &str) -> (TempFile, Result<GgufFile, GgufError>) {
    let f = TempFile::with_bytes(tag, bytes);
    let r = GgufFile::open(f.path());
    (f, r)
}

fn all_types() -> Writer {
    Writer::new()
        .kv("u8", MetaValue::U8(200))
        .kv("i8", MetaValue::I8(-5))
        .kv("u16", MetaValue::U16(60000))
        .kv("i16", MetaValue::I16(-300))
        .kv("u32", MetaValue::U32(4_000_000_000))
        .kv("i32", MetaValue::I32(-7))
        .kv("f32", MetaValue::F32(0.25))
        .kv("bool", MetaValue::Bool(true))
        .kv("string", MetaValue::String("héllo".into()))
        .kv("u64", MetaValue::U64(1 << 40))
        .kv("i64", MetaValue::I64(-(1 << 40)))
        .kv("f64", MetaValue::F64(1e-300))
        .kv("strings", str_array(&["a", "", "ü"]))
        .kv(
            "ints",
            MetaValue::Array {
                elem_type: type_id::I16,
                items: vec![MetaValue::I16(-1), MetaValue::I16(2)],
            },
        )
        .kv(
            "nested",
            MetaValue::Array {
                elem_type: type_id::ARRAY,
                items: vec![
                    MetaValue::Array {
                        elem_type: type_id::U8,
                        items: vec![MetaValue::U8(1)],
                    },
                    MetaValue::Array {
                        elem_type: type_id::STRING,
                        items: vec![],
                    },
                ],
            },
        )
}

#[test]
fn reads_every_value_type() {
    let w = all_types();
    let g = open(&w, "types").unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata(), &w.kv[..]);
    assert_eq!(g.get_u32("u8").unwrap(), Some(200));
    assert_eq!(g.get_u64("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(g.get_u64("u64").unwrap(), Some(1 << 40));
    assert_eq!(g.get_f32("f32").unwrap(), Some(0.25));
    assert_eq!(g.get_f32("u16").unwrap(), Some(60000.0));
    assert_eq!(g.get_bool("bool").unwrap(), Some(true));
    assert_eq!(g.get_str("string").unwrap(), Some("héllo"));
    assert_eq!(
        g.get_str_array("strings").unwrap(),
        Some(vec!["a", "", "ü"])
    );
    assert_eq!(g.get_int_array("ints").unwrap(), Some(vec![-1, 2]));
    assert_eq!(g.get_str("absent").unwrap(), None);
    assert!(matches!(
        g.require("absent", g.get_str("absent")),
        Err(GgufError::MissingKey { .. })
    ));
}

#[test]
fn accessor_type_and_range_errors_name_the_key() {
    let g = open(&all_types(), "types-err").unwrap();
    for err in [
        g.get_u32("i8").unwrap_err(),
        g.get_u32("u64").unwrap_err(),
        g.get_u64("i64").unwrap_err(),
        g.get_str("u8").map(|_| ()).unwrap_err(),
        g.get_f32("string").map(|_| ()).unwrap_err(),
        g.get_str_array("ints").map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(err, GgufError::WrongType { .. }), "{err}");
        assert!(err.to_string().contains("metadata key `"), "{err}");
    }
}

#[test]
fn version_2_and_custom_alignment() {
    let mut w = Writer::new()
        .kv("general.alignment", MetaValue::U32(64))
        .tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
        .tensor_f32("b", &[2, 2], &[4.0, 5.0, 6.0, 7.0]);
    w.version = 2;
    let g = open(&w, "v2").unwrap();
    assert_eq!((g.version(), g.alignment()), (2, 64));
    assert_eq!(g.tensor_f32("a").unwrap(), (vec![3], vec![1.0, 2.0, 3.0]));
    assert_eq!(
        g.tensor_f32("b").unwrap(),
        (vec![2, 2], vec![4.0, 5.0, 6.0, 7.0])
    );
    assert_eq!(g.tensor_infos().len(), 2);
}

#[test]
fn shape_is_row_major() {
    // ggml ne = [4, 2, 3] (ne[0] fastest) is numpy shape (3, 2, 4).
    let values: Vec<f32> = (0..24).map(|x| x as f32).collect();
    let g = open(&Writer::new().tensor_f32("t", &[4, 2, 3], &values), "shape").unwrap();
    let (shape, data) = g.tensor_f32("t").unwrap();
    assert_eq!(shape, vec![3, 2, 4]);
    assert_eq!(data, values);
}

#[test]
fn missing_file_names_it() {
    let err = GgufFile::open("/nonexistent/kiln/model.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/kiln/model.gguf"),
        "{err}"
    );
}

#[test]
fn bad_magic_and_empty_file() {
    let (f, r) = open_bytes(b"PK\x03\x04 this is a zip", "magic");
    let err = r.unwrap_err();
    assert!(matches!(err, GgufError::NotGguf { .. }), "{err}");
    assert!(
        err.to_string().contains(&f.path().display().to_string()),
        "{err}"
    );
    let (_f, r) = open_bytes(b"", "empty");
    assert!(matches!(r.unwrap_err(), GgufError::NotGguf { .. }));
}

#[test]
fn version_1_and_big_endian_rejected() {
    let mut w = Writer::new();
    w.version = 1;
    let err = open(&w, "v1").unwrap_err();
    assert!(
        matches!(err, GgufError::UnsupportedVersion { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("v1 is obsolete"), "{err}");
    w.version = 3u32.swap_bytes();
    let err = open(&w, "be").unwrap_err();
    assert!(err.to_string().contains("big-endian"), "{err}");
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let w = all_types()
        .str("general.architecture", "llama")
        .tensor_f32("t", &[8], &[1.0; 8]);
    let bytes = w.to_bytes();
    let data_start = bytes.len() - 32;
    for len in 0..bytes.len() {
        let (_f, r) = open_bytes(&bytes[..len], "trunc");
        let err = r.expect_err("a truncated file must not open");
        if len >= data_start {
            // The header is intact: the tensor is reported.
            assert!(
                matches!(&err, GgufError::TensorDataTruncated { tensor, .. } if tensor == "t"),
                "len {len}: {err}"
            );
        } else if len >= 4 {
            assert!(
                matches!(
                    err,
                    GgufError::Truncated { .. } | GgufError::TensorDataTruncated { .. }
                ),
                "len {len}: {err}"
            );
        }
    }
}

#[test]
fn truncated_metadata_names_the_key() {
    let bytes = Writer::new()
        .str("general.name", "a long enough name")
        .to_bytes();
    let (_f, r) = open_bytes(&bytes[..bytes.len() - 3], "meta");
    let err = r.unwrap_err();
    assert!(
        err.to_string().contains("metadata key `general.name`"),
        "{err}"
    );
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let bytes = Writer::new()
        .tensor_f32("blk.0.attn_q.weight", &[64], &[0.5; 64])
        .to_bytes();
    let (_f, r) = open_bytes(&bytes[..bytes.len() - 10], "tdata");
    let err = r.unwrap_err();
    assert!(
        matches!(&err, GgufError::TensorDataTruncated { tensor, .. } if tensor == "blk.0.attn_q.weight")
    );
    assert!(err.to_string().contains("blk.0.attn_q.weight"), "{err}");
}

#[test]
fn unsupported_tensor_types_name_tensor_and_type() {
    let g = open(
        &Writer::new()
            .tensor_raw("q5k", 13, &[256], vec![0; 176])
            .tensor_raw("iq2", 16, &[256], vec![0; 66])
            .tensor_raw("future", 99, &[4], vec![0; 4]),
        "unsup",
    )
    .unwrap();
    for (name, ty) in [
        ("q5k", "Q5_K (13)"),
        ("iq2", "IQ2_XXS (16)"),
        ("future", "unknown (99)"),
    ] {
        let err = g.tensor_f32(name).unwrap_err();
        assert!(
            matches!(&err, GgufError::UnsupportedTensorType { tensor, ggml_type, .. } if tensor == name && ggml_type == ty),
            "{err}"
        );
        assert!(
            err.to_string().contains(name) && err.to_string().contains(ty),
            "{err}"
        );
    }
    assert!(matches!(
        g.tensor_f32("nope"),
        Err(GgufError::MissingTensor { .. })
    ));
}

/// A header with counts and one key written by hand, to plant absurd lengths.
fn raw_header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

#[test]
fn absurd_lengths_do_not_allocate() {
    // String length 2^63 for a value.
    let mut b = raw_header(0, 1);
    put_str(&mut b, "general.name");
    b.extend(type_id::STRING.to_le_bytes());
    b.extend((1u64 << 63).to_le_bytes());
    b.extend(b"abc");
    let (_f, r) = open_bytes(&b, "strlen");
    let err = r.unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("general.name"), "{err}");

    // Array of u64::MAX strings.
    let mut b = raw_header(0, 1);
    put_str(&mut b, "tokenizer.ggml.tokens");
    b.extend(type_id::ARRAY.to_le_bytes());
    b.extend(type_id::STRING.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    let (_f, r) = open_bytes(&b, "arrlen");
    assert!(r.unwrap_err().to_string().contains("tokenizer.ggml.tokens"));

    // Counts of 2^60 metadata entries / tensors, key length u64::MAX.
    for (t, kv) in [(0, 1u64 << 60), (1u64 << 60, 0), (u64::MAX, u64::MAX)] {
        let (_f, r) = open_bytes(&raw_header(t, kv), "counts");
        assert!(matches!(r.unwrap_err(), GgufError::Truncated { .. }));
    }
    let mut b = raw_header(0, 1);
    b.extend(u64::MAX.to_le_bytes());
    let (_f, r) = open_bytes(&b, "keylen");
    assert!(matches!(r.unwrap_err(), GgufError::Truncated { .. }));
}

#[test]
fn corrupt_fields_are_reported() {
    // Unknown value type.
    let mut b = raw_header(0, 1);
    put_str(&mut b, "k");
    b.extend(77u32.to_le_bytes());
    let (_f, r) = open_bytes(&b, "vtype");
    assert!(r.unwrap_err().to_string().contains("unknown value type 77"));

    // Arrays nested 100 deep.
    let mut b = raw_header(0, 1);
    put_str(&mut b, "deep");
    b.extend(type_id::ARRAY.to_le_bytes());
    for _ in 0..100 {
        b.extend(type_id::ARRAY.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    let (_f, r) = open_bytes(&b, "deep");
    assert!(r.unwrap_err().to_string().contains("nested"));

    // Five dimensions, an overflowing shape, a non-power-of-two alignment, a duplicate tensor.
    let mut b = raw_header(1, 0);
    put_str(&mut b, "t");
    b.extend(5u32.to_le_bytes());
    b.extend([0; 64]);
    let (_f, r) = open_bytes(&b, "ndims");
    assert!(r.unwrap_err().to_string().contains("5 dimensions"));

    let mut b = raw_header(1, 0);
    put_str(&mut b, "t");
    b.extend(2u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend([0; 64]);
    let (_f, r) = open_bytes(&b, "shape");
    assert!(r.unwrap_err().to_string().contains("absurd shape"));

    let err = open(
        &Writer::new().kv("general.alignment", MetaValue::U32(24)),
        "align",
    )
    .unwrap_err();
    assert!(err.to_string().contains("general.alignment"), "{err}");

    let w = Writer::new()
        .tensor_f32("t", &[1], &[1.0])
        .tensor_f32("t", &[1], &[2.0]);
    assert!(
        open(&w, "dup")
            .unwrap_err()
            .to_string()
            .contains("appears twice")
    );

    // Q8_0 row of 33 elements is not a whole number of blocks.
    let err = open(
        &Writer::new().tensor_raw("q", 8, &[33], vec![0; 68]),
        "blocks",
    )
    .unwrap_err();
    assert!(err.to_string().contains("whole number of blocks"), "{err}");
}

#[test]
fn random_corruption_never_panics() {
    // Flip bytes of a small but complete model file at pseudo-random places and exercise every
    // entry point; each must return (Ok or Err), never panic.
    let base = Writer::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 64)
        .u32("llama.embedding_length", 4)
        .u32("llama.feed_forward_length", 8)
        .u32("llama.attention.head_count", 2)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .kv("tokenizer.ggml.tokens", str_array(&["a", "b", "ab"]))
        .kv("tokenizer.ggml.merges", str_array(&["a b"]))
        .tensor_f32("token_embd.weight", &[4, 3], &[0.5; 12])
        .tensor_raw("blk.0.attn_q.weight", 8, &[32, 4], vec![1; 4 * 34])
        .to_bytes();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = next() as u8;
        }
        let (_f, r) = open_bytes(&bytes, "fuzz");
        if let Ok(g) = r {
            for t in g.tensor_infos() {
                let _ = g.tensor_f32(&t.name);
            }
            let _ = hf_config(&g);
            for (hf, _) in hf_tensor_names(&g) {
                let _ = hf_tensor(&g, &hf);
            }
            let _ = load_tokenizer(&g);
            let _ = tokenizer_config(&g);
        }
    }
}

/// Values of the reference fixture written by benchmarks/reference/gguf_dequant_reference.py.
const REFERENCE: &str = include_str!("../../tests/fixtures/smollm2_gguf_reference.json");

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn synthetic_blocks_match_gguf_py() {
    // Pseudo-random blocks of each supported quant type, dequantized by gguf-py (numpy).
    let reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    let cases = reference["synthetic_blocks"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let ty = GgmlType(case["ggml_type"].as_u64().unwrap() as u32);
        let hex = case["bytes_hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want = floats(&case["values"]);
        let got = dequantize(ty, &bytes, want.len()).unwrap();
        assert_close(&got, &want, &format!("{ty}"));
    }
}

#[test]
fn smollm2_every_tensor_dequantizes_and_matches_reference() {
    let Some(path) = smollm2_gguf("smollm2_every_tensor_dequantizes_and_matches_reference") else {
        return;
    };
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(g.get_u32("llama.block_count").unwrap(), Some(30));
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens")
            .unwrap()
            .unwrap()
            .len(),
        49152
    );
    assert_eq!(g.tensor_infos().len(), 272);
    for t in g.tensor_infos() {
        let (shape, data) = g.tensor_f32(&t.name).unwrap();
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{}", t.name);
        assert!(data.iter().all(|x| x.is_finite()), "{}", t.name);
    }

    let reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    let tensors = reference["tensors"].as_object().unwrap();
    assert!(tensors.len() >= 3);
    for (name, want) in tensors {
        let (shape, data) = g.tensor_f32(name).unwrap();
        let want_shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{name}");
        assert_eq!(
            g.tensor_info(name).unwrap().ggml_type.name(),
            want["ggml_type"].as_str(),
            "{name}"
        );
        let first = floats(&want["first"]);
        assert_close(&data[..first.len()], &first, name);
        let last = floats(&want["last"]);
        assert_close(&data[data.len() - last.len()..], &last, name);
        let sum: f64 = data.iter().map(|&x| f64::from(x)).sum();
        let want_sum = want["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-6 * want["abs_sum"].as_f64().unwrap().max(1.0),
            "{name}: sum {sum} vs {want_sum}"
        );
    }

    // q_proj / k_proj as transformers loads them (its GGUF loader undoes llama.cpp's rotary
    // permutation): rows of one whole head plus a position-weighted checksum.
    let transformers = reference["transformers"].as_object().unwrap();
    assert_eq!(transformers.len(), 2, "q_proj and k_proj from transformers");
    for (hf, want) in transformers {
        let (shape, data) = hf_tensor(&g, hf).unwrap();
        let want_shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{hf}");
        let cols = shape[1];
        for (r, row) in want["rows_first8"].as_array().unwrap().iter().enumerate() {
            assert_close(
                &data[r * cols..r * cols + 8],
                &floats(row),
                &format!("{hf} row {r}"),
            );
        }
        let weighted: f64 = data
            .chunks(cols)
            .enumerate()
            .map(|(r, row)| r as f64 * row.iter().map(|&x| f64::from(x)).sum::<f64>())
            .sum();
        let want_weighted = want["row_weighted_sum"].as_f64().unwrap();
        assert!(
            (weighted - want_weighted).abs() <= 1e-6 * want_weighted.abs().max(1.0) + 1e-3,
            "{hf}: {weighted} vs {want_weighted}"
        );
    }
}
