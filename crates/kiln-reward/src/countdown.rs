//! Countdown, exactly as TinyZero (`verl/utils/reward_score/countdown.py`) defines it.
//!
//! TinyZero's `compute_score(solution_str, ground_truth, format_score=0.1, score=1.0)`:
//!
//! 1. `extract_solution`: keep what follows the first `"Assistant:"` (else the first
//!    `"<|im_start|>assistant"`; with neither, return None), take the last line
//!    (`split('\n')[-1]`), and on it the last match of `<answer>(.*?)</answer>`, `.strip()`ped.
//!    No match: score 0.
//! 2. `validate_equation`: `sorted(int(n) for n in re.findall(r'\d+', eq)) == sorted(numbers)`,
//!    else `format_score`. Python's `\d` is any Unicode decimal digit (category Nd) and `int()`
//!    reads them, so `"３"` counts as 3 here.
//! 3. `evaluate_equation`: the equation must match `^[\d+\-*/().\s]+$`, then Python's `eval`.
//!    Any exception (syntax, division by zero, overflow, type error): `format_score`.
//! 4. `abs(result - target) < 1e-5`: 1.0, else `format_score`.
//!
//! kiln never evaluates code: [`evaluate_equation`] is a parser for exactly the Python
//! expressions that the character class lets through, with Python's semantics: integer literals
//! with leading zeros are a syntax error (`07`) but all-zero ones are fine (`00`); float literals
//! (`1.5`, `1.`, `.5`, `07.5`); unary `+`/`-`, which bind looser than `**` (`-2**2 == -4`); `**`
//! (right-associative), `*`, `/` (true division), `//` (floor division, also on floats);
//! arbitrary-precision integers (`7*8` stays exact); space, tab and form feed as whitespace, `\r`
//! as a newline (allowed inside parentheses only), every other whitespace character a syntax
//! error; a number followed by `(` is a call of an int, a TypeError; `...` is Ellipsis, whose use
//! in arithmetic is a TypeError; `()` is an empty tuple, likewise.
//!
//! Python's own limits are mirrored: more than 200 nested parentheses is a SyntaxError; a
//! chain of unary signs beyond [`MAX_UNARY_CHAIN`] is a RecursionError.
//!
//! Bounded work, where Python would not be: integers are capped at [`MAX_INT_BITS`] bits and
//! equations at [`MAX_EQUATION_LEN`] bytes; past either the equation scores `format_score` with the reason
//! recorded (Python would grind on `9**9**9**9` for hours; none of these can equal a Countdown
//! target without reusing numbers). A negative float raised to a fractional power is complex in
//! Python; kiln scores it `format_score` at once (Python would compare `abs(complex - target)`,
//! which is < 1e-5 only if later operations cancel the imaginary part).
//!
//! The one choice kiln makes: a verifier sees the response, not prompt + response. [`score`]
//! therefore treats the whole response as the text after the prompt's `"Assistant:"`, which is
//! what TinyZero sees with its prompts (the base prompt ends `"Assistant: Let me solve this step
//! by step.\n<think>"`). [`CountdownVerifier::score_full`] takes prompt + response and applies
//! TinyZero's split, quirks included.
//!
//! [`score`]: crate::Verifier::score

use std::time::Duration;

use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{Signed, ToPrimitive, Zero};

use crate::{Reference, Verdict, Verifier, budget};

/// Integers beyond this many bits are refused (Python would keep computing).
pub const MAX_INT_BITS: u64 = 1 << 16;
/// CPython's tokenizer refuses more than 200 nested brackets ("too many nested parentheses").
pub const MAX_PARENS: i64 = 200;
/// Parser recursion bound (parentheses and `**` right operands; CPython's paren limit comes first).
pub const MAX_DEPTH: usize = 1_000;
/// A chain of unary signs longer than this is an error. CPython's compiler raises RecursionError
/// somewhere between about 2,900 and 2,993 signs, depending on how deep in the stack `eval` is
/// called (the threshold cannot be mirrored exactly); kiln cuts at 2,900.
pub const MAX_UNARY_CHAIN: usize = 2_900;
/// Longest equation read (64 KiB, which bounds the token buffer to a few MiB); a longer one
/// scores the format score with the reason recorded. Python would evaluate it, but with each
/// number used once such an equation is whitespace or sign padding; a real Countdown answer is a
/// few dozen characters.
pub const MAX_EQUATION_LEN: usize = 1 << 16;

/// TinyZero's Countdown reward.
#[derive(Clone, Debug)]
pub struct CountdownVerifier {
    /// Score of a well-formed answer that is wrong (TinyZero: 0.1; the TRE recipes: 0).
    pub format_score: f64,
    /// Score of a right answer (TinyZero: 1.0).
    pub correct_score: f64,
    /// Time budget of one call.
    pub budget: Duration,
}

impl Default for CountdownVerifier {
    fn default() -> Self {
        CountdownVerifier {
            format_score: 0.1,
            correct_score: 1.0,
            budget: budget::DEFAULT_BUDGET,
        }
    }
}

impl CountdownVerifier {
    pub fn new(format_score: f64) -> Self {
        CountdownVerifier {
            format_score,
            ..Default::default()
        }
    }

    /// TinyZero's `compute_score` on prompt + response (the split on `"Assistant:"` included:
    /// text without either assistant marker scores 0).
    pub fn score_full(&self, prompt_and_response: &str, target: i64, nums: &[i64]) -> Verdict {
        match strip_to_assistant(prompt_and_response) {
            Some(after) => self.score_after_marker(after, target, nums),
            None => Verdict::new(0.0, false)
                .with_part("countdown", 0.0)
                .with_error("no \"Assistant:\" or \"<|im_start|>assistant\" marker"),
        }
    }

    /// Scores text that follows the assistant marker (a response).
    pub fn score_after_marker(&self, text: &str, target: i64, nums: &[i64]) -> Verdict {
        budget::scope(self.budget, || {
            let Some(eq) = extract_answer(text) else {
                return Verdict::new(0.0, false)
                    .with_part("countdown", 0.0)
                    .with_error("no <answer>...</answer> on the last line");
            };
            let judged = self.judge(eq, target, nums);
            let right = judged == Ok(true);
            let score = if right {
                self.correct_score
            } else {
                self.format_score
            };
            let mut v = Verdict::new(score, right)
                .with_part("countdown", score)
                .with_extracted(Some(crate::clip(eq)));
            v.error = judged.err();
            v
        })
    }

    /// Ok(true): right; Ok(false): well-formed but wrong; Err: why it has no value.
    fn judge(&self, eq: &str, target: i64, nums: &[i64]) -> Result<bool, String> {
        if eq.len() > MAX_EQUATION_LEN {
            return Err("equation too long".into());
        }
        if !validate_numbers(eq, nums) {
            return Err("numbers do not match (each exactly once)".into());
        }
        let v = evaluate_equation(eq).map_err(|e| e.to_string())?;
        Ok(v.close_to(target))
    }
}

impl Verifier for CountdownVerifier {
    fn score(&self, response: &str, reference: &Reference) -> Verdict {
        match reference {
            Reference::Countdown { target, nums } => {
                self.score_after_marker(response, *target, nums)
            }
            other => Verdict::failed(format!("countdown needs {{target, nums}}, got {other:?}")),
        }
    }
    fn name(&self) -> &str {
        "countdown"
    }
}

/// TinyZero's first step: the text after the first "Assistant:", else after the first
/// "<|im_start|>assistant", else None.
pub fn strip_to_assistant(s: &str) -> Option<&str> {
    if let Some(i) = s.find("Assistant:") {
        Some(&s[i + "Assistant:".len()..])
    } else {
        s.find("<|im_start|>assistant")
            .map(|i| &s[i + "<|im_start|>assistant".len()..])
    }
}

/// The last line (`split('\n')[-1]`), its last non-greedy `<answer>(.*?)</answer>` match, stripped
/// of Python whitespace.
pub fn extract_answer(text: &str) -> Option<&str> {
    let line = text.rsplit('\n').next().unwrap_or("");
    let (open, close) = ("<answer>", "</answer>");
    let mut pos = 0;
    let mut last = None;
    while let Some(s) = line[pos..].find(open) {
        let start = pos + s + open.len();
        let Some(e) = line[start..].find(close) else {
            break;
        };
        last = Some(&line[start..start + e]);
        pos = start + e + close.len();
    }
    last.map(py_strip)
}

/// Python's `str.isspace()` (also what `\s` matches in a `str` regex): Unicode White_Space plus
/// the information separators U+001C..U+001F.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Code points of the digit zero of every Unicode Nd block (Python 3.11, Unicode 14); each block
/// holds 0..9 consecutively.
const ND_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a Unicode decimal digit (what Python's `\d` matches and `int()` reads).
pub fn py_decimal(c: char) -> Option<u32> {
    let c = c as u32;
    if c <= 0x7f {
        return (0x30..=0x39).contains(&c).then(|| c - 0x30);
    }
    let i = ND_ZEROS.partition_point(|&z| z <= c);
    if i == 0 {
        return None;
    }
    let z = ND_ZEROS[i - 1];
    (c - z < 10).then(|| c - z)
}

/// TinyZero's `validate_equation`: the integers of `re.findall(r'\d+', eq)`, sorted, equal the
/// given numbers, sorted.
pub fn validate_numbers(eq: &str, nums: &[i64]) -> bool {
    let mut found: Vec<i128> = Vec::new();
    let mut cur: Option<(i128, bool)> = None; // (value, overflowed)
    for c in eq.chars().chain(std::iter::once(' ')) {
        match py_decimal(c) {
            Some(d) => {
                let (v, o) = cur.unwrap_or((0, false));
                let nv = v.checked_mul(10).and_then(|x| x.checked_add(d as i128));
                cur = Some(match nv {
                    Some(nv) if nv <= i64::MAX as i128 => (nv, o),
                    _ => (0, true),
                });
            }
            None => {
                if let Some((v, o)) = cur.take() {
                    // A number longer than i64 can never equal a given number.
                    if o {
                        return false;
                    }
                    found.push(v);
                }
            }
        }
        if found.len() > nums.len() {
            return false;
        }
    }
    let mut want: Vec<i128> = nums.iter().map(|&n| n as i128).collect();
    found.sort_unstable();
    want.sort_unstable();
    found == want
}

/// Why an equation has no value (each is an exception in TinyZero, hence `format_score`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("character outside [\\d+\\-*/().\\s]")]
    BadChar,
    #[error("SyntaxError: {0}")]
    Syntax(&'static str),
    #[error("ZeroDivisionError")]
    ZeroDivision,
    #[error("OverflowError")]
    Overflow,
    #[error("TypeError: {0}")]
    Type(&'static str),
    #[error("complex result (kiln stops here; Python would continue in complex numbers)")]
    Complex,
    #[error("integer beyond {MAX_INT_BITS} bits or nesting beyond {MAX_DEPTH} (kiln bound)")]
    TooLarge,
    #[error("time budget exceeded")]
    Budget,
}

impl From<budget::Exceeded> for EvalError {
    fn from(_: budget::Exceeded) -> Self {
        EvalError::Budget
    }
}

/// A Python number.
#[derive(Clone, Debug, PartialEq)]
pub enum PyNum {
    Int(BigInt),
    Float(f64),
}

impl PyNum {
    /// `abs(self - target) < 1e-5`, as Python computes it.
    pub fn close_to(&self, target: i64) -> bool {
        match self {
            PyNum::Int(i) => *i == BigInt::from(target),
            PyNum::Float(f) => (f - target as f64).abs() < 1e-5,
        }
    }
    pub fn to_f64(&self) -> Result<f64, EvalError> {
        match self {
            PyNum::Float(f) => Ok(*f),
            PyNum::Int(i) => int_to_float(i),
        }
    }
}

fn int_to_float(i: &BigInt) -> Result<f64, EvalError> {
    if let Some(v) = i.to_i64() {
        return Ok(v as f64);
    }
    match i.to_f64() {
        Some(f) if f.is_finite() => Ok(f),
        _ => Err(EvalError::Overflow),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(BigInt),
    Float(f64),
    Plus,
    Minus,
    Star,
    DStar,
    Slash,
    DSlash,
    LParen,
    RParen,
    /// `.` or `...`: any use is a SyntaxError or a TypeError.
    Dot,
}

/// Python's `eval` on an equation that TinyZero would pass to it.
pub fn evaluate_equation(eq: &str) -> Result<PyNum, EvalError> {
    // re.match(r'^[\d+\-*/().\s]+$', eq)
    if eq.is_empty()
        || !eq
            .chars()
            .all(|c| py_decimal(c).is_some() || "+-*/().".contains(c) || py_isspace(c))
    {
        return Err(EvalError::BadChar);
    }
    // eval() strips leading spaces and tabs.
    let toks = tokenize(eq.trim_start_matches([' ', '\t']))?;
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        depth: 0,
    };
    let v = p.expr()?;
    if p.pos != toks.len() {
        return Err(match toks[p.pos] {
            Tok::LParen => EvalError::Type("object is not callable"),
            _ => EvalError::Syntax("invalid syntax"),
        });
    }
    Ok(v)
}

fn tokenize(s: &str) -> Result<Vec<Tok>, EvalError> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut depth = 0i64;
    while i < b.len() {
        budget::check()?;
        let c = b[i];
        match c {
            b' ' | b'\t' | 0x0c => i += 1,
            b'\r' => {
                // A newline: fine inside brackets (implicit line joining), the end of the
                // statement outside (and more tokens follow, since the equation is stripped).
                if depth > 0 {
                    i += 1;
                } else {
                    return Err(EvalError::Syntax("invalid syntax"));
                }
            }
            b'0'..=b'9' | b'.' if c != b'.' || b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let mut is_float = false;
                if i < b.len() && b[i] == b'.' {
                    is_float = true;
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let lit = &s[start..i];
                if is_float {
                    let f: f64 = lit
                        .parse()
                        .map_err(|_| EvalError::Syntax("invalid decimal literal"))?;
                    toks.push(Tok::Float(f));
                } else {
                    if lit.len() > 1 && lit.starts_with('0') {
                        if lit.bytes().any(|d| d != b'0') {
                            return Err(EvalError::Syntax(
                                "leading zeros in decimal integer literals are not permitted",
                            ));
                        }
                        toks.push(Tok::Int(BigInt::zero()));
                        continue;
                    }
                    if lit.len() as u64 > MAX_INT_BITS / 3 {
                        return Err(EvalError::TooLarge);
                    }
                    toks.push(Tok::Int(
                        lit.parse().map_err(|_| EvalError::Syntax("bad integer"))?,
                    ));
                }
            }
            b'.' => {
                toks.push(Tok::Dot);
                i += if b.get(i + 1) == Some(&b'.') && b.get(i + 2) == Some(&b'.') {
                    3
                } else {
                    1
                };
            }
            b'+' => {
                toks.push(Tok::Plus);
                i += 1;
            }
            b'-' => {
                toks.push(Tok::Minus);
                i += 1;
            }
            b'*' => {
                if b.get(i + 1) == Some(&b'*') {
                    toks.push(Tok::DStar);
                    i += 2;
                } else {
                    toks.push(Tok::Star);
                    i += 1;
                }
            }
            b'/' => {
                if b.get(i + 1) == Some(&b'/') {
                    toks.push(Tok::DSlash);
                    i += 2;
                } else {
                    toks.push(Tok::Slash);
                    i += 1;
                }
            }
            b'(' => {
                depth += 1;
                if depth > MAX_PARENS {
                    return Err(EvalError::Syntax("too many nested parentheses"));
                }
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                depth -= 1;
                toks.push(Tok::RParen);
                i += 1;
            }
            // Any other character (non-ASCII digits, other whitespace) is invalid in Python source.
            _ => return Err(EvalError::Syntax("invalid character")),
        }
    }
    Ok(toks)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn enter(&mut self) -> Result<(), EvalError> {
        self.depth += 1;
        budget::check()?;
        if self.depth > MAX_DEPTH {
            Err(EvalError::TooLarge)
        } else {
            Ok(())
        }
    }

    // expr := term (('+'|'-') term)*
    fn expr(&mut self) -> Result<PyNum, EvalError> {
        let mut acc = self.term()?;
        while let Some(op @ (Tok::Plus | Tok::Minus)) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.term()?;
            acc = if op == Tok::Plus {
                add(acc, rhs, false)?
            } else {
                add(acc, rhs, true)?
            };
        }
        Ok(acc)
    }

    // term := factor (('*'|'/'|'//') factor)*
    fn term(&mut self) -> Result<PyNum, EvalError> {
        let mut acc = self.factor()?;
        while let Some(op @ (Tok::Star | Tok::Slash | Tok::DSlash)) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.factor()?;
            acc = match op {
                Tok::Star => mul(acc, rhs)?,
                Tok::Slash => truediv(acc, rhs)?,
                _ => floordiv(acc, rhs)?,
            };
        }
        Ok(acc)
    }

    // factor := ('+'|'-') factor | power   (the sign chain is read in a loop, not recursively)
    fn factor(&mut self) -> Result<PyNum, EvalError> {
        let mut negate = false;
        let mut signs = 0usize;
        while let Some(t @ (Tok::Plus | Tok::Minus)) = self.peek() {
            negate ^= *t == Tok::Minus;
            signs += 1;
            self.pos += 1;
        }
        if signs > MAX_UNARY_CHAIN {
            return Err(EvalError::Syntax("RecursionError: unary chain too long"));
        }
        let v = self.power()?;
        if !negate {
            return Ok(v);
        }
        Ok(match v {
            PyNum::Int(i) => PyNum::Int(-i),
            PyNum::Float(f) => PyNum::Float(-f),
        })
    }

    // power := primary ['**' factor]
    fn power(&mut self) -> Result<PyNum, EvalError> {
        let base = self.primary()?;
        if self.peek() == Some(&Tok::DStar) {
            self.pos += 1;
            self.enter()?;
            let exp = self.factor()?;
            self.depth -= 1;
            return pow(base, exp);
        }
        Ok(base)
    }

    // primary := NUMBER | '(' expr ')'   (a call `x(...)` is a TypeError, caught by the caller)
    fn primary(&mut self) -> Result<PyNum, EvalError> {
        let r = match self.peek().cloned() {
            Some(Tok::Int(i)) => {
                self.pos += 1;
                PyNum::Int(i)
            }
            Some(Tok::Float(f)) => {
                self.pos += 1;
                PyNum::Float(f)
            }
            Some(Tok::LParen) => {
                self.enter()?;
                self.pos += 1;
                if self.peek() == Some(&Tok::RParen) {
                    // `()` is an empty tuple: arithmetic on it (or comparing it) is a TypeError,
                    // unless it is a syntax error first.
                    return Err(EvalError::Type("tuple in arithmetic"));
                }
                let v = self.expr()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(EvalError::Syntax("'(' was never closed"));
                }
                self.pos += 1;
                self.depth -= 1;
                v
            }
            Some(Tok::Dot) => return Err(EvalError::Type("Ellipsis in arithmetic")),
            _ => return Err(EvalError::Syntax("invalid syntax")),
        };
        if self.peek() == Some(&Tok::LParen) {
            return Err(EvalError::Type("object is not callable"));
        }
        Ok(r)
    }
}

fn check_int(i: BigInt) -> Result<PyNum, EvalError> {
    if i.bits() > MAX_INT_BITS {
        Err(EvalError::TooLarge)
    } else {
        Ok(PyNum::Int(i))
    }
}

fn add(a: PyNum, b: PyNum, sub: bool) -> Result<PyNum, EvalError> {
    match (a, b) {
        (PyNum::Int(x), PyNum::Int(y)) => check_int(if sub { x - y } else { x + y }),
        (a, b) => {
            let (x, y) = (a.to_f64()?, b.to_f64()?);
            Ok(PyNum::Float(if sub { x - y } else { x + y }))
        }
    }
}

fn mul(a: PyNum, b: PyNum) -> Result<PyNum, EvalError> {
    match (a, b) {
        (PyNum::Int(x), PyNum::Int(y)) => {
            if x.bits() + y.bits() > MAX_INT_BITS + 1 {
                return Err(EvalError::TooLarge);
            }
            check_int(x * y)
        }
        (a, b) => Ok(PyNum::Float(a.to_f64()? * b.to_f64()?)),
    }
}

fn truediv(a: PyNum, b: PyNum) -> Result<PyNum, EvalError> {
    match (a, b) {
        (PyNum::Int(x), PyNum::Int(y)) => {
            if y.is_zero() {
                return Err(EvalError::ZeroDivision);
            }
            const EXACT: u64 = 53;
            if x.bits() <= EXACT && y.bits() <= EXACT {
                return Ok(PyNum::Float(
                    x.to_f64().unwrap_or(f64::NAN) / y.to_f64().unwrap_or(f64::NAN),
                ));
            }
            // Python divides big ints exactly, then rounds once.
            match BigRational::new(x, y).to_f64() {
                Some(f) if f.is_finite() => Ok(PyNum::Float(f)),
                _ => Err(EvalError::Overflow),
            }
        }
        (a, b) => {
            let (x, y) = (a.to_f64()?, b.to_f64()?);
            if y == 0.0 {
                return Err(EvalError::ZeroDivision);
            }
            Ok(PyNum::Float(x / y))
        }
    }
}

fn floordiv(a: PyNum, b: PyNum) -> Result<PyNum, EvalError> {
    match (a, b) {
        (PyNum::Int(x), PyNum::Int(y)) => {
            if y.is_zero() {
                return Err(EvalError::ZeroDivision);
            }
            Ok(PyNum::Int(x.div_floor(&y)))
        }
        (a, b) => {
            let (vx, wx) = (a.to_f64()?, b.to_f64()?);
            if wx == 0.0 {
                return Err(EvalError::ZeroDivision);
            }
            Ok(PyNum::Float(py_float_floordiv(vx, wx)))
        }
    }
}

/// CPython's `_float_div_mod`, floor-division half.
fn py_float_floordiv(vx: f64, wx: f64) -> f64 {
    let m = vx % wx; // fmod
    let mut div = (vx - m) / wx;
    if m != 0.0 && ((wx < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut fd = div.floor();
        if div - fd > 0.5 {
            fd += 1.0;
        }
        fd
    } else {
        0.0f64.copysign(vx / wx)
    }
}

fn pow(a: PyNum, b: PyNum) -> Result<PyNum, EvalError> {
    if let (PyNum::Int(x), PyNum::Int(y)) = (&a, &b) {
        if !y.is_negative() {
            // Exact integer power, bounded.
            if x.is_zero() || x.abs() == BigInt::from(1) {
                let odd = y.is_odd();
                return Ok(PyNum::Int(if x.is_zero() {
                    if y.is_zero() {
                        BigInt::from(1)
                    } else {
                        BigInt::zero()
                    }
                } else if x.is_negative() && odd {
                    BigInt::from(-1)
                } else {
                    BigInt::from(1)
                }));
            }
            let e = y.to_u64().ok_or(EvalError::TooLarge)?;
            if (x.bits() - 1).saturating_mul(e) > MAX_INT_BITS {
                return Err(EvalError::TooLarge);
            }
            return check_int(x.pow(e as u32));
        }
        // int ** negative int: float power; 0 ** -n is a ZeroDivisionError.
        if x.is_zero() {
            return Err(EvalError::ZeroDivision);
        }
    }
    let (x, y) = (a.to_f64()?, b.to_f64()?);
    py_float_pow(x, y).map(PyNum::Float)
}

/// CPython's `float_pow`, minus the complex branch.
fn py_float_pow(iv: f64, iw: f64) -> Result<f64, EvalError> {
    if iw == 0.0 {
        return Ok(1.0);
    }
    if iv.is_nan() {
        return Ok(iv);
    }
    if iw.is_nan() {
        return Ok(if iv == 1.0 { 1.0 } else { iw });
    }
    if iw.is_infinite() || iv.is_infinite() {
        return Ok(iv.powf(iw));
    }
    if iv == 0.0 {
        if iw < 0.0 {
            return Err(EvalError::ZeroDivision);
        }
        return Ok(iv.powf(iw));
    }
    if iv < 0.0 && iw != iw.floor() {
        return Err(EvalError::Complex);
    }
    let r = iv.powf(iw);
    if r.is_infinite() {
        Err(EvalError::Overflow)
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Result<PyNum, EvalError> {
        evaluate_equation(s)
    }
    fn int(i: i64) -> PyNum {
        PyNum::Int(BigInt::from(i))
    }

    // Every expectation below was checked against CPython 3.11's eval.
    #[test]
    fn python_semantics() {
        assert_eq!(ev("-2**2"), Ok(int(-4)));
        assert_eq!(ev("2**-1"), Ok(PyNum::Float(0.5)));
        assert_eq!(ev("2**3**2"), Ok(int(512)));
        assert_eq!(ev("7//2"), Ok(int(3)));
        assert_eq!(ev("-7//2"), Ok(int(-4)));
        assert_eq!(ev("7.5//2"), Ok(PyNum::Float(3.0)));
        assert_eq!(ev("-7.5//2"), Ok(PyNum::Float(-4.0)));
        assert_eq!(ev("0.1+0.2"), Ok(PyNum::Float(0.30000000000000004)));
        assert_eq!(ev("00"), Ok(int(0)));
        assert_eq!(ev("007.5"), Ok(PyNum::Float(7.5)));
        assert_eq!(ev("08."), Ok(PyNum::Float(8.0)));
        assert_eq!(ev(".5*4"), Ok(PyNum::Float(2.0)));
        assert_eq!(ev("+-+3"), Ok(int(-3)));
        assert_eq!(ev("3 - - 2"), Ok(int(5)));
        assert_eq!(ev("1+\t2"), Ok(int(3)));
        assert_eq!(ev("1+\x0c2"), Ok(int(3)));
        assert_eq!(ev("(1+\r2)"), Ok(int(3)));
        assert_eq!(ev("(-8)**2.0"), Ok(PyNum::Float(64.0)));
        assert_eq!(ev("2**0.5"), Ok(PyNum::Float(std::f64::consts::SQRT_2)));
        assert!(matches!(ev("07"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("1+\r2"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("1+\x0b2"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("1+\u{a0}2"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("1..2"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("1 .5"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("1 2"), Err(EvalError::Syntax(_))));
        assert!(matches!(ev("2(3)"), Err(EvalError::Type(_))));
        assert!(matches!(ev("..."), Err(EvalError::Type(_))));
        assert!(matches!(ev("()"), Err(EvalError::Type(_))));
        assert_eq!(ev("1/0"), Err(EvalError::ZeroDivision));
        assert_eq!(ev("1//0"), Err(EvalError::ZeroDivision));
        assert_eq!(ev("1.0//0.0"), Err(EvalError::ZeroDivision));
        assert_eq!(ev("0**-1"), Err(EvalError::ZeroDivision));
        assert_eq!(ev("10.0**400"), Err(EvalError::Overflow));
        assert_eq!(ev("(-8)**(1/3)"), Err(EvalError::Complex));
        assert_eq!(ev("1e5"), Err(EvalError::BadChar));
        assert_eq!(ev("9**9**9**9"), Err(EvalError::TooLarge));
        // CPython: 200 nested parentheses are fine, 201 are a SyntaxError.
        let nest = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(ev(&nest(200)), Ok(int(1)));
        assert!(matches!(ev(&nest(201)), Err(EvalError::Syntax(_))));
        // Long sign chains evaluate (CPython 3.11: up to ~2,900 at any stack depth).
        assert_eq!(ev(&format!("{}1", "-".repeat(2001))), Ok(int(-1)));
        assert!(matches!(
            ev(&format!("{}1", "-".repeat(5000))),
            Err(EvalError::Syntax(_))
        ));
        assert!(ev(&"2**".repeat(100_000)).is_err());
    }

    #[test]
    fn unicode_digits_count_for_validation() {
        assert_eq!(py_decimal('３'), Some(3));
        assert_eq!(py_decimal('٧'), Some(7));
        assert_eq!(py_decimal('x'), None);
        assert_eq!(py_decimal('²'), None); // superscripts are No, not Nd
        assert!(validate_numbers("３+4", &[4, 3]));
        assert!(validate_numbers("03 + 4", &[3, 4]));
        assert!(!validate_numbers("3 + 4 + 5", &[3, 4]));
        assert!(!validate_numbers("99999999999999999999999 + 4", &[3, 4]));
    }
}
