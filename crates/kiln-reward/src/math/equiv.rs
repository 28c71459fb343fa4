//! Mathematical equality of parsed answers: exact rationals first, then evaluation (surds, pi,
//! functions) with a tight relative tolerance, decimals and percentages within 1e-6 relative,
//! expressions with variables at pseudo-random points; tuples, intervals and matrices element-wise,
//! sets and unions as multisets, equations by sides or as proportional zero sets.

use std::collections::{BTreeMap, BTreeSet};

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use super::parse::{E, Value};
use crate::budget;

/// Largest exact result, in bits of numerator or denominator.
const MAX_BITS: u64 = 16_384;
/// Relative tolerance when a side has a decimal literal or a percentage.
pub const DECIMAL_RTOL: f64 = 1e-6;
/// Relative tolerance of exact-but-irrational values evaluated in floating point.
pub const EXACT_RTOL: f64 = 1e-9;
/// Points at which expressions with variables are compared: the first half in [0.35, 2.85],
/// the second in [-10, 30] (for expressions only defined away from the first range).
const POINTS: usize = 16;

pub fn has_dec(e: &E) -> bool {
    match e {
        E::Dec(_) => true,
        E::Neg(a) | E::Fact(a) | E::Func(_, a) => has_dec(a),
        E::Root(a, b) => has_dec(a) || b.as_deref().is_some_and(has_dec),
        E::Div(a, b) | E::Pow(a, b) | E::Binom(a, b) | E::Pm(a, b) => has_dec(a) || has_dec(b),
        E::Add(v) | E::Mul(v) => v.iter().any(has_dec),
        _ => false,
    }
}

pub fn syms(e: &E, out: &mut BTreeSet<String>) {
    match e {
        E::Sym(s) => {
            out.insert(s.clone());
        }
        E::Neg(a) | E::Fact(a) | E::Func(_, a) => syms(a, out),
        E::Root(a, b) => {
            syms(a, out);
            if let Some(b) = b {
                syms(b, out);
            }
        }
        E::Div(a, b) | E::Pow(a, b) | E::Binom(a, b) | E::Pm(a, b) => {
            syms(a, out);
            syms(b, out);
        }
        E::Add(v) | E::Mul(v) => v.iter().for_each(|x| syms(x, out)),
        _ => {}
    }
}

fn big_ok(r: &BigRational) -> bool {
    r.numer().bits() <= MAX_BITS && r.denom().bits() <= MAX_BITS
}

fn int_of(r: &BigRational) -> Option<i64> {
    if r.is_integer() {
        r.to_integer().to_i64()
    } else {
        None
    }
}

/// The exact rational value, when the expression is rational and small enough.
pub fn exact(e: &E) -> Option<BigRational> {
    budget::check().ok()?;
    let r = match e {
        E::Rat(r) | E::Dec(r) => r.clone(),
        E::Neg(a) => -exact(a)?,
        E::Add(v) => {
            let mut acc = BigRational::zero();
            for x in v {
                acc += exact(x)?;
                if !big_ok(&acc) {
                    return None;
                }
            }
            acc
        }
        E::Mul(v) => {
            let mut acc = BigRational::one();
            for x in v {
                let y = exact(x)?;
                if acc.numer().bits() + y.numer().bits() > MAX_BITS
                    || acc.denom().bits() + y.denom().bits() > MAX_BITS
                {
                    return None;
                }
                acc *= y;
            }
            acc
        }
        E::Div(a, b) => {
            let d = exact(b)?;
            if d.is_zero() {
                return None;
            }
            exact(a)? / d
        }
        E::Pow(a, b) => {
            let n = int_of(&exact(b)?)?;
            let base = exact(a)?;
            if n.unsigned_abs() > MAX_BITS {
                return None;
            }
            let bits = base.numer().bits().max(base.denom().bits());
            if bits.saturating_mul(n.unsigned_abs()) > MAX_BITS {
                return None;
            }
            if n < 0 {
                if base.is_zero() {
                    return None;
                }
                num_traits::pow(base.recip(), n.unsigned_abs() as usize)
            } else {
                num_traits::pow(base, n as usize)
            }
        }
        E::Root(a, idx) => {
            let k = match idx {
                None => 2u32,
                Some(i) => u32::try_from(int_of(&exact(i)?)?)
                    .ok()
                    .filter(|k| (2..=64).contains(k))?,
            };
            let v = exact(a)?;
            if v.is_negative() && k % 2 == 0 {
                return None;
            }
            let root = |x: &BigInt| -> Option<BigInt> {
                let r = x.abs().nth_root(k);
                (num_traits::pow(r.clone(), k as usize) == x.abs())
                    .then(|| if x.is_negative() { -r } else { r })
            };
            BigRational::new(root(v.numer())?, root(v.denom())?)
        }
        E::Fact(a) => {
            let n = int_of(&exact(a)?)?;
            if !(0..=300).contains(&n) {
                return None;
            }
            let mut acc = BigInt::one();
            for k in 2..=n {
                acc *= k;
            }
            BigRational::from_integer(acc)
        }
        E::Binom(a, b) => {
            let n = int_of(&exact(a)?)?;
            let k = int_of(&exact(b)?)?;
            if !(0..=1000).contains(&n) || k < 0 || k > n {
                return if (0..=1000).contains(&n) {
                    Some(BigRational::zero())
                } else {
                    None
                };
            }
            let mut acc = BigInt::one();
            for j in 0..k {
                acc = acc * (n - j) / (j + 1);
            }
            BigRational::from_integer(acc)
        }
        _ => return None,
    };
    big_ok(&r).then_some(r)
}

/// Floating-point value with the variables in `env`.
pub fn approx(e: &E, env: &BTreeMap<String, f64>) -> Option<f64> {
    budget::check().ok()?;
    let v = match e {
        E::Rat(r) | E::Dec(r) => r.to_f64()?,
        E::Sym(s) => *env.get(s)?,
        E::Pi => std::f64::consts::PI,
        E::Inf => f64::INFINITY,
        E::Neg(a) => -approx(a, env)?,
        E::Add(v) => {
            let mut acc = 0.0;
            for x in v {
                acc += approx(x, env)?;
            }
            acc
        }
        E::Mul(v) => {
            let mut acc = 1.0;
            for x in v {
                acc *= approx(x, env)?;
            }
            acc
        }
        E::Div(a, b) => {
            let d = approx(b, env)?;
            if d == 0.0 {
                return None;
            }
            approx(a, env)? / d
        }
        E::Pow(a, b) => {
            let (x, y) = (approx(a, env)?, approx(b, env)?);
            if x < 0.0 && y.fract() != 0.0 {
                return None;
            }
            x.powf(y)
        }
        E::Root(a, idx) => {
            let x = approx(a, env)?;
            let k = match idx {
                None => 2.0,
                Some(i) => approx(i, env)?,
            };
            if x < 0.0 {
                if k.fract() == 0.0 && (k as i64) % 2 != 0 {
                    -(-x).powf(1.0 / k)
                } else {
                    return None;
                }
            } else {
                x.powf(1.0 / k)
            }
        }
        E::Func(f, a) => {
            let x = approx(a, env)?;
            match f.as_str() {
                "sin" => x.sin(),
                "cos" => x.cos(),
                "tan" => x.tan(),
                "cot" => 1.0 / x.tan(),
                "sec" => 1.0 / x.cos(),
                "csc" => 1.0 / x.sin(),
                "ln" | "log" if x > 0.0 => x.ln(),
                "exp" => x.exp(),
                "arcsin" if x.abs() <= 1.0 => x.asin(),
                "arccos" if x.abs() <= 1.0 => x.acos(),
                "arctan" => x.atan(),
                "sinh" => x.sinh(),
                "cosh" => x.cosh(),
                "tanh" => x.tanh(),
                _ => return None,
            }
        }
        E::Fact(_) | E::Binom(..) => exact(e)?.to_f64()?,
        E::Pm(..) => return None,
    };
    if v.is_nan() { None } else { Some(v) }
}

fn has_inf(e: &E) -> bool {
    match e {
        E::Inf => true,
        E::Neg(a) | E::Fact(a) | E::Func(_, a) => has_inf(a),
        E::Root(a, b) => has_inf(a) || b.as_deref().is_some_and(has_inf),
        E::Div(a, b) | E::Pow(a, b) | E::Binom(a, b) | E::Pm(a, b) => has_inf(a) || has_inf(b),
        E::Add(v) | E::Mul(v) => v.iter().any(has_inf),
        _ => false,
    }
}

fn close(x: f64, y: f64, rtol: f64) -> bool {
    if x == y {
        return true;
    }
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    let d = (x - y).abs();
    d <= rtol * x.abs().max(y.abs()) || d <= 1e-12
}

/// Deterministic pseudo-random values for the variables, one set per point.
fn point(k: usize, vars: &BTreeSet<String>) -> BTreeMap<String, f64> {
    vars.iter()
        .enumerate()
        .map(|(j, v)| {
            let mut h = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (j as u64 + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
            h ^= h >> 29;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 32;
            let u = (h >> 11) as f64 / (1u64 << 53) as f64;
            let x = if k < POINTS / 2 {
                0.35 + 2.5 * u
            } else {
                -10.0 + 40.0 * u
            };
            (v.clone(), x)
        })
        .collect()
}

/// Equality of two expressions.
pub fn expr_eq(a: &E, b: &E) -> bool {
    // The same tree (brackets and spacing aside) is equal whatever its value.
    if a == b {
        return true;
    }
    let dec = has_dec(a) || has_dec(b);
    let rtol = if dec { DECIMAL_RTOL } else { EXACT_RTOL };
    let (mut sa, mut sb) = (BTreeSet::new(), BTreeSet::new());
    syms(a, &mut sa);
    syms(b, &mut sb);
    if sa != sb {
        return false;
    }
    if sa.is_empty() {
        if let (Some(x), Some(y)) = (exact(a), exact(b)) {
            // Exact rationals are equal or not. A decimal written against a fraction is read
            // with the tolerance, as an approximation (0.3333333 for 1/3, 0.3632812 for
            // 93/256); two written decimals must match exactly (306956.63 is not 306956.64).
            if x == y || has_dec(a) == has_dec(b) {
                return x == y;
            }
            return close(
                x.to_f64().unwrap_or(f64::NAN),
                y.to_f64().unwrap_or(f64::NAN),
                rtol,
            );
        }
        let env = BTreeMap::new();
        return match (approx(a, &env), approx(b, &env)) {
            // An overflow (2^{4950} in floating point) is not a value to compare.
            (Some(x), Some(y))
                if x.is_infinite() && y.is_infinite() && !(has_inf(a) && has_inf(b)) =>
            {
                false
            }
            (Some(x), Some(y)) => close(x, y, rtol),
            _ => false,
        };
    }
    let rtol = rtol.max(1e-8);
    let mut ok = 0;
    for k in 0..POINTS {
        let env = point(k, &sa);
        match (approx(a, &env), approx(b, &env)) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                if !close(x, y, rtol) {
                    return false;
                }
                ok += 1;
            }
            (Some(_), None) | (None, Some(_)) => return false,
            _ => {}
        }
    }
    ok >= 3
}

/// `a = c·b` for one constant c ≠ 0 at every sampled point (equations with the same zero set).
fn proportional(a: &E, b: &E) -> bool {
    let (mut sa, mut sb) = (BTreeSet::new(), BTreeSet::new());
    syms(a, &mut sa);
    syms(b, &mut sb);
    if sa != sb || sa.is_empty() {
        return false;
    }
    let mut ratio: Option<f64> = None;
    let mut ok = 0;
    for k in 0..POINTS {
        let env = point(k, &sa);
        if let (Some(x), Some(y)) = (approx(a, &env), approx(b, &env)) {
            if !x.is_finite() || !y.is_finite() {
                continue;
            }
            if x.abs() < 1e-12 && y.abs() < 1e-12 {
                continue;
            }
            if y == 0.0 {
                return false;
            }
            let r = x / y;
            match ratio {
                None => ratio = Some(r),
                Some(r0) => {
                    if !close(r, r0, 1e-8) {
                        return false;
                    }
                }
            }
            ok += 1;
        }
    }
    ok >= 3 && ratio.is_some_and(|r| r != 0.0)
}

fn diff(l: &E, r: &E) -> E {
    E::Add(vec![l.clone(), E::Neg(Box::new(r.clone()))])
}

fn lone_symbol(e: &E) -> bool {
    matches!(e, E::Sym(_))
}

fn multiset_eq(a: &[Value], b: &[Value]) -> bool {
    if a.len() != b.len() || a.len() > 64 {
        return false;
    }
    let mut used = vec![false; b.len()];
    'outer: for x in a {
        for (j, y) in b.iter().enumerate() {
            if !used[j] && value_eq(x, y) {
                used[j] = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// Equality of two parsed answers.
pub fn value_eq(a: &Value, b: &Value) -> bool {
    if budget::check().is_err() {
        return false;
    }
    use Value::*;
    match (a, b) {
        (Expr(x), Expr(y)) => expr_eq(x, y),
        (Eq(l1, r1), Eq(l2, r2)) => {
            (expr_eq(l1, l2) && expr_eq(r1, r2))
                || (expr_eq(l1, r2) && expr_eq(r1, l2))
                || proportional(&diff(l1, r1), &diff(l2, r2))
        }
        // "x = 3" against "3".
        (Eq(l, r), other) | (other, Eq(l, r)) => {
            (lone_symbol(l) && value_eq(&Expr(r.clone()), other))
                || (lone_symbol(r) && !lone_symbol(l) && value_eq(&Expr(l.clone()), other))
        }
        (Tuple(x), Tuple(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_eq(p, q)),
        (
            Interval {
                lo: a1,
                hi: b1,
                lo_closed: c1,
                hi_closed: d1,
            },
            Interval {
                lo: a2,
                hi: b2,
                lo_closed: c2,
                hi_closed: d2,
            },
        ) => c1 == c2 && d1 == d2 && expr_eq(a1, a2) && expr_eq(b1, b2),
        // "(a, b)" is a tuple or an open interval.
        (
            Tuple(t),
            Interval {
                lo,
                hi,
                lo_closed: false,
                hi_closed: false,
            },
        )
        | (
            Interval {
                lo,
                hi,
                lo_closed: false,
                hi_closed: false,
            },
            Tuple(t),
        ) => {
            t.len() == 2 && value_eq(&t[0], &Expr(lo.clone())) && value_eq(&t[1], &Expr(hi.clone()))
        }
        (Set(x), Set(y)) => multiset_eq(x, y),
        (Set(x), other) | (other, Set(x)) if x.len() == 1 => value_eq(&x[0], other),
        (Union(x), Union(y)) => multiset_eq(x, y),
        (Matrix(x), Matrix(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p.len() == q.len() && p.iter().zip(q).all(|(u, v)| expr_eq(u, v)))
        }
        _ => false,
    }
}
