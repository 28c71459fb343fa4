//! Countdown: kiln's verifier against TinyZero's `compute_score` (format_score 0.1, score 1.0),
//! case by case. Each expectation says which TinyZero rule gives it:
//!
//! - EXTRACT: the last line (`split('\n')[-1]`), its last `<answer>(.*?)</answer>`, `.strip()`
//!   (Python whitespace, which includes NBSP and U+001C..U+001F); no match: 0.
//! - NUMS: `sorted(int(n) for n in re.findall(r'\d+', eq)) == sorted(numbers)` (`\d` is any
//!   Unicode digit, `int()` reads it); else 0.1.
//! - CHARS: `^[\d+\-*/().\s]+$`; else 0.1.
//! - EVAL: Python's `eval`; an exception (SyntaxError, ZeroDivisionError, TypeError, ...): 0.1.
//! - CLOSE: `abs(result - target) < 1e-5`: 1.0, else 0.1.
//!
//! The responses are what follows TinyZero's prompt; TinyZero scores prompt + response, and its
//! base prompt ends "Assistant: Let me solve this step by step.\n<think>", so the split on
//! "Assistant:" happens inside the prompt. Every expectation with `py: true` was also checked by
//! running TinyZero's countdown.py (commit f36b1b8) on BASE_PROMPT + response under CPython 3.11
//! (set KILN_COUNTDOWN_TABLE_OUT=path to dump the table for that check).

use kiln_reward::{CountdownVerifier, Reference, Verifier};

struct Case {
    resp: &'static str,
    target: i64,
    nums: &'static [i64],
    want: f64,
    why: &'static str,
    /// Checked against TinyZero's Python (false only where Python would not return).
    py: bool,
}

const fn c(
    resp: &'static str,
    target: i64,
    nums: &'static [i64],
    want: f64,
    why: &'static str,
) -> Case {
    Case {
        resp,
        target,
        nums,
        want,
        why,
        py: true,
    }
}

const N: &[i64] = &[79, 17, 60]; // test.jsonl row 1: target 36
const N4: &[i64] = &[46, 23, 90, 46]; // test.jsonl row 11: target 66, a repeated number

const CASES: &[Case] = &[
    // --- right ---
    c(
        "<answer>79 - 60 + 17</answer>",
        36,
        N,
        1.0,
        "EXTRACT+NUMS+CHARS+EVAL: 36 == 36",
    ),
    c(
        "79 - 60 = 19, 19 + 17 = 36 </think>\n<answer>(79 - 60) + 17</answer>",
        36,
        N,
        1.0,
        "last line holds the answer; 36",
    ),
    c(
        " First 79-60.</think>\n<answer> 17 + 79 - 60 </answer>",
        36,
        N,
        1.0,
        "strip() removes the spaces",
    ),
    c(
        "<answer>\t17+79-60\t</answer>",
        36,
        N,
        1.0,
        "strip() removes tabs",
    ),
    c("<answer>79-60+17</answer>", 36, N, 1.0, "no spaces needed"),
    c(
        "<answer>((79-60))+17</answer>",
        36,
        N,
        1.0,
        "redundant parentheses are fine in Python",
    ),
    c(
        "<answer>-60 + 79 + 17</answer>",
        36,
        N,
        1.0,
        "unary minus: -60+79+17 = 36",
    ),
    c(
        "<answer>79 - -17 - 60</answer>",
        36,
        N,
        1.0,
        "'- -17' is minus negative 17 in Python: 36",
    ),
    c("<answer>+79-60+17</answer>", 36, N, 1.0, "unary plus"),
    c(
        "<answer>10/2*3</answer>",
        15,
        &[10, 2, 3],
        1.0,
        "true division: 15.0, |15.0-15| < 1e-5",
    ),
    c(
        "<answer>21*(1/3)</answer>",
        7,
        &[1, 3, 21],
        1.0,
        "float 7.0 (within 1e-5)",
    ),
    c(
        "<answer>7//2*1</answer>",
        3,
        &[7, 2, 1],
        1.0,
        "'//' passes CHARS and is floor division: 3",
    ),
    c(
        "<answer>2**3</answer>",
        8,
        &[2, 3],
        1.0,
        "'**' passes CHARS (two '*') and is power: 8",
    ),
    c(
        "<answer>1.5*2</answer>",
        3,
        &[1, 5, 2],
        1.0,
        "NUMS reads '1.5' as 1 and 5; eval gives 3.0",
    ),
    c(
        "<answer>007.5*2</answer>",
        15,
        &[7, 5, 2],
        1.0,
        "int('007') = 7; '007.5' is a valid float literal",
    ),
    c(
        "<answer>90 - 23 - 46/46</answer>",
        66,
        N4,
        1.0,
        "a repeated number used as often as given: 66.0",
    ),
    c(
        "<answer>1 + 2</answer> <answer>79 - 60 + 17</answer>",
        36,
        N,
        1.0,
        "the LAST match on the line counts",
    ),
    c(
        "<answer>79-60+17</answer></answer>",
        36,
        N,
        1.0,
        "non-greedy: the first </answer> closes",
    ),
    c(
        "<answer>79-60+17</answer>\r",
        36,
        N,
        1.0,
        "split('\\n') keeps '\\r' on the last line; the tag still matches",
    ),
    c(
        "<answer>\u{a0}79 - 60 + 17\u{a0}</answer>",
        36,
        N,
        1.0,
        "strip() removes NBSP at the ends",
    ),
    c(
        "<answer>79-60+17\u{1c}</answer>",
        36,
        N,
        1.0,
        "Python's strip() removes U+001C (Rust's trim would not)",
    ),
    c(
        "<answer>79\u{c}- 60 + 17</answer>",
        36,
        N,
        1.0,
        "form feed is whitespace in Python source",
    ),
    c(
        "<answer>(79 -\r 60) + 17</answer>",
        36,
        N,
        1.0,
        "'\\r' is a newline, allowed inside parentheses",
    ),
    c(
        "Assistant: <answer>79-60+17</answer>",
        36,
        N,
        1.0,
        "'Assistant:' in the response: the split is in the prompt",
    ),
    c(
        "<answer>2*(3+4)</answer>",
        14,
        &[2, 3, 4],
        1.0,
        "explicit product: 14",
    ),
    c("<answer>3/3*1</answer>", 1, &[3, 1, 3], 1.0, "1.0 == 1"),
    // --- wrong value: format score ---
    c(
        "<answer>79 + 60 - 17</answer>",
        36,
        N,
        0.1,
        "CLOSE fails: 122",
    ),
    c(
        "<answer>22/3</answer>",
        7,
        &[22, 3],
        0.1,
        "CLOSE fails: 7.333.. is not within 1e-5",
    ),
    c(
        "<answer>(79 - 17) / 60</answer>",
        36,
        N,
        0.1,
        "CLOSE fails: 1.033",
    ),
    c(
        "<answer>-(79 - 60 + 17)</answer>",
        36,
        N,
        0.1,
        "CLOSE fails: -36",
    ),
    // --- reused, missing, extra numbers: format score ---
    c(
        "<answer>79 - 60 + 17 + 17 - 17</answer>",
        36,
        N,
        0.1,
        "NUMS: 17 used three times",
    ),
    c("<answer>79 - 60</answer>", 36, N, 0.1, "NUMS: 17 missing"),
    c(
        "<answer>79 - 60 + 17 + 1 - 1</answer>",
        36,
        N,
        0.1,
        "NUMS: extra 1s",
    ),
    c(
        "<answer>80 - 61 + 17</answer>",
        36,
        N,
        0.1,
        "NUMS: numbers not given",
    ),
    c(
        "<answer>90 - 23 - 46 + 45</answer>",
        66,
        N4,
        0.1,
        "NUMS: 46 given twice, used once (and 45 not given)",
    ),
    c(
        "<answer>79.0 - 60 + 17</answer>",
        36,
        N,
        0.1,
        "NUMS: '79.0' adds a 0",
    ),
    c(
        "<answer>079 - 060 + 017</answer>",
        36,
        N,
        0.1,
        "NUMS passes (int('079') = 79) but EVAL: leading zeros are a SyntaxError",
    ),
    c(
        "<answer>07 + 5</answer>",
        12,
        &[7, 5],
        0.1,
        "EVAL: '07' is a SyntaxError in Python 3",
    ),
    // --- no tags: 0 ---
    c(
        "The answer is 79 - 60 + 17",
        36,
        N,
        0.0,
        "EXTRACT: no <answer> tag",
    ),
    c("<answer>79 - 60 + 17", 36, N, 0.0, "EXTRACT: never closed"),
    c(
        "<Answer>79 - 60 + 17</Answer>",
        36,
        N,
        0.0,
        "EXTRACT: the regex is case-sensitive",
    ),
    c(
        "< answer>79 - 60 + 17</answer>",
        36,
        N,
        0.0,
        "EXTRACT: '< answer>' is not the tag",
    ),
    c("", 36, N, 0.0, "EXTRACT: empty response"),
    // --- empty equation: format score ---
    c(
        "<answer></answer>",
        36,
        N,
        0.1,
        "EXTRACT gives '' (not None), NUMS: [] != numbers",
    ),
    c(
        "<answer>   </answer>",
        36,
        N,
        0.1,
        "stripped to '', NUMS fails",
    ),
    // --- tags not on the last line: 0 ---
    c(
        "<answer>79 - 60 + 17</answer>\n",
        36,
        N,
        0.0,
        "EXTRACT: a trailing newline makes the last line empty",
    ),
    c(
        "<answer>79 - 60 + 17</answer>\nDone.",
        36,
        N,
        0.0,
        "EXTRACT: the last line has no tag",
    ),
    c(
        "<answer>\n79 - 60 + 17\n</answer>",
        36,
        N,
        0.0,
        "EXTRACT: the tag spans lines; the last line is '</answer>'",
    ),
    c(
        "<answer>79-60+17</answer>\r\n",
        36,
        N,
        0.0,
        "EXTRACT: CRLF still ends in '\\n': empty last line",
    ),
    // --- two answer tags ---
    c(
        "<answer>79 - 60 + 17</answer> <answer>1 + 2</answer>",
        36,
        N,
        0.1,
        "the last match '1 + 2' fails NUMS",
    ),
    c(
        "<answer>79 - 60 + 17</answer>\n<answer>1+2</answer>",
        36,
        N,
        0.1,
        "only the last line counts: '1+2' fails NUMS",
    ),
    c(
        "<answer>1 <answer>79 - 60 + 17</answer>",
        36,
        N,
        0.1,
        "non-greedy from the first '<answer>': '1 <answer>79 - 60 + 17' fails NUMS",
    ),
    // --- "= 24" inside the answer: format score ---
    c(
        "<answer>79 - 60 + 17 = 36</answer>",
        36,
        N,
        0.1,
        "NUMS: the 36 after '=' is an extra number",
    ),
    c(
        "<answer>2*3*4 = 24</answer>",
        24,
        &[2, 3, 4],
        0.1,
        "NUMS: 24 is an extra number",
    ),
    c(
        "<answer>2*3*4=</answer>",
        24,
        &[2, 3, 4],
        0.1,
        "NUMS passes, CHARS: '=' is not allowed",
    ),
    // --- division by zero: format score ---
    c(
        "<answer>4/(2-2)</answer>",
        2,
        &[4, 2, 2],
        0.1,
        "EVAL: ZeroDivisionError",
    ),
    c(
        "<answer>4//(2-2)</answer>",
        2,
        &[4, 2, 2],
        0.1,
        "EVAL: ZeroDivisionError in floor division",
    ),
    c(
        "<answer>(2-2)**-4</answer>",
        2,
        &[4, 2, 2],
        0.1,
        "EVAL: 0 ** negative is a ZeroDivisionError",
    ),
    // --- unicode: format score ---
    c(
        "<answer>79 \u{2212} 60 + 17</answer>",
        36,
        N,
        0.1,
        "CHARS: U+2212 minus sign",
    ),
    c(
        "<answer>2×3×4</answer>",
        24,
        &[2, 3, 4],
        0.1,
        "CHARS: multiplication sign",
    ),
    c(
        "<answer>(8÷2)*6</answer>",
        24,
        &[8, 2, 6],
        0.1,
        "CHARS: division sign",
    ),
    c(
        "<answer>７９ - 60 + 17</answer>",
        36,
        N,
        0.1,
        "NUMS passes (int('７９') = 79), CHARS passes (\\d), EVAL: SyntaxError",
    ),
    c(
        "<answer>٧٩ - 60 + 17</answer>",
        36,
        N,
        0.1,
        "Arabic-Indic digits: same as full-width",
    ),
    c(
        "<answer>2³*3</answer>",
        24,
        &[2, 3, 3],
        0.1,
        "NUMS: superscript 3 is not a decimal digit ([2, 3] != [2, 3, 3])",
    ),
    // --- whitespace: format score ---
    c(
        "<answer>79\u{a0}- 60 + 17</answer>",
        36,
        N,
        0.1,
        "EVAL: NBSP inside is a SyntaxError",
    ),
    c(
        "<answer>79\u{b}- 60+17</answer>",
        36,
        N,
        0.1,
        "EVAL: vertical tab is a SyntaxError",
    ),
    c(
        "<answer>79 -\r 60 + 17</answer>",
        36,
        N,
        0.1,
        "EVAL: '\\r' outside parentheses ends the statement",
    ),
    // --- other syntax: format score ---
    c("<answer>79 60 17</answer>", 36, N, 0.1, "EVAL: SyntaxError"),
    c(
        "<answer>2(3+4)</answer>",
        14,
        &[2, 3, 4],
        0.1,
        "EVAL: '2(...)' calls an int, a TypeError",
    ),
    c(
        "<answer>79 - 60 + 17 + ...</answer>",
        36,
        N,
        0.1,
        "EVAL: '...' is Ellipsis, a TypeError",
    ),
    c(
        "<answer>79 - 60 + 17 + x</answer>",
        36,
        N,
        0.1,
        "CHARS: a letter",
    ),
    c("<answer>79 % 60 + 17</answer>", 36, N, 0.1, "CHARS: '%'"),
    c(
        "<answer>(-8)**(1/3)</answer>",
        2,
        &[8, 1, 3],
        0.1,
        "EVAL: a complex result, |(1+1.732j) - 2| > 1e-5",
    ),
    c(
        "<answer>79..60+17</answer>",
        36,
        N,
        0.1,
        "EVAL: '79.' then '.60': SyntaxError",
    ),
    c(
        "<answer>()</answer>",
        36,
        &[],
        0.1,
        "NUMS passes (no numbers), EVAL: a tuple minus an int is a TypeError",
    ),
    // --- kiln's bound, where Python would not return ---
    Case {
        resp: "<answer>99**99**99</answer>",
        target: 1,
        nums: &[99, 99, 99],
        want: 0.1,
        why: "kiln refuses integers beyond 2^16 bits (Python computes 99**(99**99) for ever): format score",
        py: false,
    },
];

#[test]
fn tinyzero_table() {
    assert!(CASES.len() >= 60, "{} cases", CASES.len());
    let v = CountdownVerifier::default();
    let mut failures = Vec::new();
    for (k, case) in CASES.iter().enumerate() {
        let r = Reference::Countdown {
            target: case.target,
            nums: case.nums.to_vec(),
        };
        let got = v.score(case.resp, &r);
        if got.score != case.want {
            failures.push(format!(
                "#{k} {:?}: got {} want {} ({}) [{:?}]",
                case.resp, got.score, case.want, case.why, got.error
            ));
        }
        assert_eq!(got.correct, case.want == 1.0, "#{k}");
        // The TRE recipes' format score 0: every 0.1 becomes 0.
        let strict = CountdownVerifier::new(0.0).score(case.resp, &r).score;
        assert_eq!(
            strict,
            if case.want == 0.1 { 0.0 } else { case.want },
            "#{k} with format_score 0"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if let Ok(path) = std::env::var("KILN_COUNTDOWN_TABLE_OUT") {
        let rows: Vec<serde_json::Value> = CASES
            .iter()
            .filter(|c| c.py)
            .map(|c| serde_json::json!({"response": c.resp, "target": c.target, "nums": c.nums, "want": c.want, "why": c.why}))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    }
}

#[test]
fn full_text_split_quirks() {
    let v = CountdownVerifier::default();
    let base = "A conversation between User and Assistant. User: Using the numbers [79, 17, 60], create an \
                equation that equals 36. Assistant: Let me solve this step by step.\n<think>";
    let resp = " 79-60=19, 19+17=36 </think>\n<answer>79-60+17</answer>";
    assert_eq!(v.score_full(&format!("{base}{resp}"), 36, N).score, 1.0);
    // Chat template: the split is at "<|im_start|>assistant".
    let chat = format!("<|im_start|>user\nSolve<|im_end|>\n<|im_start|>assistant\n{resp}");
    assert_eq!(v.score_full(&chat, 36, N).score, 1.0);
    // Neither marker: TinyZero returns 0 (extract_solution gives None).
    assert_eq!(v.score_full(resp, 36, N).score, 0.0);
    // "Assistant:" is searched first, even when it only appears in the response: the text after
    // its first occurrence is used, so an answer before it on the same line is lost.
    let chat2 = "<|im_start|>assistant\n<answer>79-60+17</answer> Assistant: ok";
    assert_eq!(v.score_full(chat2, 36, N).score, 0.0);
}
