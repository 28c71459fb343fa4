//! A bounded LaTeX parser for final answers: numbers, fractions, surds, pi, powers, functions,
//! implicit products, mixed numbers, percentages, `\pm`, tuples, intervals and their unions,
//! sets, equations, matrices and text.
//!
//! Bounds: at most [`MAX_TOKENS`] tokens and [`MAX_DEPTH`] levels of nesting; every loop checks
//! the time budget. Anything outside the grammar is a parse failure (the caller then falls back
//! to string comparison), never a panic.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;

use crate::budget;

pub const MAX_TOKENS: usize = 2_000;
pub const MAX_DEPTH: usize = 64;

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum E {
    /// An exact rational (integer literals, and what they build).
    Rat(BigRational),
    /// A decimal literal or a percentage: compared with a relative tolerance.
    Dec(BigRational),
    Sym(String),
    Pi,
    Inf,
    Neg(Box<E>),
    Add(Vec<E>),
    Mul(Vec<E>),
    Div(Box<E>, Box<E>),
    Pow(Box<E>, Box<E>),
    /// n-th root (None: square root).
    Root(Box<E>, Option<Box<E>>),
    Func(String, Box<E>),
    Fact(Box<E>),
    Binom(Box<E>, Box<E>),
    /// `a \pm b` (sign +1 / -1 chosen on expansion).
    Pm(Box<E>, Box<E>),
}

/// A parsed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Expr(E),
    /// `(a, b, ...)`: ordered.
    Tuple(Vec<Value>),
    /// `[a, b]`, `(a, b]`, `[a, b)` (and `(a, b)` compares equal to the 2-tuple).
    Interval {
        lo: E,
        hi: E,
        lo_closed: bool,
        hi_closed: bool,
    },
    Union(Vec<Value>),
    /// `\{a, b\}` or a bare list `a, b`: unordered.
    Set(Vec<Value>),
    Eq(E, E),
    Matrix(Vec<Vec<E>>),
    Text(String),
}

#[derive(Clone, Debug, PartialEq)]
enum T {
    Num(String),
    Ident(char),
    Cmd(String),
    Op(char),
    SetOpen,
    SetClose,
    RowSep,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub &'static str);

type R<X> = Result<X, ParseError>;

impl From<budget::Exceeded> for ParseError {
    fn from(_: budget::Exceeded) -> Self {
        ParseError("time budget exceeded")
    }
}

const FUNCS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "ln", "log", "exp", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh",
];
const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];
/// Commands dropped before tokenizing (spacing, sizing).
const DROP: &[&str] = &[
    "\\left",
    "\\right",
    "\\displaystyle",
    "\\textstyle",
    "\\bigl",
    "\\bigr",
    "\\Bigl",
    "\\Bigr",
    "\\big",
    "\\Big",
    "\\quad",
    "\\qquad",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "\\$",
    "$",
];

fn tokenize(s: &str) -> R<Vec<T>> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        budget::check()?;
        if out.len() > MAX_TOKENS {
            return Err(ParseError("too many tokens"));
        }
        let c = cs[i];
        if c.is_whitespace() || c == '~' {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && cs.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let st = i;
            while i < cs.len() && cs[i].is_ascii_digit() {
                i += 1;
            }
            if i < cs.len() && cs[i] == '.' && cs.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                i += 1;
                while i < cs.len() && cs[i].is_ascii_digit() {
                    i += 1;
                }
                // Computer scientific notation after a decimal mantissa: "6.72e-5", "1.5E3"
                // (not after an integer: "2e" is 2 times e).
                if let Some(j) = sci_exponent_end(&cs, i) {
                    i = j;
                }
            }
            out.push(T::Num(cs[st..i].iter().collect()));
        } else if c.is_ascii_alphabetic() {
            out.push(T::Ident(c));
            i += 1;
        } else if c == '\\' {
            let st = i + 1;
            i += 1;
            if i < cs.len() && !cs[i].is_ascii_alphabetic() {
                let d = cs[i];
                i += 1;
                match d {
                    '{' => out.push(T::SetOpen),
                    '}' => out.push(T::SetClose),
                    '\\' => out.push(T::RowSep),
                    '%' => out.push(T::Op('%')),
                    _ => return Err(ParseError("unknown escape")),
                }
                continue;
            }
            while i < cs.len() && cs[i].is_ascii_alphabetic() {
                i += 1;
            }
            let name: String = cs[st..i].iter().collect();
            if name.is_empty() {
                return Err(ParseError("lone backslash"));
            }
            out.push(T::Cmd(name));
        } else if "+-*/^_()[]{},=!|&%<>:;'".contains(c) {
            out.push(T::Op(c));
            i += 1;
        } else if c == '\u{1}' {
            out.push(T::RowSep);
            i += 1;
        } else if c == '×' || c == '·' {
            out.push(T::Op('*'));
            i += 1;
        } else if c == '−' {
            out.push(T::Op('-'));
            i += 1;
        } else if c == '÷' {
            out.push(T::Op('/'));
            i += 1;
        } else if c == 'π' {
            out.push(T::Cmd("pi".into()));
            i += 1;
        } else if c == '√' {
            out.push(T::Cmd("sqrt".into()));
            i += 1;
        } else if c == '∞' {
            out.push(T::Cmd("infty".into()));
            i += 1;
        } else {
            return Err(ParseError("unexpected character"));
        }
    }
    Ok(out)
}

/// Light clean-up before parsing (not the string normalisation used for equality).
pub fn preclean(s: &str) -> String {
    // Row separators first, so that "\\ " is not read as "\" + "\ ".
    let mut s = s.trim().replace("\\\\", " \u{1} ");
    // "10,\!080" is one number, "81, 256" two: decide before spacing commands become spaces.
    let thousands_raw = !s.contains(", ") || s.contains(",\\!");
    for (a, b) in [
        ("\\text{, and }", ","),
        ("\\text{ and }", ","),
        ("\\text{and }", ","),
        ("\\text{ and}", ","),
        ("\\mathbf{", "{"),
        ("\\boldsymbol{", "{"),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\circ", ""),
        ("°", ""),
    ] {
        s = s.replace(a, b);
    }
    for d in DROP {
        s = s.replace(d, " ");
    }
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ");
    // Units and other words after a number: "5.4 \text{ cents}", "15\mbox{ cm}^2".
    s = strip_trailing_text_units(&s);
    let t = s.trim().trim_end_matches('.').trim();
    // "x \in [a, b]"
    let t = match t.find("\\in") {
        Some(i) if t[..i].trim().chars().count() == 1 && !t[i..].starts_with("\\inf") => {
            t[i + 3..].trim()
        }
        _ => t,
    };
    // Thousands separators: "10,080", "11,111,111,100".
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    if thousands_raw && is_thousands(&compact) {
        return compact.replace(',', "");
    }
    t.to_string()
}

fn is_thousands(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let groups: Vec<&str> = int.split(',').collect();
    groups.len() >= 2
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
}

/// Removes `\text{...}`/`\mbox{...}`/`\textnormal{...}` groups (and a following `^2`/`^3`) that come
/// after something else, e.g. units: "5.4 \text{ cents}" -> "5.4".
fn strip_trailing_text_units(s: &str) -> String {
    let mut s = s.to_string();
    for _ in 0..4 {
        let t = s.trim_end();
        let mut changed = false;
        for cmd in [
            "\\text{",
            "\\mbox{",
            "\\textnormal{",
            "\\textrm{",
            "\\mathrm{",
        ] {
            if let Some(i) = t.rfind(cmd) {
                let before = t[..i].trim();
                if before.is_empty() || !before.chars().any(|c| c.is_ascii_digit()) {
                    continue;
                }
                // The group must close and be followed only by an optional power.
                let body = &t[i + cmd.len()..];
                let Some(close) = body.find('}') else {
                    continue;
                };
                let word = &body[..close];
                if !word
                    .chars()
                    .all(|c| c.is_alphabetic() || c == ' ' || c == '.')
                {
                    continue;
                }
                let after = body[close + 1..].trim();
                if after.is_empty() || ["^2", "^3", "^{2}", "^{3}"].contains(&after) {
                    s = before.to_string();
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    s
}

struct P {
    t: Vec<T>,
    i: usize,
    depth: usize,
}

fn rat(n: i64) -> BigRational {
    BigRational::from_integer(BigInt::from(n))
}

/// Parses a number literal ("12", "1.5", ".5") into an expression.
/// The end of an exponent "e-5" / "E+12" starting at `i`, when one is there and is not followed
/// by a letter.
fn sci_exponent_end(cs: &[char], i: usize) -> Option<usize> {
    if !matches!(cs.get(i), Some('e') | Some('E')) {
        return None;
    }
    let mut j = i + 1;
    if matches!(cs.get(j), Some('+') | Some('-')) {
        j += 1;
    }
    let digits = j;
    while j < cs.len() && cs[j].is_ascii_digit() {
        j += 1;
    }
    let ok = j > digits && j - digits <= 4 && !cs.get(j).is_some_and(|c| c.is_alphabetic());
    ok.then_some(j)
}

fn num_expr(s: &str) -> R<E> {
    if s.len() > 400 {
        return Err(ParseError("number too long"));
    }
    if let Some(k) = s.find(['e', 'E']) {
        let exp: i32 = s[k + 1..].parse().map_err(|_| ParseError("bad exponent"))?;
        let E::Dec(m) = num_expr(&s[..k])? else {
            return Err(ParseError("bad mantissa"));
        };
        let p = BigRational::from_integer(num_traits::pow(
            BigInt::from(10),
            exp.unsigned_abs() as usize,
        ));
        return Ok(E::Dec(if exp < 0 { m / p } else { m * p }));
    }
    match s.split_once('.') {
        None => Ok(E::Rat(BigRational::from_integer(
            s.parse::<BigInt>().map_err(|_| ParseError("bad int"))?,
        ))),
        Some((a, b)) => {
            let digits: BigInt = format!("{a}{b}")
                .parse()
                .map_err(|_| ParseError("bad decimal"))?;
            let den = num_traits::pow(BigInt::from(10), b.len());
            Ok(E::Dec(BigRational::new(digits, den)))
        }
    }
}

impl P {
    fn peek(&self) -> Option<&T> {
        self.t.get(self.i)
    }
    fn next(&mut self) -> Option<T> {
        let r = self.t.get(self.i).cloned();
        self.i += 1;
        r
    }
    fn eat(&mut self, t: &T) -> bool {
        if self.peek() == Some(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &T) -> R<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(ParseError("expected token"))
        }
    }
    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        budget::check()?;
        if self.depth > MAX_DEPTH {
            Err(ParseError("nesting too deep"))
        } else {
            Ok(())
        }
    }

    // expr := ['+'|'-'] term (('+'|'-'|'\pm'|'\mp') term)*
    fn expr(&mut self) -> R<E> {
        self.enter()?;
        let mut terms = Vec::new();
        let mut first = true;
        loop {
            budget::check()?;
            let sign = match self.peek() {
                Some(T::Op('+')) => {
                    self.i += 1;
                    1
                }
                Some(T::Op('-')) => {
                    self.i += 1;
                    -1
                }
                Some(T::Cmd(c)) if c == "pm" || c == "mp" => {
                    self.i += 1;
                    2
                }
                _ if first => 1,
                _ => break,
            };
            let t = self.term()?;
            let t = match sign {
                1 => t,
                -1 => E::Neg(Box::new(t)),
                _ => {
                    let lhs = if terms.is_empty() {
                        E::Rat(BigRational::zero())
                    } else {
                        E::Add(std::mem::take(&mut terms))
                    };
                    terms.push(E::Pm(Box::new(lhs), Box::new(t)));
                    first = false;
                    continue;
                }
            };
            terms.push(t);
            first = false;
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.pop().unwrap()
        } else {
            E::Add(terms)
        })
    }

    fn starts_atom(&self) -> bool {
        match self.peek() {
            Some(T::Num(_)) | Some(T::Ident(_)) => true,
            Some(T::Op('(')) | Some(T::Op('{')) | Some(T::Op('[')) => true,
            Some(T::Cmd(c)) => {
                matches!(
                    c.as_str(),
                    "frac"
                        | "sqrt"
                        | "pi"
                        | "infty"
                        | "binom"
                        | "text"
                        | "mathrm"
                        | "mbox"
                        | "operatorname"
                ) || FUNCS.contains(&c.as_str())
                    || GREEK.contains(&c.as_str())
            }
            _ => false,
        }
    }

    // term := unary (('*'|'/'|'\cdot'|'\times'|'\div') unary | implicit unary)*
    fn term(&mut self) -> R<E> {
        self.enter()?;
        let first_is_int = matches!(self.peek(), Some(T::Num(n)) if !n.contains('.'));
        let mut acc = self.unary()?;
        let mut factors = 1;
        loop {
            budget::check()?;
            match self.peek() {
                Some(T::Op('*')) => {
                    self.i += 1;
                    let r = self.unary()?;
                    acc = mul(acc, r);
                }
                Some(T::Cmd(c)) if c == "cdot" || c == "times" => {
                    self.i += 1;
                    let r = self.unary()?;
                    acc = mul(acc, r);
                }
                Some(T::Op('/')) => {
                    self.i += 1;
                    let r = self.unary()?;
                    acc = E::Div(Box::new(acc), Box::new(r));
                }
                Some(T::Cmd(c)) if c == "div" => {
                    self.i += 1;
                    let r = self.unary()?;
                    acc = E::Div(Box::new(acc), Box::new(r));
                }
                _ if self.starts_atom() => {
                    let mixed = first_is_int
                        && factors == 1
                        && matches!(self.peek(), Some(T::Cmd(c)) if c == "frac");
                    let r = self.postfix()?;
                    // A mixed number: an integer then a numeric fraction, "1\frac{4}{5}".
                    if mixed && is_int_frac(&r) {
                        acc = E::Add(vec![acc, r]);
                    } else {
                        acc = mul(acc, r);
                    }
                }
                _ => break,
            }
            factors += 1;
        }
        self.depth -= 1;
        Ok(acc)
    }

    fn unary(&mut self) -> R<E> {
        self.enter()?;
        let r = match self.peek() {
            Some(T::Op('-')) => {
                self.i += 1;
                E::Neg(Box::new(self.unary()?))
            }
            Some(T::Op('+')) => {
                self.i += 1;
                self.unary()?
            }
            _ => self.postfix()?,
        };
        self.depth -= 1;
        Ok(r)
    }

    fn postfix(&mut self) -> R<E> {
        let mut a = self.atom()?;
        loop {
            budget::check()?;
            match self.peek() {
                Some(T::Op('^')) => {
                    self.i += 1;
                    let e = self.arg()?;
                    a = E::Pow(Box::new(a), Box::new(e));
                }
                Some(T::Op('!')) => {
                    self.i += 1;
                    a = E::Fact(Box::new(a));
                }
                Some(T::Op('%')) => {
                    self.i += 1;
                    a = E::Div(Box::new(a), Box::new(E::Dec(rat(100))));
                }
                Some(T::Op('_')) => {
                    // A subscript: part of a name ("x_1", "a_{n}"); a base ("52_8") makes the
                    // whole an opaque symbol.
                    self.i += 1;
                    let sub = self.raw_arg()?;
                    a = E::Sym(format!(
                        "{}_{}",
                        sym_name(&a).ok_or(ParseError("subscript on non-symbol"))?,
                        sub
                    ));
                }
                _ => break,
            }
        }
        Ok(a)
    }

    /// A macro argument: `{...}`, or a single token (one digit of a number).
    fn arg(&mut self) -> R<E> {
        self.enter()?;
        let r = match self.peek().cloned() {
            Some(T::Op('{')) => {
                self.i += 1;
                let e = self.expr()?;
                self.expect(&T::Op('}'))?;
                e
            }
            Some(T::Num(n)) => {
                let mut ch = n.chars();
                let first = ch.next().unwrap_or('0');
                let rest: String = ch.collect();
                if first == '.' {
                    self.i += 1;
                    num_expr(&n)?
                } else {
                    if rest.is_empty() {
                        self.i += 1;
                    } else {
                        self.t[self.i] = T::Num(rest);
                    }
                    E::Rat(rat(first.to_digit(10).unwrap_or(0) as i64))
                }
            }
            Some(T::Op('-')) => {
                self.i += 1;
                E::Neg(Box::new(self.arg()?))
            }
            _ => self.atom()?,
        };
        self.depth -= 1;
        Ok(r)
    }

    /// A subscript as raw text.
    fn raw_arg(&mut self) -> R<String> {
        match self.next() {
            Some(T::Op('{')) => {
                let mut s = String::new();
                loop {
                    budget::check()?;
                    match self.next() {
                        Some(T::Op('}')) => break,
                        Some(T::Num(n)) => s.push_str(&n),
                        Some(T::Ident(c)) => s.push(c),
                        _ => return Err(ParseError("bad subscript")),
                    }
                }
                Ok(s)
            }
            Some(T::Num(n)) => Ok(n),
            Some(T::Ident(c)) => Ok(c.to_string()),
            _ => Err(ParseError("bad subscript")),
        }
    }

    fn atom(&mut self) -> R<E> {
        self.enter()?;
        let r = match self.next() {
            Some(T::Num(n)) => {
                if self.peek() == Some(&T::Op('_')) {
                    self.i += 1;
                    let sub = self.raw_arg()?;
                    E::Sym(format!("{n}_{sub}"))
                } else {
                    num_expr(&n)?
                }
            }
            Some(T::Ident(c)) => E::Sym(c.to_string()),
            Some(T::Op('(')) => {
                let e = self.expr()?;
                self.expect(&T::Op(')'))?;
                e
            }
            Some(T::Op('[')) => {
                let e = self.expr()?;
                self.expect(&T::Op(']'))?;
                e
            }
            Some(T::Op('{')) => {
                let e = self.expr()?;
                self.expect(&T::Op('}'))?;
                e
            }
            Some(T::Cmd(c)) => match c.as_str() {
                "pi" => E::Pi,
                "infty" => E::Inf,
                "frac" => {
                    let a = self.arg()?;
                    let b = self.arg()?;
                    E::Div(Box::new(a), Box::new(b))
                }
                "binom" => {
                    let a = self.arg()?;
                    let b = self.arg()?;
                    E::Binom(Box::new(a), Box::new(b))
                }
                "sqrt" => {
                    let idx = if self.eat(&T::Op('[')) {
                        let e = self.expr()?;
                        self.expect(&T::Op(']'))?;
                        Some(Box::new(e))
                    } else {
                        None
                    };
                    let a = self.arg()?;
                    E::Root(Box::new(a), idx)
                }
                "text" | "mathrm" | "mbox" | "textbf" | "operatorname" | "textnormal"
                | "textrm" => {
                    self.expect(&T::Op('{'))?;
                    let mut s = String::new();
                    loop {
                        budget::check()?;
                        match self.next() {
                            Some(T::Op('}')) => break,
                            Some(T::Ident(c)) => s.push(c),
                            Some(T::Num(n)) => s.push_str(&n),
                            _ => return Err(ParseError("text in an expression")),
                        }
                    }
                    if FUNCS.contains(&s.as_str()) {
                        self.func(s)?
                    } else {
                        E::Sym(s)
                    }
                }
                f if FUNCS.contains(&f) => self.func(f.to_string())?,
                g if GREEK.contains(&g) => E::Sym(format!("\\{g}")),
                _ => return Err(ParseError("unknown command")),
            },
            _ => return Err(ParseError("expected an atom")),
        };
        self.depth -= 1;
        Ok(r)
    }

    fn func(&mut self, name: String) -> R<E> {
        // \sin^2 x
        let power = if self.eat(&T::Op('^')) {
            Some(self.arg()?)
        } else {
            None
        };
        let arg = match self.peek() {
            Some(T::Op('(')) | Some(T::Op('{')) => self.atom()?,
            _ => {
                // "\cot x", "\sin 2x": an implicit product of postfix atoms.
                let mut a = self.postfix()?;
                while matches!(self.peek(), Some(T::Num(_)) | Some(T::Ident(_)))
                    || matches!(self.peek(), Some(T::Cmd(c)) if c == "pi" || GREEK.contains(&c.as_str()))
                {
                    let r = self.postfix()?;
                    a = mul(a, r);
                }
                a
            }
        };
        let f = E::Func(name, Box::new(arg));
        Ok(match power {
            Some(p) => E::Pow(Box::new(f), Box::new(p)),
            None => f,
        })
    }
}

fn mul(a: E, b: E) -> E {
    match a {
        E::Mul(mut v) => {
            v.push(b);
            E::Mul(v)
        }
        a => E::Mul(vec![a, b]),
    }
}

fn is_inf(e: &E) -> bool {
    match e {
        E::Inf => true,
        E::Neg(a) => is_inf(a),
        _ => false,
    }
}

fn is_int_frac(e: &E) -> bool {
    matches!(e, E::Div(a, b) if matches!(**a, E::Rat(_)) && matches!(**b, E::Rat(_)))
}

fn sym_name(e: &E) -> Option<String> {
    match e {
        E::Sym(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse_expr_tokens(t: Vec<T>) -> R<E> {
    let mut p = P { t, i: 0, depth: 0 };
    let e = p.expr()?;
    if p.i != p.t.len() {
        return Err(ParseError("trailing tokens"));
    }
    Ok(e)
}

/// Splits tokens at top-level occurrences of `sep`.
fn split_top(t: &[T], is_sep: impl Fn(&T) -> bool) -> Vec<Vec<T>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0i32;
    for tok in t {
        match tok {
            T::Op('(') | T::Op('[') | T::Op('{') | T::SetOpen => depth += 1,
            T::Op(')') | T::Op(']') | T::Op('}') | T::SetClose => depth -= 1,
            _ => {}
        }
        if depth == 0 && is_sep(tok) {
            out.push(Vec::new());
        } else {
            out.last_mut().unwrap().push(tok.clone());
        }
    }
    out
}

/// True when `t[0]` is an opening bracket whose match is the last token.
fn wrapped(t: &[T]) -> bool {
    let mut depth = 0i32;
    for (k, tok) in t.iter().enumerate() {
        match tok {
            T::Op('(') | T::Op('[') | T::Op('{') | T::SetOpen => depth += 1,
            T::Op(')') | T::Op(']') | T::Op('}') | T::SetClose => depth -= 1,
            _ => {}
        }
        if depth == 0 && k + 1 < t.len() {
            return false;
        }
    }
    depth == 0 && t.len() >= 2
}

fn expr_value(t: Vec<T>) -> R<Value> {
    let e = parse_expr_tokens(t)?;
    Ok(expand_pm(e))
}

/// `a \pm b` becomes the set {a+b, a-b} (up to three `\pm`, all sign choices).
fn expand_pm(e: E) -> Value {
    let k = count_pm(&e);
    if k == 0 || k > 3 {
        return Value::Expr(e);
    }
    let mut out = Vec::new();
    for signs in 0..(1u8 << k) {
        let mut idx = 0;
        let v = Value::Expr(pm_choose(&e, signs, &mut idx));
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Value::Set(out)
}

fn count_pm(e: &E) -> u32 {
    match e {
        E::Pm(a, b) => 1 + count_pm(a) + count_pm(b),
        E::Neg(a) | E::Fact(a) | E::Func(_, a) => count_pm(a),
        E::Root(a, b) => count_pm(a) + b.as_deref().map_or(0, count_pm),
        E::Div(a, b) | E::Pow(a, b) | E::Binom(a, b) => count_pm(a) + count_pm(b),
        E::Add(v) | E::Mul(v) => v.iter().map(count_pm).sum(),
        _ => 0,
    }
}

fn pm_choose(e: &E, signs: u8, k: &mut u32) -> E {
    let rec = |x: &E, k: &mut u32| pm_choose(x, signs, k);
    match e {
        E::Pm(a, b) => {
            let a = rec(a, k);
            let b = rec(b, k);
            let minus = (signs >> (*k).min(7)) & 1 == 1;
            *k += 1;
            if minus {
                E::Add(vec![a, E::Neg(Box::new(b))])
            } else {
                E::Add(vec![a, b])
            }
        }
        E::Neg(a) => E::Neg(Box::new(rec(a, k))),
        E::Fact(a) => E::Fact(Box::new(rec(a, k))),
        E::Func(n, a) => E::Func(n.clone(), Box::new(rec(a, k))),
        E::Root(a, b) => E::Root(Box::new(rec(a, k)), b.as_ref().map(|b| Box::new(rec(b, k)))),
        E::Div(a, b) => E::Div(Box::new(rec(a, k)), Box::new(rec(b, k))),
        E::Pow(a, b) => E::Pow(Box::new(rec(a, k)), Box::new(rec(b, k))),
        E::Binom(a, b) => E::Binom(Box::new(rec(a, k)), Box::new(rec(b, k))),
        E::Add(v) => E::Add(v.iter().map(|x| rec(x, k)).collect()),
        E::Mul(v) => E::Mul(v.iter().map(|x| rec(x, k)).collect()),
        other => other.clone(),
    }
}

fn element(t: Vec<T>) -> R<Value> {
    // An element of a list may itself be bracketed (nested tuples) or an equation ("x=1").
    value_tokens(t, 1)
}

fn value_tokens(t: Vec<T>, level: usize) -> R<Value> {
    budget::check()?;
    if level > 8 {
        return Err(ParseError("nesting too deep"));
    }
    if t.is_empty() {
        return Err(ParseError("empty"));
    }
    // Matrices.
    if let Some(T::Cmd(c)) = t.first()
        && c == "begin"
    {
        return matrix(t);
    }
    // Outer grouping braces are invisible in LaTeX: "{(3,4]}" is "(3,4]".
    if wrapped(&t) && t[0] == T::Op('{') {
        return value_tokens(t[1..t.len() - 1].to_vec(), level + 1);
    }
    // Unions of intervals.
    let parts = split_top(&t, |x| matches!(x, T::Cmd(c) if c == "cup"));
    if parts.len() > 1 {
        return Ok(Value::Union(
            parts
                .into_iter()
                .map(|p| value_tokens(p, level + 1))
                .collect::<R<_>>()?,
        ));
    }
    // Equations ("AB=9, CD=4" is a list of equations: commas first when '=' repeats).
    let sides = split_top(&t, |x| *x == T::Op('='));
    if sides.len() > 2 && split_top(&t, |x| *x == T::Op(',')).len() > 1 {
        let items = split_top(&t, |x| *x == T::Op(','));
        return Ok(Value::Set(flatten(
            items.into_iter().map(element).collect::<R<_>>()?,
        )));
    }
    if sides.len() == 2 {
        let l = parse_expr_tokens(sides[0].clone())?;
        let r = parse_expr_tokens(sides[1].clone())?;
        return Ok(Value::Eq(l, r));
    }
    if sides.len() > 2 {
        return Err(ParseError("chained equation"));
    }
    // Bracketed lists: tuples, intervals, sets.
    if wrapped(&t) {
        let inner = t[1..t.len() - 1].to_vec();
        let items = split_top(&inner, |x| *x == T::Op(','));
        let (open, close) = (&t[0], &t[t.len() - 1]);
        if *open == T::SetOpen {
            return Ok(Value::Set(flatten(
                items.into_iter().map(element).collect::<R<_>>()?,
            )));
        }
        if items.len() >= 2 {
            let is_iv =
                matches!(open, T::Op('(') | T::Op('[')) && matches!(close, T::Op(')') | T::Op(']'));
            if items.len() == 2 && is_iv && (*open == T::Op('[') || *close == T::Op(']')) {
                let lo = parse_expr_tokens(items[0].clone())?;
                let hi = parse_expr_tokens(items[1].clone())?;
                // An infinite end is open whatever bracket was written: "(2, \infty]" is (2, oo).
                let lo_closed = *open == T::Op('[') && !is_inf(&lo);
                let hi_closed = *close == T::Op(']') && !is_inf(&hi);
                if !lo_closed && !hi_closed {
                    return Ok(Value::Tuple(vec![Value::Expr(lo), Value::Expr(hi)]));
                }
                return Ok(Value::Interval {
                    lo,
                    hi,
                    lo_closed,
                    hi_closed,
                });
            }
            if *open == T::Op('(') && *close == T::Op(')')
                || *open == T::Op('[') && *close == T::Op(']')
            {
                return Ok(Value::Tuple(
                    items.into_iter().map(element).collect::<R<_>>()?,
                ));
            }
            return Err(ParseError("bad brackets"));
        }
    }
    // Bare lists: unordered.
    let items = split_top(&t, |x| *x == T::Op(','));
    if items.len() > 1 {
        return Ok(Value::Set(flatten(
            items.into_iter().map(element).collect::<R<_>>()?,
        )));
    }
    let t = items.into_iter().next().unwrap_or_default();
    // "\text{(C)}" and friends: text.
    expr_value(t)
}

/// Members of a set that are themselves sets (from `\pm`) are spliced in.
fn flatten(items: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for v in items {
        match v {
            Value::Set(inner) => out.extend(inner),
            v => out.push(v),
        }
    }
    out
}

fn matrix(t: Vec<T>) -> R<Value> {
    // \begin{pmatrix} a & b \\ c & d \end{pmatrix}
    let mut i = 0;
    let skip_env = |i: &mut usize| -> R<()> {
        *i += 1; // begin/end
        if t.get(*i) != Some(&T::Op('{')) {
            return Err(ParseError("bad environment"));
        }
        while *i < t.len() && t[*i] != T::Op('}') {
            *i += 1;
        }
        *i += 1;
        Ok(())
    };
    skip_env(&mut i)?;
    let end = t
        .iter()
        .rposition(|x| *x == T::Cmd("end".into()))
        .ok_or(ParseError("no \\end"))?;
    let mut j = end;
    skip_env(&mut j)?;
    if j != t.len() {
        return Err(ParseError("text after matrix"));
    }
    let body = &t[i..end];
    let mut rows = Vec::new();
    for row in split_top(body, |x| *x == T::RowSep) {
        if row.is_empty() {
            continue;
        }
        let cells = split_top(&row, |x| *x == T::Op('&'));
        rows.push(
            cells
                .into_iter()
                .map(parse_expr_tokens)
                .collect::<R<Vec<E>>>()?,
        );
    }
    if rows.is_empty() || rows.iter().any(|r| r.len() != rows[0].len()) {
        return Err(ParseError("ragged matrix"));
    }
    Ok(Value::Matrix(rows))
}

/// Parses a final answer.
pub fn parse_answer(s: &str) -> R<Value> {
    if s.len() > 4 * MAX_TOKENS {
        return Err(ParseError("answer too long"));
    }
    let c = preclean(s);
    // A whole-text answer: "\text{Evelyn}", "\text{(C)}".
    if let Some(txt) = whole_text(&c) {
        return Ok(Value::Text(txt));
    }
    let t = tokenize(&c)?;
    value_tokens(t, 0)
}

/// The content when `s` is a single `\text{...}`-like group (or a bare word of 2+ letters).
fn whole_text(s: &str) -> Option<String> {
    let s = s.trim();
    for cmd in [
        "\\text{",
        "\\mbox{",
        "\\textbf{",
        "\\mathrm{",
        "\\textnormal{",
    ] {
        if let Some(rest) = s.strip_prefix(cmd)
            && let Some(body) = rest.strip_suffix('}')
            && !body.contains(['{', '}'])
        {
            return Some(body.to_string());
        }
    }
    None
}
