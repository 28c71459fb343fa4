//! Answer extraction: the last `\boxed{...}` / `\fbox{...}` (balanced braces) or `\boxed 5`;
//! and a lenient mode for models that do not box their answers.

/// The content of the last `\boxed{...}` or `\fbox{...}` in `s` (braces balanced, `\{` and `\}`
/// escaped), or of a last `\boxed 5` (up to the next `$` or line end). None when there is no box
/// or the last one never closes. Linear time, no recursion.
pub fn last_boxed(s: &str) -> Option<String> {
    // Walk back over backslashes (memrchr) to the last "\boxed" or "\fbox".
    let mut end = s.len();
    let (pos, len) = loop {
        let i = s[..end].rfind('\\')?;
        let t = &s[i..];
        if t.starts_with("\\boxed") {
            break (i, "\\boxed".len());
        }
        if t.starts_with("\\fbox") {
            break (i, "\\fbox".len());
        }
        end = i;
    };
    let rest = &s[pos + len..];
    let t = rest.trim_start_matches([' ', '\t']);
    if let Some(body) = t.strip_prefix('{') {
        let bytes = body.as_bytes();
        let mut depth = 1usize;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    i += 2;
                    continue;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(body[..i].trim().to_string());
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    } else if rest.starts_with([' ', '\t']) {
        // "\boxed 5": what follows, up to `$` or the end of the line.
        let end = t.find(['$', '\n']).unwrap_or(t.len());
        let a = t[..end].trim();
        (!a.is_empty()).then(|| a.to_string())
    } else {
        None
    }
}

/// The answer of a response that may not box it, for evaluating small models (lighteval and
/// Minerva read answers the same way). In order:
/// 1. the last `\boxed{...}` ([`last_boxed`]);
/// 2. the clause after the last "answer is" / "answer:" (any case; "The final answer is $5$."):
///    up to the line end or a sentence end (". "), the first `$...$` in it when there is one,
///    without `$`, `\(` `\)`, markdown `**` and a trailing period;
/// 3. the last number in the response (`-?\d[\d,]*(\.\d+)?`, commas dropped).
///
/// Linear time in the length of the response.
pub fn lenient_answer(s: &str) -> Option<String> {
    if let Some(b) = last_boxed(s) {
        return Some(b);
    }
    if let Some(a) = answer_clause(s) {
        return Some(a);
    }
    last_number_text(s)
}

fn answer_clause(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let (at, len) = ["answer is", "answer:"]
        .iter()
        .filter_map(|p| lower.rfind(p).map(|i| (i, p.len())))
        .max()?;
    let rest = &s[at + len..];
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let clause = match line.find(". ") {
        Some(i) => &line[..i],
        None => line,
    };
    let clause = match clause.find('$') {
        Some(i) => {
            let tail = &clause[i..];
            let inner = tail.trim_start_matches('$');
            &inner[..inner.find('$').unwrap_or(inner.len())]
        }
        None => clause,
    };
    let mut a = clause.trim();
    loop {
        let before = a;
        a = a
            .trim_start_matches([':', '*', ' '])
            .trim_end_matches(['.', '*', ' ']);
        for (open, close) in [("\\(", "\\)"), ("\\[", "\\]")] {
            if let Some(x) = a.strip_prefix(open).and_then(|x| x.strip_suffix(close)) {
                a = x.trim();
            }
        }
        if a == before {
            break;
        }
    }
    (!a.is_empty()).then(|| a.to_string())
}

/// The text of the last number in `s`, commas dropped.
fn last_number_text(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut end = b.len();
    while end > 0 && !b[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end == 0 {
        return None;
    }
    let mut start = end;
    while start > 0 {
        let c = b[start - 1];
        let digit_before = start >= 2 && b[start - 2].is_ascii_digit();
        if c.is_ascii_digit() || ((c == b',' || c == b'.') && digit_before) {
            start -= 1;
        } else {
            break;
        }
    }
    if start > 0 && b[start - 1] == b'-' {
        start -= 1;
    }
    Some(s[start..end].replace(',', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes() {
        assert_eq!(
            last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}.").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(last_boxed("\\fbox{7}").as_deref(), Some("7"));
        assert_eq!(last_boxed("so $\\boxed 5$.").as_deref(), Some("5"));
        assert_eq!(
            last_boxed("\\boxed{\\{1,2\\}}").as_deref(),
            Some("\\{1,2\\}")
        );
        assert_eq!(last_boxed("\\boxed{3} then \\boxed{4").as_deref(), None);
        assert_eq!(last_boxed("no box"), None);
        assert_eq!(last_boxed("\\boxed{ {a}{b} }").as_deref(), Some("{a}{b}"));
        assert_eq!(last_boxed("\\boxed{\\boxed{2}}").as_deref(), Some("2"));
    }

    #[test]
    fn lenient_answers() {
        let cases = [
            ("so \\boxed{7} is it; the answer is 8", Some("7")),
            (
                "The final answer is $\\frac{1}{2}$. I hope it is correct.",
                Some("\\frac{1}{2}"),
            ),
            ("Therefore, the answer is 12.", Some("12")),
            ("**Answer:** 3.5\nDone", Some("3.5")),
            ("The answer is \\(x^2\\).", Some("x^2")),
            ("We get 1,234 apples and then -5", Some("-5")),
            ("Total: 1,234.", Some("1234")),
            ("x = 3.25", Some("3.25")),
            ("no numbers here", None),
            ("the answer is: ", None),
        ];
        for (text, want) in cases {
            assert_eq!(lenient_answer(text).as_deref(), want, "{text:?}");
        }
    }
}
