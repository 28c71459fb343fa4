#!/usr/bin/env python3
"""Labels (reference, response) pairs built from MATH-500 with the PyPI package math-verify.

The fixture it writes, crates/kiln-reward/tests/fixtures/math_verify_pairs.jsonl, is the
independent reference of kiln-reward's MATH verifier (tests/math_agreement.rs checks that kiln
agrees with it on at least 98% of the pairs and lists every disagreement).

Pairs, for each of the 500 MATH-500 answers (deterministic, seed 0):
  - "equiv": an equivalent rewrite of the answer chosen by its type (fraction -> decimal or a/b,
    reordered list, tuple with \\left( \\right), dropped degree sign or units, x = prefix,
    reordered polynomial terms, \\dfrac <-> \\frac, thousands separators, ...), and
  - "miss": a near miss (a digit changed, a fraction inverted, a tuple reordered, an interval end
    closed, another choice letter, a sign flipped, ...);
  - "style" / "style-miss": percentages, scientific notation, decimals of fractions to 7
    significant digits (equivalent within 1e-6) and to 3 (a near miss);
  - "sympy": a factored or expanded form of an answer with variables (sympy);
  - "hedge-miss": for some integer answers, a hedged box ("n \\text{ or } n+1", "n, n+1",
    "n \\pm 1").
The response is the dataset's own solution with its last \\boxed{...} replaced by the variant
(or a short synthetic response when the solution has several boxes).

math-verify is asked the way its README shows:
    verify(parse("$\\boxed{<reference>}$"), parse(<response>))

Usage (math-verify 0.9.0, sympy 1.14, latex2sympy2_extended 1.11, antlr4 4.13.2 were used; the
output is deterministic, byte for byte):
    python -m venv /tmp/mv && /tmp/mv/bin/pip install math-verify
    /tmp/mv/bin/python benchmarks/reference/math_verify_reference.py \\
        --data ../shared/data/math500/test.jsonl \\
        --out crates/kiln-reward/tests/fixtures/math_verify_pairs.jsonl
"""

import argparse
import json
import random
import re
from fractions import Fraction


def last_boxed_span(s):
    """(start, end) of the last \\boxed{...} (the whole command) in s, or None."""
    i = s.rfind("\\boxed")
    if i < 0:
        return None
    j = i + len("\\boxed")
    if j >= len(s) or s[j] != "{":
        return None
    depth = 0
    for k in range(j, len(s)):
        if s[k] == "{":
            depth += 1
        elif s[k] == "}":
            depth -= 1
            if depth == 0:
                return i, k + 1
    return None


INT = re.compile(r"^-?\d+$")
FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
FRAC_SHORT = re.compile(r"^(-?)\\[dt]?frac ?(\d)(\d)$")
SQRT = re.compile(r"^(\d*) ?\\sqrt\{?(\d+)\}?$")
DEG = re.compile(r"^(\d+)\^\\circ$")
DEC = re.compile(r"^-?\d*\.\d+$")
CHOICE = re.compile(r"^\\text\{\(([A-E])\)\}$")
TEXT = re.compile(r"^\\text\{([A-Za-z ]+)\}$")
PI = re.compile(r"^(\d+) ?\\pi$")
COMPLEX = re.compile(r"^(-?\d+) ?([+-]) ?(\d*)i$")
BASE = re.compile(r"^(\d+)_\{?(\d+)\}?$")


def split_top(s, sep=","):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def poly_terms(s):
    """Top-level signed terms of a sum, or None."""
    terms, depth, cur = [], 0, ""
    for k, ch in enumerate(s):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch in "+-" and depth == 0 and cur.strip() and not cur.rstrip().endswith("^"):
            terms.append(cur.strip())
            cur = ch
        else:
            cur += ch
    terms.append(cur.strip())
    return terms if len(terms) >= 2 else None


def signed(t):
    t = t.replace(" ", "")
    return t if t.startswith("-") or t.startswith("+") else "+" + t


def change_digit(s, rng):
    """Near miss: bump one digit (the last one, mostly)."""
    # Not an exponent or a subscript: those change units and bases, not values.
    idx = [k for k, ch in enumerate(s) if ch.isdigit() and (k == 0 or s[k - 1] not in "^_{")]
    idx = idx or [k for k, ch in enumerate(s) if ch.isdigit()]
    if not idx:
        return None
    k = idx[-1] if rng.random() < 0.7 else rng.choice(idx)
    d = int(s[k])
    nd = (d + 1) % 10 if d != 9 else 7
    return s[:k] + str(nd) + s[k + 1:]


def equiv_variant(a, rng):
    s = a.strip()
    m = INT.match(s)
    if m:
        n = int(s)
        return rng.choice([f"{n}.0", f"x = {n}", f"{n}^\\circ" if n > 0 else f"{n}.00", f"\\frac{{{2 * n}}}{{2}}", f"{n:,}" if abs(n) >= 1000 else f"{n}.0"])
    m = FRAC.match(s) or FRAC_SHORT.match(s)
    if m:
        sign, p, q = m.group(1), int(m.group(2)), int(m.group(3))
        f = Fraction(p, q)
        opts = [f"{sign}{p}/{q}", f"{sign}\\frac{{{2 * p}}}{{{2 * q}}}", f"{sign}\\dfrac{{{p}}}{{{q}}}"]
        d = q
        for prime in (2, 5):
            while d % prime == 0:
                d //= prime
        if d == 1:
            opts.append(f"{sign}{float(f):.10g}")
        return rng.choice(opts)
    m = BASE.match(s)
    if m:
        return f"{m.group(1)}_{m.group(2)}" if "{" in s else f"{m.group(1)}_{{{m.group(2)}}}"
    m = DEG.match(s)
    if m:
        return rng.choice([m.group(1), f"{m.group(1)}^{{\\circ}}", f"{m.group(1)}\\text{{ degrees}}"])
    m = SQRT.match(s)
    if m:
        k = int(m.group(1) or 1)
        n = int(m.group(2))
        short = f"\\sqrt{n}" if n < 10 else f"\\sqrt{{{n}}}"
        return rng.choice([f"\\sqrt{{{k * k * n}}}", f"{k}{short}" if k > 1 else short])
    m = DEC.match(s)
    if m:
        f = Fraction(s)
        return rng.choice([f"\\frac{{{f.numerator}}}{{{f.denominator}}}", s + "0", "0" + s if s.startswith(".") else s + "00"])
    m = CHOICE.match(s)
    if m:
        return rng.choice([m.group(1), f"({m.group(1)})", f"\\textbf{{({m.group(1)})}}"])
    m = TEXT.match(s)
    if m:
        return m.group(1)
    m = PI.match(s)
    if m:
        return rng.choice([f"\\pi \\cdot {m.group(1)}", f"{m.group(1)}\\cdot\\pi"])
    m = COMPLEX.match(s)
    if m:
        a_, sg, b_ = m.groups()
        return f"{sg}{b_}i + {a_}".lstrip("+")
    if s.startswith("\\begin{pmatrix}"):
        return s.replace("\\\\", " \\\\ ").replace("  ", " ")
    inner = s
    if inner.startswith("\\left"):
        return inner.replace("\\left", "").replace("\\right", "")
    if inner.startswith("(") and inner.endswith(")") and "," in inner:
        return "\\left" + inner[:-1] + "\\right)"
    parts = split_top(s)
    if len(parts) >= 2 and not s.startswith(("(", "[", "\\{")):
        if all(re.fullmatch(r"\s*\d{3}\s*", p) or re.fullmatch(r"\s*\\!\s*\d{3}\s*", p) for p in parts[1:]):
            return re.sub(r"[,\\! ]", "", s)
        return ", ".join(p.strip() for p in reversed(parts))
    if "=" in s:
        l, r = s.split("=", 1)
        return f"{r.strip()} = {l.strip()}"
    terms = poly_terms(s)
    if terms and "\\frac" not in s:
        rev = "".join(signed(t) for t in reversed(terms))
        return rev.lstrip("+")
    if "\\frac" in s and "\\dfrac" not in s:
        return s.replace("\\frac", "\\dfrac")
    if "\\dfrac" in s:
        return s.replace("\\dfrac", "\\frac")
    return s.replace(" ", "") if " " in s else "{" + s + "}"


def miss_variant(a, rng):
    s = a.strip()
    m = FRAC.match(s)
    if m and rng.random() < 0.5:
        sign, p, q = m.groups()
        if p != q:
            return f"{sign}\\frac{{{q}}}{{{p}}}"
    m = CHOICE.match(s)
    if m:
        return "\\text{(" + "ABCDE"[("ABCDE".index(m.group(1)) + 1) % 5] + ")}"
    m = TEXT.match(s)
    if m:
        return rng.choice(["\\text{odd}", "\\text{west}", "\\text{Rita}", "\\text{parabola}"])
    if s.startswith(("(", "\\left(")) and "," in s and rng.random() < 0.5:
        inner = s
        parts = split_top(inner.replace("\\left(", "(").replace("\\right)", ")")[1:-1])
        if len(parts) >= 2 and parts[0].strip() != parts[1].strip():
            parts[0], parts[1] = parts[1], parts[0]
            return "(" + ",".join(parts) + ")"
    if s.startswith("(") and s.endswith(")") and rng.random() < 0.5:
        return s[:-1] + "]"
    if s.startswith("-") and rng.random() < 0.5:
        return s[1:]
    if INT.match(s) and rng.random() < 0.3:
        return str(-int(s)) if int(s) != 0 else "1"
    return change_digit(s, rng)


TEMPLATES = [
    "Let's work through this carefully.\n\nAfter simplifying, we get the result.\n\nThe final answer is $\\boxed{{{}}}$.",
    "We compute step by step and conclude that the answer is $\\boxed{{{}}}$.",
    "<think>\nSet up the equations and solve.\n</think>\nTherefore the answer is \\boxed{{{}}}.",
    "So, putting everything together, the answer is \\[\\boxed{{{}}}\\]",
]


def style_variants(a):
    """Extra rewrites by answer type: (kind, variant) pairs. Percentages, scientific notation,
    decimals of fractions (7 significant digits: equivalent within 1e-6; 3 digits: a near miss)."""
    s = a.strip()
    out = []
    m = DEC.match(s)
    if m:
        f = Fraction(s)
        pct = f * 100
        out.append(("style", f"{float(pct):g}\\%"))
        mant, exp = f"{float(f):e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        out.append(("style", f"{mant} \\times 10^{{{int(exp)}}}"))
    m = FRAC.match(s) or FRAC_SHORT.match(s)
    if m:
        sign, p, q = m.group(1), int(m.group(2)), int(m.group(3))
        v = float(Fraction(p, q))
        out.append(("style", f"{sign}{v:.7g}"))
        if len(f"{v:.7g}") > len(f"{v:.3g}"):
            out.append(("style-miss", f"{sign}{v:.3g}"))
    m = INT.match(s)
    if m and abs(int(s)) >= 1000:
        mant, exp = f"{int(s):e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        out.append(("style", f"{mant} \\times 10^{{{int(exp)}}}"))
    return out


def sympy_variant(a):
    """An algebraic rewrite (factored or expanded) of an answer with variables, via sympy."""
    import sympy
    from latex2sympy2_extended import latex2sympy

    s = a.strip()
    if any(t in s for t in ("\\text", "\\mbox", "\\begin", "\\in", ",", "\\pm", "_", "\\cot")):
        return None
    if re.search(r"[A-Z]", re.sub(r"\\[A-Za-z]+", "", s)):  # latex2sympy lower-cases: R -> r
        return None
    try:
        e = latex2sympy(s)
    except Exception:
        return None
    if not isinstance(e, sympy.Expr) and not isinstance(e, sympy.Eq):
        return None
    if isinstance(e, sympy.Eq):
        d = sympy.expand(e.lhs - e.rhs)
        return sympy.latex(sympy.Eq(-d, 0)) if d.free_symbols else None
    if not e.free_symbols or e.has(sympy.I):
        return None
    key = s.replace(" ", "")
    for cand in (sympy.factor(e), sympy.expand(e), sympy.together(e)):
        t = sympy.latex(cand)
        if t.replace(" ", "") != key and t.replace("\\left", "").replace("\\right", "").replace(" ", "") != key:
            return t
    return None


def make_response(solution, variant, rng):
    if solution.count("\\boxed") == 1:
        span = last_boxed_span(solution)
        if span:
            i, j = span
            return solution[:i] + "\\boxed{" + variant + "}" + solution[j:]
    return rng.choice(TEMPLATES).format(variant)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from math_verify import parse, verify

    rng = random.Random(0)
    rows = [json.loads(l) for l in open(args.data)]
    out = []
    for k, r in enumerate(rows):
        ans = r["answer"]
        variants = [("equiv", equiv_variant(ans, rng)), ("miss", miss_variant(ans, rng))]
        variants += style_variants(ans)
        if INT.match(ans.strip()) and k % 4 == 0:
            # Hedged answers: a second candidate must not earn the reward.
            n = int(ans.strip())
            variants.append(("hedge-miss", rng.choice([f"{n} \\text{{ or }} {n + 1}", f"{n}, {n + 1}", f"{n} \\pm 1"])))
        sv = sympy_variant(ans)
        if sv:
            variants.append(("sympy", sv))
        for kind, v in variants:
            if v is None or (kind.endswith("miss") and v.strip() == ans.strip()):
                continue
            resp = make_response(r["solution"], v, rng)
            gold = parse("$\\boxed{" + ans + "}$")
            pred = parse(resp)
            label = bool(verify(gold, pred))
            out.append({
                "id": f"{r['unique_id']}#{kind}",
                "kind": kind,
                "subject": r["subject"],
                "reference": ans,
                "variant": v,
                "response": resp,
                "math_verify": label,
            })
    with open(args.out, "w") as f:
        for o in out:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")
    n_true = sum(o["math_verify"] for o in out)
    print(f"{len(out)} pairs, math-verify says {n_true} equivalent, {len(out) - n_true} not")


if __name__ == "__main__":
    main()
