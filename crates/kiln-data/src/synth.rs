//! Seeded synthetic task generators: Countdown (every instance solvable, with one solution found
//! by exhaustive search) and multi-digit arithmetic, sized for small models trained on a CPU.
//!
//! Generators are random-access: example `i` of generator `(config, seed)` depends only on
//! `(config, seed, i)` (a ChaCha8 stream per index), so an unbounded synthetic dataset can be
//! sampled, resumed and sharded without storing it.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{DataError, Result};
use crate::example::{Example, Prompt, Reference};
use crate::templates::{CountdownTemplate, MathTemplate, countdown_prompt, math_prompt};

/// The RNG for item `index` of a seeded stream: ChaCha8 keyed by `seed`, stream `index`.
/// Portable and stable: the same numbers on every platform and `rand` version.
pub fn item_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// A uniform integer in `0..n` (`n > 0`), by rejection sampling on 64-bit words: unbiased and
/// independent of `rand`'s distribution code, so it never changes between versions.
pub fn uniform_below(rng: &mut impl RngCore, n: u64) -> u64 {
    assert!(n > 0, "uniform_below(0)");
    let zone = u64::MAX - (u64::MAX % n) - 1;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % n;
        }
    }
}

/// A uniform integer in `lo..=hi`.
pub fn uniform_in(rng: &mut impl RngCore, lo: i64, hi: i64) -> i64 {
    debug_assert!(lo <= hi);
    let span = (hi as i128 - lo as i128 + 1) as u64;
    (lo as i128 + uniform_below(rng, span) as i128) as i64
}

/// An exact rational with a positive denominator, in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Q {
    n: i64,
    d: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Q {
    fn int(n: i64) -> Self {
        Q { n, d: 1 }
    }
    fn new(n: i128, d: i128) -> Option<Self> {
        if d == 0 {
            return None;
        }
        let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
        let n = i64::try_from(n).ok()?;
        let d = i64::try_from(d).ok()?;
        let g = gcd(n, d).max(1);
        Some(Q { n: n / g, d: d / g })
    }
    fn apply(self, op: u8, o: Q) -> Option<Q> {
        let (a, b, c, d) = (self.n as i128, self.d as i128, o.n as i128, o.d as i128);
        match op {
            b'+' => Q::new(a * d + c * b, b * d),
            b'-' => Q::new(a * d - c * b, b * d),
            b'*' => Q::new(a * c, b * d),
            b'/' => Q::new(a * d, b * c),
            _ => None,
        }
    }
}

/// How a value was reached from a subset of the numbers.
#[derive(Clone, Copy, Debug)]
enum Step {
    Leaf(usize),
    Bin {
        op: u8,
        lmask: u32,
        l: Q,
        rmask: u32,
        r: Q,
    },
}

/// All values reachable using every number of each subset exactly once, with one way to reach
/// each. Indexed by subset bitmask; each set sorted by value (so every loop over it, and hence
/// which of several equal-valued expressions is kept, is deterministic).
struct Reach {
    nums: Vec<i64>,
    sets: Vec<Vec<(Q, Step)>>,
}

/// FxHash-style hasher for the dedup maps: fast, and the same on every platform.
#[derive(Default)]
struct QHasher(u64);

impl std::hash::Hasher for QHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type QMap = HashMap<Q, Step, BuildHasherDefault<QHasher>>;

/// Most numbers a Countdown instance may have (the search is exhaustive).
pub const COUNTDOWN_MAX_NUMS: usize = 6;

impl Reach {
    /// Values of every subset; for the full set only those `keep_full` accepts (the full set is
    /// the largest and only its values in the wanted range matter).
    fn new(nums: &[i64], integer_only: bool, keep_full: &dyn Fn(Q) -> bool) -> Self {
        let n = nums.len();
        assert!(
            n <= COUNTDOWN_MAX_NUMS,
            "at most {COUNTDOWN_MAX_NUMS} numbers"
        );
        let full = (1u32 << n) - 1;
        let mut sets: Vec<Vec<(Q, Step)>> = vec![Vec::new(); (full + 1) as usize];
        for (i, &x) in nums.iter().enumerate() {
            sets[1 << i].push((Q::int(x), Step::Leaf(i)));
        }
        let mut masks: Vec<u32> = (1..=full).filter(|m| m.count_ones() >= 2).collect();
        masks.sort_by_key(|m| (m.count_ones(), *m));
        for mask in masks {
            let mut out = QMap::default();
            let low = mask & mask.wrapping_neg();
            // Enumerate splits (a, b) with the lowest bit in `a`: each unordered split once.
            let mut a = (mask - 1) & mask;
            while a > 0 {
                if a & low != 0 {
                    let b = mask ^ a;
                    for &(x, _) in &sets[a as usize] {
                        for &(y, _) in &sets[b as usize] {
                            for (op, l, lm, r, rm) in [
                                (b'+', x, a, y, b),
                                (b'*', x, a, y, b),
                                (b'-', x, a, y, b),
                                (b'-', y, b, x, a),
                                (b'/', x, a, y, b),
                                (b'/', y, b, x, a),
                            ] {
                                let Some(v) = l.apply(op, r) else { continue };
                                if (integer_only && v.d != 1) || (mask == full && !keep_full(v)) {
                                    continue;
                                }
                                out.entry(v).or_insert(Step::Bin {
                                    op,
                                    lmask: lm,
                                    l,
                                    rmask: rm,
                                    r,
                                });
                            }
                        }
                    }
                }
                a = (a - 1) & mask;
            }
            let mut v: Vec<(Q, Step)> = out.into_iter().collect();
            v.sort_unstable_by_key(|e| e.0);
            sets[mask as usize] = v;
        }
        Reach {
            nums: nums.to_vec(),
            sets,
        }
    }

    fn full(&self) -> &[(Q, Step)] {
        &self.sets[(1usize << self.nums.len()) - 1]
    }

    fn step(&self, mask: u32, v: Q) -> Step {
        let set = &self.sets[mask as usize];
        set[set
            .binary_search_by_key(&v, |e| e.0)
            .expect("value was reached")]
        .1
    }

    fn render(&self, mask: u32, v: Q) -> String {
        match self.step(mask, v) {
            Step::Leaf(i) => self.nums[i].to_string(),
            Step::Bin {
                op,
                lmask,
                l,
                rmask,
                r,
            } => {
                let side = |m: u32, q: Q| {
                    let s = self.render(m, q);
                    if m.count_ones() > 1 {
                        format!("({s})")
                    } else {
                        s
                    }
                };
                format!("{} {} {}", side(lmask, l), op as char, side(rmask, r))
            }
        }
    }
}

/// One equation that uses each of `nums` exactly once with `+ - * /` and parentheses and equals
/// `target` exactly (intermediate fractions allowed, as TinyZero's floating-point verifier
/// allows them), or `None` when there is none. Exhaustive; at most [`COUNTDOWN_MAX_NUMS`] numbers.
pub fn solve_countdown(nums: &[i64], target: i64) -> Option<String> {
    if nums.is_empty() || nums.len() > COUNTDOWN_MAX_NUMS {
        return None;
    }
    if nums.len() == 1 {
        return (nums[0] == target).then(|| target.to_string());
    }
    let t = Q::int(target);
    // Only the target is kept for the full set, so it is non-empty exactly when solvable.
    let reach = Reach::new(nums, false, &|v| v == t);
    (!reach.full().is_empty()).then(|| reach.render((1u32 << nums.len()) - 1, t))
}

/// Knobs of the Countdown generator. Defaults match TinyZero's Countdown-Tasks-3to4 data:
/// 3 or 4 numbers in 1..=99, targets in 10..=100.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CountdownConfig {
    /// Fewest numbers per instance (>= 2).
    pub min_count: usize,
    /// Most numbers per instance (<= 6).
    pub max_count: usize,
    /// Smallest number (>= 0).
    pub num_min: i64,
    /// Largest number.
    pub num_max: i64,
    /// Smallest target.
    pub target_min: i64,
    /// Largest target.
    pub target_max: i64,
    /// Require a solution whose every intermediate value is an integer (classic Countdown rules;
    /// easier instances). Default false: fractions allowed on the way, as in TinyZero.
    pub integer_only: bool,
    /// Prompt template.
    pub template: CountdownTemplate,
}

impl Default for CountdownConfig {
    fn default() -> Self {
        Self {
            min_count: 3,
            max_count: 4,
            num_min: 1,
            num_max: 99,
            target_min: 10,
            target_max: 100,
            integer_only: false,
            template: CountdownTemplate::Base,
        }
    }
}

impl CountdownConfig {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Config(format!("countdown generator: {m}")));
        if self.min_count < 2
            || self.max_count > COUNTDOWN_MAX_NUMS
            || self.min_count > self.max_count
        {
            return bad(format!(
                "need 2 <= min_count <= max_count <= {COUNTDOWN_MAX_NUMS}, got {}..={}",
                self.min_count, self.max_count
            ));
        }
        if self.num_min < 0 || self.num_min > self.num_max || self.num_max > 1_000_000 {
            return bad(format!(
                "need 0 <= num_min <= num_max <= 1e6, got {}..={}",
                self.num_min, self.num_max
            ));
        }
        if self.target_min > self.target_max {
            return bad(format!(
                "empty target range {}..={}",
                self.target_min, self.target_max
            ));
        }
        Ok(())
    }
}

/// Generates solvable Countdown instances.
#[derive(Clone, Debug)]
pub struct CountdownGenerator {
    config: CountdownConfig,
    seed: u64,
}

/// Tries per instance before giving up on a configuration that (almost) never has solutions.
const MAX_TRIES: usize = 10_000;

impl CountdownGenerator {
    /// A generator; fails on invalid knobs, or when the first instance cannot be made (a target
    /// range that the numbers cannot reach).
    pub fn new(config: CountdownConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let g = Self { config, seed };
        g.instance(0)?;
        Ok(g)
    }

    /// The knobs.
    pub fn config(&self) -> &CountdownConfig {
        &self.config
    }

    /// Instance `index`: `(nums, target, one solution)`. The target is drawn uniformly among the
    /// integers in the target range that the drawn numbers can reach (numbers are redrawn when
    /// none can be reached).
    pub fn instance(&self, index: u64) -> Result<(Vec<i64>, i64, String)> {
        let c = &self.config;
        let mut rng = item_rng(self.seed, index);
        for _ in 0..MAX_TRIES {
            let count = uniform_in(&mut rng, c.min_count as i64, c.max_count as i64) as usize;
            let nums: Vec<i64> = (0..count)
                .map(|_| uniform_in(&mut rng, c.num_min, c.num_max))
                .collect();
            let in_range = |q: Q| q.d == 1 && q.n >= c.target_min && q.n <= c.target_max;
            let reach = Reach::new(&nums, c.integer_only, &in_range);
            let targets: Vec<Q> = reach
                .full()
                .iter()
                .map(|e| e.0)
                .filter(|q| in_range(*q))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let t = targets[uniform_below(&mut rng, targets.len() as u64) as usize];
            let solution = reach.render((1u32 << nums.len()) - 1, t);
            return Ok((nums, t.n, solution));
        }
        Err(DataError::Config(format!(
            "countdown generator: no reachable target in {}..={} after {MAX_TRIES} draws of numbers",
            c.target_min, c.target_max
        )))
    }

    /// Example `index`: id `countdown-synth/{seed}/{index}`, domain `countdown`, the solution
    /// in `meta.solution`.
    pub fn example(&self, index: u64) -> Result<Example> {
        let (nums, target, solution) = self.instance(index)?;
        let mut meta = serde_json::Map::new();
        meta.insert("solution".into(), json!(solution));
        meta.insert("generator".into(), json!("countdown"));
        Ok(Example {
            id: format!("countdown-synth/{}/{index}", self.seed),
            domain: crate::domain::COUNTDOWN.into(),
            prompt: countdown_prompt(&nums, target, self.config.template),
            reference: Reference::Countdown { target, nums },
            meta,
        })
    }

    /// Examples `0..n`.
    pub fn generate(&self, n: u64) -> Result<Vec<Example>> {
        (0..n).map(|i| self.example(i)).collect()
    }
}

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArithOp {
    /// `+`
    #[serde(rename = "+", alias = "add")]
    Add,
    /// `-`
    #[serde(rename = "-", alias = "sub")]
    Sub,
    /// `*`
    #[serde(rename = "*", alias = "mul")]
    Mul,
    /// `/` (always exact: the dividend is drawn as divisor x quotient)
    #[serde(rename = "/", alias = "div")]
    Div,
}

impl ArithOp {
    /// The symbol used in questions.
    pub fn symbol(self) -> char {
        match self {
            ArithOp::Add => '+',
            ArithOp::Sub => '-',
            ArithOp::Mul => '*',
            ArithOp::Div => '/',
        }
    }
}

/// Knobs of the arithmetic generator: "What is 47 + 38?" with an integer answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArithmeticConfig {
    /// Fewest digits per operand (>= 1).
    pub min_digits: u32,
    /// Most digits per operand (<= 9).
    pub max_digits: u32,
    /// Operators drawn uniformly.
    pub ops: Vec<ArithOp>,
    /// Allow negative results of `-` (otherwise the larger operand comes first).
    pub allow_negative: bool,
    /// Prompt template (`Base`: "Question: What is 47 + 38?\nAnswer:").
    pub template: MathTemplate,
}

impl Default for ArithmeticConfig {
    fn default() -> Self {
        Self {
            min_digits: 1,
            max_digits: 2,
            ops: vec![ArithOp::Add, ArithOp::Sub],
            allow_negative: false,
            template: MathTemplate::Base,
        }
    }
}

impl ArithmeticConfig {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<()> {
        if self.min_digits < 1 || self.max_digits > 9 || self.min_digits > self.max_digits {
            return Err(DataError::Config(format!(
                "arithmetic generator: need 1 <= min_digits <= max_digits <= 9, got {}..={}",
                self.min_digits, self.max_digits
            )));
        }
        if self.ops.is_empty() {
            return Err(DataError::Config(
                "arithmetic generator: `ops` is empty".into(),
            ));
        }
        Ok(())
    }
}

/// Generates arithmetic questions.
#[derive(Clone, Debug)]
pub struct ArithmeticGenerator {
    config: ArithmeticConfig,
    seed: u64,
}

impl ArithmeticGenerator {
    /// A generator; fails on invalid knobs.
    pub fn new(config: ArithmeticConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, seed })
    }

    /// The knobs.
    pub fn config(&self) -> &ArithmeticConfig {
        &self.config
    }

    fn operand(&self, rng: &mut ChaCha8Rng) -> i64 {
        let d = uniform_in(
            rng,
            self.config.min_digits as i64,
            self.config.max_digits as i64,
        ) as u32;
        let lo = if d == 1 { 0 } else { 10i64.pow(d - 1) };
        uniform_in(rng, lo, 10i64.pow(d) - 1)
    }

    /// Instance `index`: `(a, op, b, answer)`.
    pub fn instance(&self, index: u64) -> (i64, ArithOp, i64, i64) {
        let mut rng = item_rng(self.seed, index);
        let ops = &self.config.ops;
        let op = ops[uniform_below(&mut rng, ops.len() as u64) as usize];
        let mut a = self.operand(&mut rng);
        let mut b = self.operand(&mut rng);
        match op {
            ArithOp::Add => (a, op, b, a + b),
            ArithOp::Sub => {
                if !self.config.allow_negative && a < b {
                    std::mem::swap(&mut a, &mut b);
                }
                (a, op, b, a - b)
            }
            ArithOp::Mul => (a, op, b, a * b),
            ArithOp::Div => {
                // b is the divisor (never 0), a the quotient: ask (a*b) / b.
                if b == 0 {
                    b = 1 + uniform_below(&mut rng, 9) as i64;
                }
                (a * b, op, b, a)
            }
        }
    }

    /// Example `index`: id `arithmetic-synth/{seed}/{index}`, domain `arithmetic`, reference the
    /// integer answer, `meta.expression` e.g. `"47 + 38"`.
    pub fn example(&self, index: u64) -> Example {
        let (a, op, b, ans) = self.instance(index);
        let expr = format!("{a} {} {b}", op.symbol());
        let mut meta = serde_json::Map::new();
        meta.insert("expression".into(), json!(expr));
        meta.insert("generator".into(), json!("arithmetic"));
        Example {
            id: format!("arithmetic-synth/{}/{index}", self.seed),
            domain: crate::domain::ARITHMETIC.into(),
            prompt: match self.config.template {
                MathTemplate::Terse => Prompt::Text(format!("{expr} =")),
                t => math_prompt(&format!("What is {expr}?"), t),
            },
            reference: Reference::Answer(ans.to_string()),
            meta,
        }
    }

    /// Examples `0..n`.
    pub fn generate(&self, n: u64) -> Vec<Example> {
        (0..n).map(|i| self.example(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent check: evaluate an equation string in floating point with a small
    /// recursive-descent parser (digits, + - * /, parentheses), the way the verifier does.
    fn eval(s: &str) -> Option<f64> {
        fn expr(t: &[char], i: &mut usize) -> Option<f64> {
            let mut v = term(t, i)?;
            while *i < t.len() && (t[*i] == '+' || t[*i] == '-') {
                let op = t[*i];
                *i += 1;
                let r = term(t, i)?;
                v = if op == '+' { v + r } else { v - r };
            }
            Some(v)
        }
        fn term(t: &[char], i: &mut usize) -> Option<f64> {
            let mut v = atom(t, i)?;
            while *i < t.len() && (t[*i] == '*' || t[*i] == '/') {
                let op = t[*i];
                *i += 1;
                let r = atom(t, i)?;
                if op == '/' && r == 0.0 {
                    return None;
                }
                v = if op == '*' { v * r } else { v / r };
            }
            Some(v)
        }
        fn atom(t: &[char], i: &mut usize) -> Option<f64> {
            if *i < t.len() && t[*i] == '(' {
                *i += 1;
                let v = expr(t, i)?;
                if *i >= t.len() || t[*i] != ')' {
                    return None;
                }
                *i += 1;
                return Some(v);
            }
            let start = *i;
            while *i < t.len() && t[*i].is_ascii_digit() {
                *i += 1;
            }
            t[start..*i].iter().collect::<String>().parse().ok()
        }
        let t: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
        let mut i = 0;
        let v = expr(&t, &mut i)?;
        (i == t.len()).then_some(v)
    }

    fn numbers_in(s: &str) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for c in s.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                cur.push(c);
            } else if !cur.is_empty() {
                out.push(cur.parse().unwrap());
                cur.clear();
            }
        }
        out.sort();
        out
    }

    fn check_solution(nums: &[i64], target: i64, sol: &str) {
        let mut sorted = nums.to_vec();
        sorted.sort();
        assert_eq!(numbers_in(sol), sorted, "numbers of `{sol}` vs {nums:?}");
        let v = eval(sol).unwrap_or_else(|| panic!("`{sol}` does not evaluate"));
        assert!(
            (v - target as f64).abs() < 1e-5,
            "`{sol}` = {v}, want {target}"
        );
    }

    /// Independent brute force: f64 arithmetic on a list, any pair, any op, until one is left.
    fn brute(vals: &[f64], target: f64) -> bool {
        if vals.len() == 1 {
            return (vals[0] - target).abs() < 1e-6;
        }
        for i in 0..vals.len() {
            for j in 0..vals.len() {
                if i == j {
                    continue;
                }
                let (a, b) = (vals[i], vals[j]);
                let rest: Vec<f64> = (0..vals.len())
                    .filter(|&k| k != i && k != j)
                    .map(|k| vals[k])
                    .collect();
                let mut cands = vec![a + b, a - b, a * b];
                if b != 0.0 {
                    cands.push(a / b);
                }
                for c in cands {
                    let mut next = rest.clone();
                    next.push(c);
                    if brute(&next, target) {
                        return true;
                    }
                }
            }
        }
        false
    }

    #[test]
    fn evaluator_sanity() {
        assert_eq!(eval("(1 + 2) / 3"), Some(1.0));
        assert_eq!(eval("2 * 3 + 4"), Some(10.0));
        assert_eq!(eval("2 - (3 - 4)"), Some(3.0));
        assert_eq!(eval("1 / 0"), None);
    }

    #[test]
    fn solver_finds_valid_equations() {
        let sol = solve_countdown(&[44, 19, 35], 98).unwrap();
        check_solution(&[44, 19, 35], 98, &sol);
        // Needs a fraction on the way: 8 / (3 - 8 / 3) = 24.
        let sol = solve_countdown(&[3, 3, 8, 8], 24).unwrap();
        check_solution(&[3, 3, 8, 8], 24, &sol);
        assert_eq!(solve_countdown(&[1, 1], 5), None);
        assert_eq!(solve_countdown(&[], 5), None);
        assert_eq!(solve_countdown(&[5], 5).as_deref(), Some("5"));
    }

    #[test]
    fn solver_agrees_with_brute_force() {
        let mut rng = item_rng(7, 0);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..300 {
            let n = uniform_in(&mut rng, 2, 4) as usize;
            let nums: Vec<i64> = (0..n).map(|_| uniform_in(&mut rng, 1, 12)).collect();
            let target = uniform_in(&mut rng, 1, 60);
            let fast = solve_countdown(&nums, target);
            let slow = brute(
                &nums.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                target as f64,
            );
            assert_eq!(fast.is_some(), slow, "{nums:?} -> {target}: {fast:?}");
            match fast {
                Some(sol) => {
                    check_solution(&nums, target, &sol);
                    yes += 1
                }
                None => no += 1,
            }
        }
        assert!(
            yes > 30 && no > 30,
            "both cases exercised: {yes} solvable, {no} not"
        );
    }

    #[test]
    fn generated_countdown_is_solvable_and_deterministic() {
        let configs = [
            CountdownConfig::default(),
            CountdownConfig {
                min_count: 2,
                max_count: 3,
                num_min: 1,
                num_max: 10,
                target_min: 1,
                target_max: 20,
                ..Default::default()
            },
            CountdownConfig {
                min_count: 5,
                max_count: 5,
                num_min: 1,
                num_max: 25,
                target_min: 100,
                target_max: 999,
                integer_only: true,
                ..Default::default()
            },
        ];
        for (k, c) in configs.into_iter().enumerate() {
            let g = CountdownGenerator::new(c.clone(), 42 + k as u64).unwrap();
            let n = if c.max_count >= 5 { 40 } else { 400 };
            for i in 0..n {
                let ex = g.example(i).unwrap();
                let Reference::Countdown { target, nums } = &ex.reference else {
                    panic!()
                };
                assert!((c.min_count..=c.max_count).contains(&nums.len()));
                assert!(nums.iter().all(|x| (c.num_min..=c.num_max).contains(x)));
                assert!((c.target_min..=c.target_max).contains(target));
                let sol = ex.meta["solution"].as_str().unwrap();
                check_solution(nums, *target, sol);
                if nums.len() <= 4 {
                    let f: Vec<f64> = nums.iter().map(|&x| x as f64).collect();
                    assert!(brute(&f, *target as f64));
                }
                assert_eq!(ex.id, format!("countdown-synth/{}/{i}", 42 + k as u64));
            }
            // Deterministic and random-access.
            let g2 = CountdownGenerator::new(c, 42 + k as u64).unwrap();
            assert_eq!(g.example(17).unwrap(), g2.example(17).unwrap());
            assert_eq!(
                g.generate(5).unwrap(),
                (0..5).map(|i| g2.example(i).unwrap()).collect::<Vec<_>>()
            );
        }
        let a = CountdownGenerator::new(CountdownConfig::default(), 1)
            .unwrap()
            .generate(20)
            .unwrap();
        let b = CountdownGenerator::new(CountdownConfig::default(), 2)
            .unwrap()
            .generate(20)
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn countdown_golden_values_are_stable() {
        // Pins the portable RNG path: changing it silently would change every recipe's data.
        let g = CountdownGenerator::new(CountdownConfig::default(), 0).unwrap();
        let (nums, target, sol) = g.instance(0).unwrap();
        let again = CountdownGenerator::new(CountdownConfig::default(), 0)
            .unwrap()
            .instance(0)
            .unwrap();
        assert_eq!((nums.clone(), target, sol.clone()), again);
        check_solution(&nums, target, &sol);
        let mut r = item_rng(0, 0);
        let first = r.next_u64();
        let mut r2 = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(first, r2.next_u64(), "stream 0 is the default stream");
    }

    #[test]
    fn six_numbers_classic_countdown() {
        // The TV-show shape: six numbers, a three-digit target. Exhaustive search stays fast.
        let c = CountdownConfig {
            min_count: 6,
            max_count: 6,
            num_min: 1,
            num_max: 100,
            target_min: 100,
            target_max: 999,
            ..Default::default()
        };
        let g = CountdownGenerator::new(c, 5).unwrap();
        let t = std::time::Instant::now();
        for i in 0..3 {
            let (nums, target, sol) = g.instance(i).unwrap();
            check_solution(&nums, target, &sol);
        }
        eprintln!("3 six-number instances in {:?}", t.elapsed());
        let sol = solve_countdown(&[25, 50, 75, 100, 3, 6], 952).unwrap();
        check_solution(&[25, 50, 75, 100, 3, 6], 952, &sol);
    }

    #[test]
    fn countdown_bad_knobs_rejected() {
        let bad = [
            CountdownConfig {
                min_count: 1,
                ..Default::default()
            },
            CountdownConfig {
                max_count: 7,
                ..Default::default()
            },
            CountdownConfig {
                num_min: 50,
                num_max: 10,
                ..Default::default()
            },
            CountdownConfig {
                target_min: 5,
                target_max: 1,
                ..Default::default()
            },
            // Unreachable: two numbers in 1..=2 can never make 1000.
            CountdownConfig {
                min_count: 2,
                max_count: 2,
                num_min: 1,
                num_max: 2,
                target_min: 1000,
                target_max: 1000,
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(matches!(
                CountdownGenerator::new(c, 0),
                Err(DataError::Config(_))
            ));
        }
    }

    #[test]
    fn arithmetic_answers_are_right() {
        let c = ArithmeticConfig {
            min_digits: 1,
            max_digits: 3,
            ops: vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div],
            ..Default::default()
        };
        let g = ArithmeticGenerator::new(c, 3).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let ex = g.example(i);
            let expr = ex.meta["expression"].as_str().unwrap();
            let want = eval(expr).unwrap();
            let Reference::Answer(ans) = &ex.reference else {
                panic!()
            };
            let ans: i64 = ans.parse().unwrap();
            assert_eq!(ans as f64, want, "{expr}");
            assert!(ans >= 0, "no negatives by default: {expr} = {ans}");
            let (a, op, b, _) = g.instance(i);
            seen.insert(op);
            if op != ArithOp::Div {
                assert!(a < 1000 && b < 1000);
            } else {
                assert!(b != 0 && a % b == 0);
            }
            assert_eq!(
                ex.prompt.as_text(),
                Some(format!("Question: What is {expr}?\nAnswer:").as_str())
            );
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(
            g.example(5),
            ArithmeticGenerator::new(g.config().clone(), 3)
                .unwrap()
                .example(5)
        );
        let neg = ArithmeticGenerator::new(
            ArithmeticConfig {
                ops: vec![ArithOp::Sub],
                allow_negative: true,
                ..Default::default()
            },
            1,
        )
        .unwrap();
        assert!((0..200).any(|i| neg.instance(i).3 < 0));
        assert!(
            ArithmeticGenerator::new(
                ArithmeticConfig {
                    max_digits: 10,
                    ..Default::default()
                },
                0
            )
            .is_err()
        );
        assert!(
            ArithmeticGenerator::new(
                ArithmeticConfig {
                    ops: vec![],
                    ..Default::default()
                },
                0
            )
            .is_err()
        );
    }

    #[test]
    fn arithmetic_digits_knob() {
        let g = ArithmeticGenerator::new(
            ArithmeticConfig {
                min_digits: 4,
                max_digits: 4,
                ops: vec![ArithOp::Add],
                ..Default::default()
            },
            9,
        )
        .unwrap();
        for i in 0..200 {
            let (a, _, b, s) = g.instance(i);
            assert!((1000..=9999).contains(&a) && (1000..=9999).contains(&b));
            assert_eq!(s, a + b);
        }
    }

    #[test]
    fn uniform_below_is_unbiased_enough() {
        let mut rng = item_rng(11, 0);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[uniform_below(&mut rng, 6) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }
}
