//! Times flex attention for a decode-shaped call (profiling aid): `attn_profile BATCH SLOTS`.
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let (b, slots) = (a[0], a[1]);
    let dev = Device::flex();
    let dist = burn::tensor::Distribution::Default;
    let q = Tensor::<4>::random([b, 9, 1, 64], dist, &dev);
    let k = Tensor::<4>::random([b, 3, slots, 64], dist, &dev);
    let v = Tensor::<4>::random([b, 3, slots, 64], dist, &dev);
    let opts = |c| AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: c,
    };
    for causal in [true, false] {
        let t = Instant::now();
        for _ in 0..30 {
            let o = attention(q.clone(), k.clone(), v.clone(), None, None, opts(causal));
            let _ = o.into_data();
        }
        println!(
            "attention causal={causal}: {:.3} ms/call (x30 layers = {:.1} ms)",
            t.elapsed().as_secs_f64() * 1e3 / 30.0,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    for _ in 0..30 {
        let kk = Tensor::cat(vec![k.clone(), Tensor::<4>::zeros([b, 3, 1, 64], &dev)], 2);
        let vv = Tensor::cat(vec![v.clone(), Tensor::<4>::zeros([b, 3, 1, 64], &dev)], 2);
        let _ = (kk.into_data(), vv.into_data());
    }
    println!(
        "cache cat k+v x30 layers: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let x = Tensor::<3>::random([b, 1, 576], dist, &dev);
    let w = Tensor::<2>::random([576, 1536], dist, &dev);
    let t = Instant::now();
    for _ in 0..30 {
        let o = burn::tensor::module::linear(x.clone(), w.clone(), None);
        let _ = o.into_data();
    }
    println!(
        "linear 3d [b,1,576]x[576,1536] x30: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
