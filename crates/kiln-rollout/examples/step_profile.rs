//! Times the pieces of a decode step on SmolLM2 (profiling aid).
use std::time::Instant;

use burn::prelude::*;
use kiln_model::TokenBatch;

fn time<F: FnMut()>(label: &str, iters: usize, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let s = t.elapsed().as_secs_f64() / iters as f64;
    println!("{label}: {:.2} ms", s * 1e3);
    s
}

fn main() {
    let b: usize = std::env::args()
        .nth(1)
        .map(|x| x.parse().unwrap())
        .unwrap_or(32);
    let dev = Device::flex();
    let model = kiln_model::Model::load("smollm2", &dev).unwrap();
    let net = model.net.clone().valid();
    let w = net.embed_tokens.weight.val(); // [V, d]
    let [v, d] = w.dims();
    let x = Tensor::<2>::random([b, d], burn::tensor::Distribution::Default, &dev);
    let read = |t: Tensor<2>| {
        let _ = t.into_data();
    };
    time("head x @ W^T (view)", 5, || {
        read(x.clone().matmul(w.clone().transpose()))
    });
    let wt: Tensor<2> = Tensor::from_data(w.clone().transpose().into_data(), &dev);
    time("head x @ Wt (contiguous)", 5, || {
        read(x.clone().matmul(wt.clone()))
    });
    let flops = 2.0 * (b * d * v) as f64;
    let s = time("head again (contiguous)", 5, || {
        read(x.clone().matmul(wt.clone()))
    });
    println!("  {:.1} GFLOP/s", flops / s / 1e9);
    let up = Tensor::<2>::random([d, 1536], burn::tensor::Distribution::Default, &dev);
    let s = time("x @ [576,1536]", 20, || read(x.clone().matmul(up.clone())));
    println!("  {:.1} GFLOP/s", 2.0 * (b * d * 1536) as f64 / s / 1e9);
    let sq = Tensor::<2>::random([d, d], burn::tensor::Distribution::Default, &dev);
    let s = time("x @ [576,576]", 20, || read(x.clone().matmul(sq.clone())));
    println!("  {:.1} GFLOP/s", 2.0 * (b * d * d) as f64 / s / 1e9);
    // A decode step with 100 cached slots.
    let prompts: Vec<Vec<u32>> = (0..b)
        .map(|r| (0..100).map(|t| ((r * 31 + t * 7) % 1000) as u32).collect())
        .collect();
    let mut cache = net.new_cache(b);
    let _ = net.forward_cached(&model.rope, &TokenBatch::new(&prompts).unwrap(), &mut cache);
    let step = TokenBatch::new(&vec![vec![5u32]; b]).unwrap();
    let s = time("decode step (cache grows)", 5, || {
        let mut c = cache.clone();
        let l = net.forward_cached(&model.rope, &step, &mut c);
        let _ = l.into_data();
    });
    println!("  {:.1} tokens/s", b as f64 / s);
    let mut trunk = net.clone();
    trunk.lm_head = Some(
        burn::nn::LinearConfig::new(d, 1)
            .with_bias(false)
            .init(&dev),
    );
    time("decode step trunk only", 5, || {
        let mut c = cache.clone();
        let l = trunk.forward_cached(&model.rope, &step, &mut c);
        let _ = l.into_data();
    });
    let mut head = net.clone();
    let mut lin = burn::nn::LinearConfig::new(d, v)
        .with_bias(false)
        .init(&dev);
    lin.weight = burn::module::Param::from_tensor(wt.clone());
    head.lm_head = Some(lin);
    time("decode step, contiguous head", 5, || {
        let mut c = cache.clone();
        let l = head.forward_cached(&model.rope, &step, &mut c);
        let _ = l.into_data();
    });
    time("select_rows (all)", 5, || {
        let idx: Vec<usize> = (0..b).collect();
        let c = cache.select_rows(&idx);
        drop(c);
    });
}
