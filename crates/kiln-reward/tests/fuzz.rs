//! Every parser that reads model output, fuzzed: no panic, no hang, bounded work; and hostile
//! inputs (a million nested braces, 2^(10^9), a 10 MB string) return within the time budget.

use std::time::{Duration, Instant};

use kiln_reward::countdown::{evaluate_equation, extract_answer, validate_numbers};
use kiln_reward::math::{extract::last_boxed, is_equiv, normalize::normalize, parse::parse_answer};
use kiln_reward::{
    BatchOptions, CountdownVerifier, FormatReward, Gsm8kVerifier, InstructionVerifier,
    MathVerifier, Reference, Verifier, score_batch_with,
};
use proptest::prelude::*;

/// Generous wall-clock bound for one call on a loaded 2-core machine (the verifiers' own budget
/// is 50 ms; typical calls take microseconds).
const SLOW: Duration = Duration::from_millis(500);

fn timed<R>(f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    assert!(t.elapsed() < SLOW, "took {:?}", t.elapsed());
    r
}

/// Strings over the characters the parsers care about, so that the fuzzing reaches deep states.
fn latexish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("\\boxed{".to_string()),
            Just("\\frac".to_string()),
            Just("\\sqrt".to_string()),
            Just("\\pi".to_string()),
            Just("\\pm".to_string()),
            Just("\\cup".to_string()),
            Just("\\text{".to_string()),
            Just("\\left(".to_string()),
            Just("\\right)".to_string()),
            Just("\\begin{pmatrix}".to_string()),
            Just("\\end{pmatrix}".to_string()),
            Just("\\\\".to_string()),
            Just("\\{".to_string()),
            Just("\\}".to_string()),
            Just("^{".to_string()),
            Just("_".to_string()),
            Just("\\infty".to_string()),
            Just("\\%".to_string()),
            Just("<answer>".to_string()),
            Just("</answer>".to_string()),
            Just("####".to_string()),
            "[0-9]{1,4}".prop_map(|s| s),
            "[-+*/^(){}\\[\\],.=!&| xyi\n]".prop_map(|s| s),
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

fn all_parsers(s: &str) {
    timed(|| {
        let _ = last_boxed(s);
        let _ = normalize(s);
        let _ = parse_answer(s);
        let _ = is_equiv(s, "\\frac{1}{2}");
        let _ = is_equiv("x^2+1", s);
        let _ = is_equiv(s, s);
        let _ = extract_answer(s);
        let _ = validate_numbers(s, &[1, 2, 3]);
        let _ = evaluate_equation(s);
        let _ = Gsm8kVerifier::extract(s);
        let _ = FormatReward::default().check(s);
        let r = MathVerifier::default().score(s, &Reference::text("3"));
        assert!(r.score == 0.0 || r.score == 1.0);
        let r = CountdownVerifier::default().score(
            s,
            &Reference::Countdown {
                target: 6,
                nums: vec![1, 2, 3],
            },
        );
        assert!([0.0, 0.1, 1.0].contains(&r.score));
        let _ = Gsm8kVerifier::default().score(s, &Reference::text("#### 3"));
        // Model output against fixed rules, and arbitrary text as the rules themselves.
        let r = InstructionVerifier::default().score(
            s,
            &Reference::Instructions(vec!["words 3".into(), "case upper".into()]),
        );
        assert!(r.score == 0.0 || r.score == 1.0);
        let r = InstructionVerifier::default()
            .score("FOX FOX", &Reference::Instructions(vec![s.to_string()]));
        assert!(r.score == 0.0 || r.score == 1.0);
    });
}

proptest! {
    // 2,000 cases per property by default; KILN_FUZZ_CASES=100000 (as for every fuzz target of
    // the workspace) or PROPTEST_CASES=100000 for a long run.
    #![proptest_config(ProptestConfig {
        cases: ["KILN_FUZZ_CASES", "PROPTEST_CASES"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        // Fixed, so CI explores the same inputs every run; KILN_FUZZ_SEED=<u64> explores others.
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("KILN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b69_6c6e),
        ),
        .. ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_strings(s in any::<String>()) {
        all_parsers(&s);
    }

    #[test]
    fn latex_like_strings(s in latexish()) {
        all_parsers(&s);
        all_parsers(&format!("\\boxed{{{s}}}"));
        all_parsers(&format!("<answer>{s}</answer>"));
    }

    #[test]
    fn countdown_like_strings(s in "[0-9+\\-*/(). \t]{0,40}") {
        timed(|| {
            let _ = evaluate_equation(&s);
            let _ = CountdownVerifier::default()
                .score(&format!("<answer>{s}</answer>"), &Reference::Countdown { target: 24, nums: vec![1, 2, 3, 4] });
        });
    }
}

fn batch_one(
    v: &dyn Verifier,
    resp: String,
    reference: Reference,
) -> (kiln_reward::Verdict, Duration) {
    let t = Instant::now();
    let out = score_batch_with(
        v,
        &[(resp, reference)],
        &BatchOptions {
            budget: Duration::from_millis(100),
        },
    );
    (out.into_iter().next().unwrap(), t.elapsed())
}

#[test]
fn hostile_inputs_return_in_budget() {
    let math = MathVerifier::default();
    let cd = CountdownVerifier::default();
    let gsm = Gsm8kVerifier::default();
    let n = 1_000_000;
    let nested = format!("\\boxed{{{}1{}}}", "{".repeat(n), "}".repeat(n));
    let unclosed = format!("\\boxed{{{}", "{".repeat(n));
    let ten_mb = "x".repeat(10 << 20) + "\\boxed{2}";
    let ten_mb_boxes = "\\boxed{1} ".repeat(1 << 20);
    // (name, verifier, response, reference, expected score when it is determined)
    type Hostile<'a> = (&'a str, &'a dyn Verifier, String, Reference, Option<f64>);
    let cases: Vec<Hostile> = vec![
        (
            "a million nested braces",
            &math,
            nested,
            Reference::text("1"),
            None,
        ),
        (
            "a million unclosed braces",
            &math,
            unclosed,
            Reference::text("1"),
            Some(0.0),
        ),
        (
            "2^(10^9)",
            &math,
            "\\boxed{2^{10^{9}}}".into(),
            Reference::text("2"),
            Some(0.0),
        ),
        (
            "2^(10^9) both sides",
            &math,
            "\\boxed{2^{(10^9)}}".into(),
            Reference::text("2^{10^9}"),
            Some(1.0),
        ),
        (
            "10^10^10 vs 10",
            &math,
            "\\boxed{10^{10^{10}}}".into(),
            Reference::text("10"),
            Some(0.0),
        ),
        (
            "huge factorial",
            &math,
            "\\boxed{100000!}".into(),
            Reference::text("3"),
            Some(0.0),
        ),
        (
            "a 10 MB string",
            &math,
            ten_mb.clone(),
            Reference::text("2"),
            Some(1.0),
        ),
        (
            "a million boxes",
            &math,
            ten_mb_boxes,
            Reference::text("1"),
            Some(1.0),
        ),
        (
            "long division chain",
            &math,
            format!("\\boxed{{{}1}}", "1/".repeat(1500)),
            Reference::text("1"),
            None,
        ),
        (
            "long power chain",
            &math,
            format!("\\boxed{{{}2}}", "2^".repeat(1500)),
            Reference::text("1"),
            None,
        ),
        (
            "deep parens",
            &math,
            format!("\\boxed{{{}1{}}}", "(".repeat(5000), ")".repeat(5000)),
            Reference::text("1"),
            None,
        ),
        (
            "countdown 10 MB",
            &cd,
            ten_mb,
            Reference::Countdown {
                target: 6,
                nums: vec![1, 2, 3],
            },
            Some(0.0),
        ),
        (
            "countdown nested parens",
            &cd,
            format!(
                "<answer>{}1+2+3{}</answer>",
                "(".repeat(100_000),
                ")".repeat(100_000)
            ),
            Reference::Countdown {
                target: 6,
                nums: vec![1, 2, 3],
            },
            Some(0.1),
        ),
        (
            "countdown 9**9**9",
            &cd,
            "<answer>9**9**9</answer>".into(),
            Reference::Countdown {
                target: 6,
                nums: vec![9, 9, 9],
            },
            Some(0.1),
        ),
        (
            "countdown 2**(2**30)",
            &cd,
            "<answer>2**2**30</answer>".into(),
            Reference::Countdown {
                target: 6,
                nums: vec![2, 2, 30],
            },
            Some(0.1),
        ),
        (
            "countdown a 1M-digit number",
            &cd,
            format!("<answer>{}</answer>", "9".repeat(1_000_000)),
            Reference::Countdown {
                target: 6,
                nums: vec![1],
            },
            Some(0.1),
        ),
        (
            "gsm8k 10 MB of digits",
            &gsm,
            "1,".repeat(5 << 20),
            Reference::text("#### 1"),
            None,
        ),
    ];
    for (name, v, resp, reference, want) in cases {
        let (verdict, took) = batch_one(v, resp, reference);
        eprintln!(
            "{name}: score {} in {:?} ({:?})",
            verdict.score, took, verdict.error
        );
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
        if let Some(w) = want {
            assert_eq!(verdict.score, w, "{name}: {:?}", verdict.error);
        }
    }
}
