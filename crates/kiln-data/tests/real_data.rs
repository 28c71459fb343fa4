//! Loaders on the real files in `shared/data` (found through `default_data_dir()`).

use kiln_data::*;

fn dir() -> std::path::PathBuf {
    default_data_dir().expect("shared/data (or $KILN_DATA_DIR) must exist for these tests")
}

#[test]
fn math500_loads_500() {
    let ex = load_math500(dir().join("math500/test.jsonl")).unwrap();
    assert_eq!(ex.len(), 500);
    let e = &ex[0];
    assert_eq!(e.id, "test/precalculus/807.json");
    assert_eq!(e.domain, domain::MATH);
    assert_eq!(
        e.reference,
        Reference::Answer("\\left( 3, \\frac{\\pi}{2} \\right)".into())
    );
    let msgs = e.prompt.messages().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].role, "user");
    assert!(
        msgs[0]
            .content
            .starts_with("Convert the point $(0,3)$ in rectangular coordinates")
    );
    assert!(
        msgs[0]
            .content
            .ends_with(" Let's think step by step and output the final answer within \\boxed{}.")
    );
    assert_eq!(e.meta["subject"], "Precalculus");
    assert_eq!(e.meta["level"], 2);
    // Every answer is the last boxed content of its solution.
    for e in &ex {
        let sol = e.meta["solution"].as_str().unwrap();
        assert_eq!(last_boxed(sol), e.reference.answer(), "{}", e.id);
    }
}

#[test]
fn math_train_drops_the_two_empty_answers() {
    let path = dir().join("math/train.jsonl");
    let out = JsonlLoader::new(FieldMap::math_train(MathTemplate::Chat))
        .load_report(&path)
        .unwrap();
    assert_eq!(out.examples.len(), 7498);
    let dropped: Vec<&str> = out.dropped.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(dropped, ["math/train/5341", "math/train/5343"]);
    assert_eq!(out.dropped[0].loc, Loc::Line(5342));
    assert_eq!(load_math_train(&path).unwrap().len(), 7498);
    assert_eq!(out.examples[0].id, "math/train/0");
    assert_eq!(out.examples[0].reference, Reference::Answer("0".into()));
    // idx 2773 has level null: meta skips it rather than failing.
    let e = out
        .examples
        .iter()
        .find(|e| e.id == "math/train/2773")
        .unwrap();
    assert!(!e.meta.contains_key("level"));
    assert!(
        out.examples
            .iter()
            .all(|e| !e.reference.answer().unwrap().is_empty())
    );
}

#[test]
fn countdown_loads_with_tinyzero_prompt() {
    let test = load_countdown(dir().join("countdown/test.jsonl")).unwrap();
    assert_eq!(test.len(), 1024);
    assert_eq!(
        test.iter()
            .filter(
                |e| matches!(&e.reference, Reference::Countdown { nums, .. } if nums.len() == 3)
            )
            .count(),
        490
    );
    let e = &test[0];
    assert_eq!(e.id, "countdown/test/0");
    assert_eq!(
        e.reference,
        Reference::Countdown {
            target: 36,
            nums: vec![79, 17, 60]
        }
    );
    assert_eq!(
        e.prompt,
        countdown_prompt(&[79, 17, 60], 36, CountdownTemplate::Base)
    );
    assert!(
        e.prompt
            .as_text()
            .unwrap()
            .contains("Using the numbers [79, 17, 60], create an equation that equals 36.")
    );
    let train =
        load_countdown_with(dir().join("countdown/train.jsonl"), CountdownTemplate::Chat).unwrap();
    assert_eq!(train.len(), 11264);
    assert_eq!(
        train[0].reference,
        Reference::Countdown {
            target: 98,
            nums: vec![44, 19, 35]
        }
    );
    assert!(train[0].prompt.is_chat());
}

#[test]
fn countdown_test_split_solvability() {
    // Not every TinyZero instance need be solvable; measure it and check the solutions found.
    let test = load_countdown(dir().join("countdown/test.jsonl")).unwrap();
    let mut solved = 0;
    for e in &test {
        let Reference::Countdown { target, nums } = &e.reference else {
            unreachable!()
        };
        if let Some(sol) = solve_countdown(nums, *target) {
            let mut used: Vec<i64> = sol
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            used.sort();
            let mut want = nums.clone();
            want.sort();
            assert_eq!(used, want, "{sol}");
            solved += 1;
        }
    }
    eprintln!("countdown test split: {solved}/1024 solvable by exhaustive search");
    assert!(solved >= 1000, "{solved}");
}

#[test]
fn gsm8k_references_are_plain_numbers() {
    let test = load_gsm8k(dir().join("gsm8k/test.jsonl")).unwrap();
    let train = load_gsm8k(dir().join("gsm8k/train.jsonl")).unwrap();
    assert_eq!(test.len(), 1319);
    assert_eq!(train.len(), 7473);
    assert_eq!(test[0].id, "gsm8k/test/0");
    assert_eq!(test[0].reference, Reference::Answer("18".into()));
    assert!(
        test[0].meta["solution"]
            .as_str()
            .unwrap()
            .ends_with("#### 18")
    );
    for e in test.iter().chain(&train) {
        let a = e.reference.answer().unwrap();
        assert!(a.parse::<f64>().is_ok(), "{}: {a:?}", e.id);
        assert!(!a.contains(','));
    }
    // The comma form "1,080" becomes "1080".
    assert!(train.iter().any(|e| e.reference.answer() == Some("1080")));
}
