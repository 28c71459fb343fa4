//! `cargo run --release -p kiln-rollout --example rollout_bench -- MODEL BATCH N PROMPT_LEN NEW [TEMP]`
use burn::prelude::*;
use kiln_rollout::Engine;
use kiln_rollout::bench::{BenchConfig, bench_rollout};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let model = kiln_model::Model::load(&arg(1, "smollm2"), &Device::flex()).unwrap();
    let engine = Engine::from_model(&model);
    let cfg = BenchConfig {
        batch: arg(2, "8").parse().unwrap(),
        n: arg(3, "1").parse().unwrap(),
        prompt_len: arg(4, "64").parse().unwrap(),
        new_tokens: arg(5, "128").parse().unwrap(),
        temperature: arg(6, "0").parse().unwrap(),
        seed: 0,
    };
    let r = bench_rollout(&engine, model.config.vocab_size, &cfg).unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
}
