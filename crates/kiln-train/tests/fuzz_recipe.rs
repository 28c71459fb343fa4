//! Fuzz targets for the recipe loader: TOML text (`from_toml_str`), recipe files with `extends`
//! (`load_recipe`) and `--set` overrides.
//!
//! The property, for every input: `Ok`, or an `Err` whose message names the recipe file (or the
//! `--set` override), within [`SLOW`], without a panic; and a recipe that loads survives the
//! round trip through `to_toml` / `from_toml_str` unchanged (what a run saves as recipe.toml
//! must resume).
//!
//! Inputs: the shipped recipes (`recipes/*.toml`), the loader tests' recipes
//! (`tests/recipes/**.toml`) and the seeds in `tests/fuzz-corpus/recipe/`, mutated at random
//! (bytes flipped, inserted, deleted, truncated; numbers replaced by extreme ones; TOML values
//! replaced, removed or added by key path), plus random `--set` strings from a small grammar.
//!
//! Each target runs a fixed number of cases (`KILN_FUZZ_CASES=N` sets every target's count) and
//! prints `fuzz <target>: N executions in T`. proptest saves failing seeds in
//! `fuzz_recipe.proptest-regressions` beside this file (commit it).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use kiln_train::recipe::{Recipe, RecipeError, from_toml_str, load_recipe, to_toml};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestRunner};
use toml::{Table, Value};

/// Wall-clock bound of one case on a loaded 2-core machine (cases take well under a millisecond).
const SLOW: Duration = Duration::from_secs(2);

fn case_count(default: u32) -> u32 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Shipped recipes name paths relative to the workspace root: run from there, as `kiln` does.
fn at_workspace_root() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_current_dir(workspace()).expect("cd to the workspace root"));
}

/// A per-target temporary directory; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(target: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-fuzz-{target}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `case` on `cases` inputs (proptest, with failure persistence and shrinking), each
/// within [`SLOW`], and prints the number of executions.
fn fuzz<S: Strategy>(
    target: &'static str,
    default_cases: u32,
    strategy: S,
    case: impl Fn(&Path, S::Value),
) {
    at_workspace_root();
    let scratch = Scratch::new(target);
    let mut runner = TestRunner::new(Config {
        cases: case_count(default_cases),
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 1000,
        // Fixed, so CI explores the same inputs every run; KILN_FUZZ_SEED=<u64> explores others.
        rng_seed: RngSeed::Fixed(
            std::env::var("KILN_FUZZ_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0x6b69_6c6e),
        ),
        ..Config::default()
    });
    let executions = Cell::new(0u64);
    let t0 = Instant::now();
    let result = runner.run(&strategy, |value| {
        executions.set(executions.get() + 1);
        let t = Instant::now();
        case(&scratch.0, value);
        let took = t.elapsed();
        prop_assert!(took < SLOW, "one case took {took:?}");
        Ok(())
    });
    eprintln!(
        "fuzz {target}: {} executions in {:.1?}",
        executions.get(),
        t0.elapsed()
    );
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds.

/// Every `.toml` file under `dir` (recursively), sorted, read.
fn toml_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            out.push((p, text));
        }
    }
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/recipe")
}

/// The seed recipes: shipped, the loader tests', and the fuzz corpus; each as written (unless
/// it extends a file other than the corpus's `base.toml`, which a case cannot resolve), and,
/// when it loads, as `to_toml` writes it resolved (self-contained: no `extends`).
fn seeds() -> Vec<String> {
    at_workspace_root();
    let mut files = Vec::new();
    toml_files(&workspace().join("recipes"), &mut files);
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recipes"),
        &mut files,
    );
    toml_files(&corpus(), &mut files);
    let mut seeds = Vec::new();
    for (path, text) in files {
        if let Ok(recipe) = load_recipe(&path, &[]) {
            seeds.push(to_toml(&recipe));
        }
        let extends = text
            .parse::<Table>()
            .ok()
            .and_then(|t| t.get("extends").cloned());
        if extends.is_none_or(|e| e.as_str() == Some("base.toml")) {
            seeds.push(text);
        }
    }
    assert!(seeds.len() >= 20, "too few seed recipes: {}", seeds.len());
    seeds
}

/// The base recipe that seeds extending `base.toml` resolve to, written beside each case.
fn base_recipe() -> String {
    std::fs::read_to_string(corpus().join("base.toml")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Mutations.

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "0.5",
    "-0.0",
    "1e308",
    "1e999",
    "5e-324",
    "nan",
    "+inf",
    "-inf",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "0x7fffffffffffffff",
    "1_000_000",
];

/// Byte strings inserted: TOML syntax, odd Unicode, controls.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ".",
    ",",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "#",
    "\n",
    "\r\n",
    "\t",
    "\0",
    "\\",
    "\\u",
    "\\U0010ffff",
    "é",
    "\u{feff}",
    "\u{10ffff}",
    "extends = \"x\"\n",
    "[tasks.a]\n",
    "kind = ",
    "type = ",
    " = ",
    "1979-05-27T07:32:00Z",
    "true",
    "inf",
];

/// Strings planted as TOML values: every enum value the schema knows, paths, odd text.
const STRINGS: &[&str] = &[
    "",
    "grpo",
    "rloo",
    "gae",
    "reinforce++",
    "dr-grpo",
    "tree",
    "none",
    "global",
    "tre-k",
    "tre-p",
    "constant",
    "cosine",
    "linear-warmup",
    "arithmetic",
    "countdown",
    "math",
    "gsm8k",
    "jsonl",
    "random",
    "pretrained",
    "flex",
    "cpu",
    "wgpu",
    "cuda",
    "cuda:0",
    "cuda:x",
    "smollm2",
    "recipes/models/tiny-arith",
    "/nonexistent/x.gguf",
    "a/b",
    "..",
    ".",
    "+",
    "-",
    "*",
    "/",
    "terse",
    "chat",
    "base",
    "scratchpad",
    "train",
    "test",
    "k1",
    "k2",
    "k3",
    "token-mean",
    "seq-mean-token-sum-norm",
    "base.toml",
    "case.toml",
    "missing.toml",
    "a\u{0}b",
    "runs/../..",
];

/// Keys for inserted entries: the schema's own, and others.
const KEYS: &[&str] = &[
    "extends",
    "name",
    "seed",
    "device",
    "description",
    "model",
    "tasks",
    "sft",
    "rollout",
    "train",
    "algorithm",
    "optim",
    "critic",
    "eval",
    "logging",
    "checkpoint",
    "path",
    "init",
    "max_context",
    "weight",
    "verifier",
    "format_score",
    "kind",
    "type",
    "n",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "max_new_tokens",
    "stop",
    "include_stop",
    "max_batch_tokens",
    "steps",
    "prompts_per_step",
    "mini_batch_size",
    "micro_batch_size",
    "ppo_epochs",
    "chunk_size",
    "max_consecutive_skips",
    "advantage",
    "clip_low",
    "clip_high",
    "dual_clip",
    "loss_agg",
    "kl_loss_coef",
    "kl_estimator",
    "kl_reward_coef",
    "entropy",
    "gamma",
    "lam",
    "lr",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "max_grad_norm",
    "schedule",
    "warmup_steps",
    "total_steps",
    "min_lr_ratio",
    "value_clip",
    "every",
    "limit",
    "run_dir",
    "plot_every",
    "print_samples",
    "keep_last",
    "k",
    "coef",
    "p",
    "max_region",
    "min_digits",
    "max_digits",
    "ops",
    "count",
    "stream",
    "levels",
    "template",
    "split",
    "prompt_field",
    "answer_field",
    "data",
    "task",
    "wrong_carry_fraction",
    "format",
    "batch_size",
    "allow_negative",
];

/// A TOML value to plant (an enum, so failure reports read well).
#[derive(Debug, Clone)]
enum Planted {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
    Date,
    Ints(Vec<i64>),
    Strs(Vec<&'static str>),
    Tagged(&'static str, &'static str),
    EmptyTable,
}

impl Planted {
    fn value(&self) -> Value {
        match self {
            Planted::Int(i) => Value::Integer(*i),
            Planted::Float(f) => Value::Float(*f),
            Planted::Bool(b) => Value::Boolean(*b),
            Planted::Str(s) => Value::String((*s).into()),
            Planted::Date => Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap()),
            Planted::Ints(v) => Value::Array(v.iter().map(|i| Value::Integer(*i)).collect()),
            Planted::Strs(v) => {
                Value::Array(v.iter().map(|s| Value::String((*s).into())).collect())
            }
            Planted::Tagged(tag, v) => {
                let mut t = Table::new();
                t.insert((*tag).into(), Value::String((*v).into()));
                Value::Table(t)
            }
            Planted::EmptyTable => Value::Table(Table::new()),
        }
    }
}

fn planted() -> impl Strategy<Value = Planted> {
    prop_oneof![
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(2),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(1 << 32),
            0i64..100
        ]
        .prop_map(Planted::Int),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(1e308),
            Just(5e-324),
            Just(0.5),
            Just(1.0),
            any::<f64>()
        ]
        .prop_map(Planted::Float),
        any::<bool>().prop_map(Planted::Bool),
        select(STRINGS).prop_map(Planted::Str),
        Just(Planted::Date),
        proptest::collection::vec(prop_oneof![Just(i64::MAX), Just(-1), 0i64..10], 0..4)
            .prop_map(Planted::Ints),
        proptest::collection::vec(select(STRINGS), 0..4).prop_map(Planted::Strs),
        (select(&["kind", "type"][..]), select(STRINGS)).prop_map(|(t, v)| Planted::Tagged(t, v)),
        Just(Planted::EmptyTable),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Insert(Index, &'static str),
    InsertBytes(Index, Vec<u8>),
    Delete(Index, u8),
    Truncate(Index),
    /// The n-th run of ASCII digits replaced by a number.
    Number(Index, &'static str),
    /// A copy of a chunk of the text elsewhere.
    Splice(Index, Index, u8),
    /// The value at a key path (any depth) replaced.
    SetValue(Index, Planted),
    /// The value at a key path replaced by an extreme one of the same type (reaches
    /// validation rather than stopping at the type check).
    Perturb(Index, u8),
    /// The entry at a key path removed.
    Remove(Index),
    /// A new entry in a table (any depth).
    AddKey(Index, &'static str, Planted),
}

/// Structural edits dominate: byte damage mostly ends at the TOML parser, while a valid
/// document with a wrong value reaches deserialisation, validation and the round trip.
fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<Index>(), select(TOKENS)).prop_map(|(i, t)| Mutation::Insert(i, t)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
        1 => (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), select(NUMBERS)).prop_map(|(i, n)| Mutation::Number(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1u8..64).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        10 => (any::<Index>(), planted()).prop_map(|(i, v)| Mutation::SetValue(i, v)),
        8 => (any::<Index>(), any::<u8>()).prop_map(|(i, k)| Mutation::Perturb(i, k)),
        4 => any::<Index>().prop_map(Mutation::Remove),
        6 => (any::<Index>(), select(KEYS), planted()).prop_map(|(i, k, v)| Mutation::AddKey(i, k, v)),
    ]
}

/// Key paths of every value in `table` (tables included, at any depth).
fn key_paths(table: &Table, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (k, v) in table {
        at.push(k.clone());
        out.push(at.clone());
        if let Value::Table(t) = v {
            key_paths(t, at, out);
        }
        at.pop();
    }
}

fn table_at<'a>(table: &'a mut Table, path: &[String]) -> Option<&'a mut Table> {
    match path.split_first() {
        None => Some(table),
        Some((k, rest)) => match table.get_mut(k)? {
            Value::Table(t) => table_at(t, rest),
            _ => None,
        },
    }
}

/// An extreme value of `v`'s own type, chosen by `k`.
fn perturb(v: &Value, k: usize) -> Value {
    const INTS: [i64; 8] = [0, -1, 1, 2, 3, i64::MAX, i64::MIN, 1 << 32];
    const FLOATS: [f64; 10] = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        1e308,
        -1.0,
        1.0,
        2.0,
        5e-324,
    ];
    match v {
        Value::Integer(_) => Value::Integer(INTS[k % INTS.len()]),
        Value::Float(_) => Value::Float(FLOATS[k % FLOATS.len()]),
        Value::String(_) => Value::String(STRINGS[k % STRINGS.len()].into()),
        Value::Boolean(b) => Value::Boolean(!b),
        Value::Array(items) if k.is_multiple_of(2) => {
            Value::Array([items.clone(), items.clone()].concat())
        }
        Value::Array(_) => Value::Array(Vec::new()),
        other => other.clone(),
    }
}

/// Applies a structural mutation to the parsed text; `None` when the text is not TOML.
fn edit_toml(text: &str, m: &Mutation) -> Option<String> {
    let mut table: Table = text.parse().ok()?;
    let mut paths = vec![vec![]];
    key_paths(&table, &mut Vec::new(), &mut paths);
    let pick = |i: &Index| paths[i.index(paths.len())].clone();
    match m {
        Mutation::SetValue(i, v) => {
            let path = pick(i);
            if let Some((last, parent)) = path.split_last() {
                table_at(&mut table, parent)?.insert(last.clone(), v.value());
            }
        }
        Mutation::Perturb(i, k) => {
            let path = pick(i);
            if let Some((last, parent)) = path.split_last() {
                let t = table_at(&mut table, parent)?;
                let v = perturb(t.get(last)?, *k as usize);
                t.insert(last.clone(), v);
            }
        }
        Mutation::Remove(i) => {
            let path = pick(i);
            if let Some((last, parent)) = path.split_last() {
                table_at(&mut table, parent)?.remove(last);
            }
        }
        Mutation::AddKey(i, k, v) => {
            table_at(&mut table, &pick(i))?.insert((*k).into(), v.value());
        }
        _ => return None,
    }
    toml::to_string(&table).ok()
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut b = text.as_bytes().to_vec();
    let len = b.len();
    match m {
        Mutation::Insert(i, t) => {
            let at = i.index(len + 1);
            b.splice(at..at, t.bytes());
        }
        Mutation::InsertBytes(i, bytes) => {
            let at = i.index(len + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        Mutation::SetValue(..)
        | Mutation::Perturb(..)
        | Mutation::Remove(_)
        | Mutation::AddKey(..) => {
            return edit_toml(text, m).unwrap_or_else(|| text.to_owned());
        }
        _ if len == 0 => {}
        Mutation::FlipBit(i, bit) => b[i.index(len)] ^= 1 << bit,
        Mutation::Delete(i, n) => {
            let at = i.index(len);
            b.drain(at..(at + *n as usize).min(len));
        }
        Mutation::Truncate(i) => b.truncate(i.index(len)),
        Mutation::Number(i, n) => {
            let mut runs = Vec::new();
            let mut start = None;
            for (j, c) in b.iter().enumerate() {
                match (c.is_ascii_digit(), start) {
                    (true, None) => start = Some(j),
                    (false, Some(s)) => {
                        runs.push(s..j);
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                runs.push(s..len);
            }
            if !runs.is_empty() {
                let r = runs[i.index(runs.len())].clone();
                b.splice(r, n.bytes());
            }
        }
        Mutation::Splice(from, to, n) => {
            let (from, to) = (from.index(len), to.index(len));
            let n = (*n as usize).min(len - from).min(len - to);
            b.copy_within(from..from + n, to);
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn mutated(seed: &str, ms: &[Mutation]) -> String {
    ms.iter().fold(seed.to_owned(), |text, m| apply(&text, m))
}

// ---------------------------------------------------------------------------------------------
// --set overrides.

const OVERRIDE_KEYS: &[&str] = &[
    "rollout.n",
    "rollout.temperature",
    "rollout.stop",
    "optim.lr",
    "optim.schedule",
    "optim.schedule.type",
    "algorithm.entropy",
    "algorithm.entropy.k",
    "algorithm.advantage",
    "tasks.arithmetic.train",
    "tasks.arithmetic.train.kind",
    "tasks.\"a.b\".weight",
    "tasks.new.train",
    "model.path",
    "model",
    "seed",
    "name",
    "device",
    "extends",
    "critic",
    "critic.lr",
    "sft.data.task",
    "train.micro_batch_size",
    "train.dynamic_sampling",
    "rollout.tree",
    "rollout.tree.epsilon",
    "algorithm.rose",
    "algorithm.rose.length_lambda",
    "eval.pass_k",
    "eval.pass_temperature",
    "schedule",
    "sft.data",
    "rollout.n.deeper",
    "a..b",
    "\"\"",
    "'lit'.x",
    " rollout . n ",
    "x = 1\ny",
    "[t]\nk",
];

const OVERRIDE_VALUES: &[&str] = &[
    "0",
    "-1",
    "16",
    "2e-6",
    "nan",
    "inf",
    "true",
    "\"text\"",
    "'lit'",
    "\"unterminated",
    "[1, 2]",
    "[",
    "[[[[",
    "{ type = \"tre-k\", k = 2, coef = 0.001 }",
    "{ kind = \"countdown\" }",
    "{ type = \"cosine\", warmup_steps = 5, total_steps = 1, min_lr_ratio = 2 }",
    "{",
    "1979-05-27",
    "1979-05-27T07:32:00Z",
    "9223372036854775808",
    "18446744073709551615",
    "/tmp/x",
    "cuda:0",
    "a = 1",
    "1 # comment",
    "",
    "=",
];

fn override_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (
            prop_oneof![3 => select(OVERRIDE_KEYS).prop_map(str::to_owned), 1 => "[a-z_.\"' ]{0,12}"],
            prop_oneof![3 => select(OVERRIDE_VALUES).prop_map(str::to_owned), 1 => ".{0,12}"],
        )
            .prop_map(|(k, v)| format!("{k}={v}")),
        1 => ".{0,24}",
    ]
}

// ---------------------------------------------------------------------------------------------
// The properties.

fn assert_names(err: &RecipeError, what: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(what) || matches!(err, RecipeError::Override { .. }) && msg.contains("--set"),
        "the error does not name {what:?}: {msg}"
    );
}

/// A recipe that loads is saved and loaded back unchanged (what resuming a run does).
fn round_trip(recipe: &Recipe) {
    let text = to_toml(recipe);
    let back = from_toml_str(&text, "recipe.toml")
        .unwrap_or_else(|e| panic!("the saved recipe does not load: {e}\n{text}"));
    assert_eq!(&back, recipe, "the round trip changed the recipe:\n{text}");
}

fn text_case(text: &str) {
    match from_toml_str(text, "fuzz.toml") {
        Ok(recipe) => round_trip(&recipe),
        Err(e) => assert_names(&e, "fuzz.toml"),
    }
}

fn file_case(dir: &Path, text: &str, overrides: &[String]) {
    let path = dir.join("case.toml");
    std::fs::write(&path, text).unwrap();
    match load_recipe(&path, overrides) {
        Ok(recipe) => round_trip(&recipe),
        Err(e) => assert_names(&e, &dir.display().to_string()),
    }
}

#[test]
fn fuzz_recipe_text() {
    let seeds = seeds();
    fuzz(
        "recipe-text",
        5000,
        (select(seeds), proptest::collection::vec(mutation(), 1..4)),
        |_, (seed, ms)| text_case(&mutated(&seed, &ms)),
    );
}

/// TOML-ish text from scratch: keys, values and syntax in any order.
#[test]
fn fuzz_recipe_tomlish() {
    let line = prop_oneof![
        (select(KEYS), select(NUMBERS)).prop_map(|(k, v)| format!("{k} = {v}\n")),
        (select(KEYS), select(STRINGS)).prop_map(|(k, v)| format!("{k} = {v:?}\n")),
        (select(KEYS), select(OVERRIDE_VALUES)).prop_map(|(k, v)| format!("{k} = {v}\n")),
        select(KEYS).prop_map(|k| format!("[{k}]\n")),
        (select(KEYS), select(KEYS)).prop_map(|(a, b)| format!("[{a}.{b}]\n")),
        select(TOKENS).prop_map(str::to_owned),
        ".{0,10}",
    ];
    fuzz(
        "recipe-tomlish",
        5000,
        proptest::collection::vec(line, 0..30).prop_map(|v| v.concat()),
        |_, text| text_case(&text),
    );
}

#[test]
fn fuzz_recipe_file_and_overrides() {
    let seeds = seeds();
    let base = base_recipe();
    fuzz(
        "recipe-file-overrides",
        1500,
        (
            select(seeds),
            proptest::collection::vec(mutation(), 0..3),
            proptest::collection::vec(override_text(), 0..4),
        ),
        |dir, (seed, ms, overrides)| {
            std::fs::write(dir.join("base.toml"), &base).unwrap();
            file_case(dir, &mutated(&seed, &ms), &overrides);
        },
    );
}

/// The committed seeds load (so mutations start from valid recipes).
#[test]
fn seed_recipes_load() {
    at_workspace_root();
    for name in ["syntax.toml", "child.toml"] {
        let path = corpus().join(name);
        let recipe = load_recipe(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        round_trip(&recipe);
    }
}

/// Deep nesting, huge numbers, long strings: errors or values, promptly, and no stack overflow.
#[test]
fn hostile_recipes_return_promptly() {
    at_workspace_root();
    let n = 100_000;
    let deep_key = format!("{}x = 1\n", "a.".repeat(n));
    let cases = [
        (
            "deep arrays",
            format!("name = {}1{}\n", "[".repeat(n), "]".repeat(n)),
        ),
        (
            "deep inline tables",
            format!("name = {}{}\n", "{ a = ".repeat(n), "}".repeat(n)),
        ),
        ("deep dotted key", deep_key.clone()),
        ("deep table header", format!("[{}x]\n", "a.".repeat(n))),
        (
            "10 MB string",
            format!("name = \"{}\"\n", "x".repeat(10 << 20)),
        ),
        (
            "100k keys",
            (0..n).map(|i| format!("k{i} = {i}\n")).collect::<String>(),
        ),
        (
            "huge integer",
            "seed = 99999999999999999999999999999999\n".into(),
        ),
        ("unterminated", "name = \"".into()),
    ];
    for (what, text) in cases {
        let t = Instant::now();
        let err = from_toml_str(&text, "hostile.toml").unwrap_err();
        assert!(err.to_string().contains("hostile.toml"), "{what}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            t.elapsed()
        );
    }
    let deep_set = format!("{}x=1", "a.".repeat(n));
    let t = Instant::now();
    let err = load_recipe(&workspace().join("recipes/quickstart.toml"), &[deep_set]).unwrap_err();
    assert!(err.to_string().contains("a.a.a"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
