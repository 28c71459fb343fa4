//! Fixture helpers (the tiny models of ../shared/fixtures, as in kiln-model's tests).
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use kiln_model::{CausalLm, ModelConfig, Rope, TokenBatch, loader};
use safetensors::{Dtype, SafeTensors};

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

pub fn tiny_model(name: &str) -> (ModelConfig, CausalLm, Rope) {
    loader::load_network(&fixture(name), &Device::flex()).unwrap()
}

pub fn expected_ids(name: &str, tensor: &str) -> Vec<u32> {
    let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(tensor).unwrap();
    assert_eq!(t.dtype(), Dtype::I64);
    t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

/// Training-path log-probs `[seq, vocab]` (f64) of one sequence: full forward, log-softmax.
pub fn full_logprobs(net: &CausalLm, rope: &Rope, seq: &[u32]) -> (Vec<f64>, usize) {
    let logits = net.forward(rope, &TokenBatch::new(&[seq.to_vec()]).unwrap());
    let [_, s, v] = logits.dims();
    let lp = log_softmax(logits.reshape([s, v]), 1);
    let vals: Vec<f32> = lp
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    (vals.into_iter().map(|x| x as f64).collect(), v)
}

/// Raw logits (f64) at the last position of `seq`.
pub fn last_logits(net: &CausalLm, rope: &Rope, seq: &[u32]) -> Vec<f64> {
    let logits = net.forward(rope, &TokenBatch::new(&[seq.to_vec()]).unwrap());
    let [_, s, v] = logits.dims();
    let row = logits.narrow(1, s - 1, 1).reshape([v]);
    let vals: Vec<f32> = row
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    vals.into_iter().map(|x| x as f64).collect()
}

pub const TINY_MODELS: [&str; 4] = ["tiny-llama", "tiny-llama3-rope", "tiny-qwen2", "tiny-qwen3"];
