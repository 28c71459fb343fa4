//! Shared helpers of the integration tests: fixture loading and tolerant comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

pub struct Fixtures {
    pub f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub i64s: HashMap<String, (Vec<usize>, Vec<i64>)>,
    pub meta: serde_json::Value,
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn load() -> Fixtures {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("optim_golden.safetensors"))
        .expect("fixtures: run benchmarks/reference/optim_reference.py");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut f32s = HashMap::new();
    let mut i64s = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        match view.dtype() {
            safetensors::Dtype::F32 => {
                let v = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                f32s.insert(name.to_string(), (shape, v));
            }
            safetensors::Dtype::I64 => {
                let v = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                i64s.insert(name.to_string(), (shape, v));
            }
            d => panic!("unexpected dtype {d:?} for {name}"),
        }
    }
    let meta = serde_json::from_str(
        &std::fs::read_to_string(dir.join("optim_golden.json")).expect("json fixture"),
    )
    .expect("json");
    Fixtures { f32s, i64s, meta }
}

impl Fixtures {
    pub fn f(&self, name: &str) -> &[f32] {
        &self
            .f32s
            .get(name)
            .unwrap_or_else(|| panic!("missing fixture {name}"))
            .1
    }
    pub fn shape(&self, name: &str) -> &[usize] {
        &self
            .f32s
            .get(name)
            .unwrap_or_else(|| panic!("missing fixture {name}"))
            .0
    }
    pub fn i(&self, name: &str) -> &[i64] {
        &self
            .i64s
            .get(name)
            .unwrap_or_else(|| panic!("missing fixture {name}"))
            .1
    }
}

/// Element-wise: `|got - want| <= rtol * (|want| + 0.01 * max|want|)` (relative, with a floor
/// at 1% of the tensor's scale for entries that are ~0).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want
        .iter()
        .fold(0.0f64, |a, &w| a.max((w as f64).abs()))
        .max(1e-30);
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let tol = rtol * ((w as f64).abs() + 0.01 * scale);
        assert!(
            err <= tol,
            "{what}[{i}]: got {g}, want {w} (err {err:.3e} > tol {tol:.3e})"
        );
        if err / scale > worst.0 {
            worst = (err / scale, i);
        }
    }
}

pub fn assert_scalar(what: &str, got: f64, want: f64, rtol: f64) {
    let err = (got - want).abs();
    assert!(
        err <= rtol * want.abs().max(1e-12),
        "{what}: got {got}, want {want} (rel err {:.3e})",
        err / want.abs().max(1e-12)
    );
}

/// Scale-relative: `max |got - want| <= rtol * max |want|` (for matmul outputs compared between
/// two float32 implementations, where entries near zero carry cancellation noise).
pub fn assert_close_scale(what: &str, got: &[f32], want: &[f32], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |a, &w| a.max((w as f64).abs()));
    assert!(scale > 0.0, "{what}: reference is all zero");
    let (err, i) = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| ((g as f64 - w as f64).abs(), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    assert!(
        err <= rtol * scale,
        "{what}[{i}]: got {}, want {} (err {err:.3e} > {rtol:e} x scale {scale:.3e})",
        got[i],
        want[i]
    );
}
