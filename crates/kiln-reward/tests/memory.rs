//! Bounded memory on hostile inputs: the peak heap growth while scoring stays within a small
//! multiple of the input size (a counting global allocator; one test, so nothing else runs in
//! this binary meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use kiln_reward::countdown::evaluate_equation;
use kiln_reward::math::is_equiv;
use kiln_reward::{CountdownVerifier, Gsm8kVerifier, MathVerifier, Reference, Verifier};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap growth (bytes) while running `f`.
fn peak_growth(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    PEAK.load(Relaxed) - base
}

#[test]
fn hostile_inputs_use_bounded_memory() {
    const MIB: usize = 1 << 20;
    let n = 1_000_000;
    let math = MathVerifier::default();
    let cd = CountdownVerifier::default();
    type Case<'a> = (&'a str, String, Box<dyn Fn(&str) + 'a>);
    let cases: Vec<Case> = vec![
        (
            "math: a million nested braces",
            format!("\\boxed{{{}1{}}}", "{".repeat(n), "}".repeat(n)),
            Box::new(|s: &str| drop(math.score(s, &Reference::text("1")))),
        ),
        (
            "math: 10 MB then a box",
            "x".repeat(10 * MIB) + "\\boxed{2^{10^{9}}}",
            Box::new(|s: &str| drop(math.score(s, &Reference::text("2")))),
        ),
        (
            "math: a long answer",
            format!("\\boxed{{{}}}", "x^2+".repeat(400_000)),
            Box::new(|s: &str| drop(math.score(s, &Reference::text("x")))),
        ),
        (
            "math: is_equiv on 2,000 chars of tokens",
            "(1+".repeat(600) + &")".repeat(600),
            Box::new(|s: &str| {
                let _ = is_equiv(s, s.trim_end_matches(')'));
            }),
        ),
        (
            "countdown: 10 MB last line",
            format!("<answer>{}</answer>", "1+".repeat(5 * MIB)),
            Box::new(|s: &str| {
                drop(cd.score(
                    s,
                    &Reference::Countdown {
                        target: 6,
                        nums: vec![1, 2, 3],
                    },
                ))
            }),
        ),
        (
            "countdown: 64 KiB of signs",
            "-".repeat(65_000) + "1",
            Box::new(|s: &str| drop(evaluate_equation(s))),
        ),
        (
            "gsm8k: 10 MB of digits",
            "1,".repeat(5 * MIB),
            Box::new(|s: &str| drop(Gsm8kVerifier::default().score(s, &Reference::text("#### 1")))),
        ),
    ];
    for (name, input, f) in cases {
        let grown = peak_growth(|| f(&input));
        eprintln!(
            "{name}: input {} KiB, peak heap growth {} KiB",
            input.len() >> 10,
            grown >> 10
        );
        assert!(grown <= input.len() + 4 * MIB, "{name}: grew {grown} bytes");
    }
}
