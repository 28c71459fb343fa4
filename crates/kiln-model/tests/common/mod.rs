//! Shared helpers for the parity tests: where the fixtures are and how to read them.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use kiln_model::{CausalLm, ModelConfig, Rope, loader};
use safetensors::{Dtype, SafeTensors};

/// `../shared` beside the repository (CI lays it out there), or `$KILN_SHARED`.
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_SHARED") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

pub fn fixture(name: &str) -> PathBuf {
    let p = shared_dir().join("fixtures").join(name);
    assert!(
        p.is_dir(),
        "fixture {} not found: set KILN_SHARED",
        p.display()
    );
    p
}

/// The device the parity tests run on: `$KILN_TEST_DEVICE` (`wgpu` in CI's second pass, over
/// Mesa's software Vulkan driver; needs `--features wgpu`), else flex.
pub fn device() -> Device {
    match std::env::var("KILN_TEST_DEVICE") {
        Ok(d) => {
            kiln_model::parse_device(&d).unwrap_or_else(|e| panic!("KILN_TEST_DEVICE={d}: {e}"))
        }
        Err(_) => Device::flex(),
    }
}

/// A tiny fixture model (no tokenizer in those folders): config, network, RoPE tables.
pub fn tiny_model(name: &str) -> (ModelConfig, CausalLm, Rope) {
    loader::load_network(&fixture(name), &device()).unwrap()
}

/// A tensor of `expected.safetensors` as (shape, f64 values), whatever its dtype.
pub fn expected(name: &str, tensor: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(tensor).unwrap();
    let d = t.data();
    let values = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), values)
}

pub fn rows_u32(shape: &[usize], values: &[f64]) -> Vec<Vec<u32>> {
    values
        .chunks(shape[1])
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect()
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

pub const TINY_MODELS: [&str; 4] = ["tiny-llama", "tiny-llama3-rope", "tiny-qwen2", "tiny-qwen3"];
