//! Verifications per second per core, MATH and Countdown, on realistic responses.
//!
//! `cargo bench -p kiln-reward` (data from `$KILN_DATA`, default `../shared/data` beside the
//! workspace; synthetic responses when it is missing).
//!
//! - MATH: the 7,500 MATH train solutions as responses (each ends in its `\boxed{}` answer, with
//!   the worked solution before it), scored against their own answer (right) and against the
//!   next problem's answer (mostly wrong).
//! - Countdown: for the 1,024 test problems, a TinyZero-style response (reasoning in `<think>`,
//!   then `<answer>` on the last line) with a random equation over the given numbers.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_reward::{CountdownVerifier, MathVerifier, Reference, Verifier, score_batch};

fn data_dir() -> PathBuf {
    std::env::var_os("KILN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn read_jsonl(path: PathBuf) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(&path) {
        Ok(t) => t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        Err(_) => {
            eprintln!("note: {} not found, using synthetic data", path.display());
            Vec::new()
        }
    }
}

fn math_items() -> Vec<(String, Reference)> {
    let rows = read_jsonl(data_dir().join("math/train.jsonl"));
    let mut items = Vec::new();
    if rows.is_empty() {
        for k in 0..2000 {
            let resp = format!(
                "We compute step by step, $x = {k}$ so the answer is $\\boxed{{\\frac{{{k}}}{{7}}}}$."
            );
            items.push((
                resp,
                Reference::text(format!("\\frac{{{}}}{{7}}", k + (k % 2))),
            ));
        }
        return items;
    }
    for (i, r) in rows.iter().enumerate() {
        let sol = r["solution"].as_str().unwrap_or("").to_string();
        let ans = r["answer"].as_str().unwrap_or("").to_string();
        let other = rows[(i + 1) % rows.len()]["answer"]
            .as_str()
            .unwrap_or("")
            .to_string();
        items.push((sol.clone(), Reference::text(ans)));
        items.push((sol, Reference::text(other)));
    }
    items
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn countdown_items() -> Vec<(String, Reference)> {
    let mut rows = read_jsonl(data_dir().join("countdown/test.jsonl"));
    if rows.is_empty() {
        rows = (0..1024)
            .map(|k| serde_json::json!({"target": 10 + k % 90, "nums": [k % 97 + 1, 7, 13, 2]}))
            .collect();
    }
    let mut rng = Lcg(7);
    let mut items = Vec::new();
    for r in &rows {
        let target = r["target"].as_i64().unwrap_or(0);
        let nums: Vec<i64> = r["nums"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
            .unwrap_or_default();
        let ops = ["+", "-", "*", "/"];
        let mut eq = nums[0].to_string();
        for n in &nums[1..] {
            let op = ops[(rng.next() % 4) as usize];
            eq = if rng.next().is_multiple_of(2) {
                format!("({eq}) {op} {n}")
            } else {
                format!("{eq} {op} {n}")
            };
        }
        let think = format!(
            " We need to reach {target} with {nums:?}. Let's try combining them: {} and {} first, \
             then adjust with the rest. After a few attempts, this works.",
            nums[0], nums[1]
        );
        let resp = format!("{think} </think>\n<answer> {eq} </answer>");
        items.push((resp, Reference::Countdown { target, nums }));
    }
    items
}

fn per_core(name: &str, v: &dyn Verifier, items: &[(String, Reference)]) {
    // Warm up, then time whole passes for at least 2 s on one thread.
    for (r, g) in items.iter().take(200) {
        black_box(v.score(r, g));
    }
    let start = Instant::now();
    let mut n = 0usize;
    let mut correct = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        for (r, g) in items {
            let verdict = v.score(r, g);
            correct += verdict.correct as usize;
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes: usize = items.iter().map(|(r, _)| r.len()).sum();
    println!(
        "{name:10} {:>10.0} verifications/s per core ({} items, mean response {} bytes, {:.1}% correct, {:.2} us each)",
        n as f64 / secs,
        items.len(),
        bytes / items.len().max(1),
        100.0 * correct as f64 / n as f64,
        1e6 * secs / n as f64
    );
    // The batch path (rayon, all cores, panic isolation and budget), after a warm-up pass.
    black_box(score_batch(v, items));
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        black_box(score_batch(v, items));
        n += items.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:10} {:>10.0} verifications/s with score_batch on {} threads (machine shared; indicative)",
        n as f64 / secs,
        rayon::current_num_threads()
    );
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less args: keep it quick then.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let math = math_items();
    per_core("math", &MathVerifier::default(), &math);
    let cd = countdown_items();
    per_core("countdown", &CountdownVerifier::default(), &cd);
}
