//! Peak memory of the chunked log-prob + TRE pass on SmolLM2 at 8 x 512 tokens, measured with
//! a counting global allocator (flex allocates through it). One full `[4096 x 49152]` f32
//! tensor is 805 MB. Reports the peak ABOVE what was allocated before the call (inputs: hidden
//! 9.4 MB, lm_head 113 MB); the outputs themselves (dW 113 MB, dh 9.4 MB) are included.
//!
//! Run: `cargo bench --release -p kiln-optim --bench chunked_memory`
//! (`KILN_BENCH_TOKENS` overrides 4096).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::prelude::*;
use common::{D, V, ppo_config, problem};
use kiln_optim::{
    ChunkOptions, EntropyReg, LossConfig, Selection, chunked_policy_loss, chunked_score,
};

struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let c = CUR.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(c, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CUR.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            let c = CUR.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(c, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let c = CUR.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(c, Ordering::Relaxed);
            } else {
                CUR.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MB: f64 = 1e6;

fn main() {
    let dev = Device::flex();
    let n: usize = std::env::var("KILN_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let full = (n * V * 4) as f64 / MB;
    println!("kiln-optim chunked pass memory: {n} tokens, d = {D}, V = {V}");
    println!("one full [tokens x vocab] f32 tensor = {full:.0} MB");
    let base = ppo_config();
    let p = problem(&dev, n, 0.12, &base);
    println!(
        "{:<10} {:>6} {:>14} {:>12} {:>8}",
        "reg", "chunk", "peak extra MB", "/ full", "time s"
    );
    let cases: Vec<(&str, EntropyReg, usize)> = vec![
        ("ppo", EntropyReg::None, 256),
        ("tre-k2", EntropyReg::tre_k(2), 256),
        ("tre-p0.99", EntropyReg::tre_p(0.99), 256),
        ("global", EntropyReg::Global { coef: 0.001 }, 256),
        ("tre-p0.99", EntropyReg::tre_p(0.99), 128),
        ("tre-p0.99", EntropyReg::tre_p(0.99), 512),
    ];
    for (name, reg, chunk) in cases {
        let cfg = LossConfig {
            entropy: reg,
            ..base.clone()
        };
        let opts = ChunkOptions {
            chunk_size: chunk,
            temperature: 1.0,
            selection: Selection::Auto,
        };
        let before = CUR.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let t = Instant::now();
        let g = chunked_policy_loss(&p.hidden, &p.weight, &p.batch, &cfg, &opts).unwrap();
        let _: f32 = g.grad_weight.clone().slice([0..1, 0..1]).into_scalar();
        let secs = t.elapsed().as_secs_f64();
        let extra = (PEAK.load(Ordering::Relaxed) - before) as f64 / MB;
        drop(g);
        println!(
            "{name:<10} {chunk:>6} {extra:>14.1} {:>12.3} {secs:>8.2}",
            extra / full
        );
    }
    let before = CUR.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let opts = ChunkOptions {
        chunk_size: 256,
        temperature: 1.0,
        selection: Selection::Auto,
    };
    let s = chunked_score(&p.hidden, &p.weight, &p.batch.targets, true, &opts).unwrap();
    let _: f32 = s.logp.slice_dim(0, 0..1).into_scalar();
    let extra = (PEAK.load(Ordering::Relaxed) - before) as f64 / MB;
    println!(
        "{:<10} {:>6} {extra:>14.1} {:>12.3}      (no-grad scoring + entropy)",
        "score",
        256,
        extra / full
    );
}
