//! String normalisation of answers (verl's / Hendrycks' `strip_string`, extended): two answers
//! with equal normal forms are equivalent.

/// verl's `strip_string`, plus `\text` unwrapping and a few spacing commands.
pub fn normalize(s: &str) -> String {
    let mut s: String = s.replace(['\n', '\r'], "");
    for (a, b) in [
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\:", ""),
        ("\\quad", ""),
        ("\\qquad", ""),
        ("\\displaystyle", ""),
        ("\\\\", "\\"),
        ("tfrac", "frac"),
        ("dfrac", "frac"),
        ("\\left", ""),
        ("\\right", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\$", ""),
        ("$", ""),
    ] {
        s = s.replace(a, b);
    }
    s = remove_right_units(&s);
    s = s.replace("\\%", "").replace('%', "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.starts_with('.') {
        s = format!("0{s}");
    }
    // "x = 5" -> "5" when the left side is short.
    if let Some((l, r)) = s.split_once('=')
        && !r.contains('=')
        && l.trim().chars().count() <= 2
        // verl: a left side of at most 2 characters; kiln also wants it to be a name.
        && l.trim().starts_with(|c: char| c.is_ascii_alphabetic())
    {
        s = r.to_string();
    }
    s = strip_outer_braces(s.trim()).to_string();
    s = fix_sqrt(&s);
    s = unwrap_text(&s);
    s.retain(|c| c != ' ');
    s = fix_fracs(&s);
    if s == "0.5" {
        s = "\\frac{1}{2}".into();
    }
    s = fix_a_slash_b(&s);
    while s.ends_with('.') {
        s.pop();
    }
    s
}

/// verl drops everything from the first "\text{ " on; kiln only drops a trailing unit group
/// ("5 \text{ cm}", "15\text{ cm}^2"), so that "5 \text{ or } 6" keeps its second answer.
fn remove_right_units(s: &str) -> String {
    let t = s.trim_end();
    let Some(i) = t.rfind("\\text{") else {
        return s.to_string();
    };
    // "5 \text{ cm}", and "7\text{hours}" right after a digit.
    let spaced = t[i..].starts_with("\\text{ ");
    let after_digit = t[..i].trim_end().ends_with(|c: char| c.is_ascii_digit());
    if i == 0 || !(spaced || after_digit) {
        return s.to_string();
    }
    let body = &t[i + "\\text{".len()..];
    let Some(close) = body.find('}') else {
        return s.to_string();
    };
    let word_ok = body[..close]
        .chars()
        .all(|c| c.is_alphabetic() || c == ' ' || c == '.');
    let after = body[close + 1..].trim();
    if word_ok && (after.is_empty() || ["^2", "^3", "^{2}", "^{3}"].contains(&after)) {
        t[..i].to_string()
    } else {
        s.to_string()
    }
}

/// "{...}" around the whole answer is invisible grouping.
fn strip_outer_braces(s: &str) -> &str {
    let mut t = s;
    while t.starts_with('{') && t.ends_with('}') && t.len() >= 2 {
        let inner = &t[1..t.len() - 1];
        let mut depth = 0i32;
        let balanced = inner.chars().all(|c| {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            depth >= 0
        }) && depth == 0;
        if !balanced {
            break;
        }
        t = inner.trim();
    }
    t
}

/// `\text{abc}` -> `abc` (also `\mbox`, `\textbf`, `\mathrm`).
fn unwrap_text(s: &str) -> String {
    let mut s = s.to_string();
    for cmd in [
        "\\text{",
        "\\mbox{",
        "\\textbf{",
        "\\mathrm{",
        "\\textnormal{",
    ] {
        let mut guard = 0;
        while let Some(i) = s.find(cmd) {
            guard += 1;
            if guard > 64 {
                break;
            }
            let body = &s[i + cmd.len()..];
            let Some(close) = body.find('}') else { break };
            if body[..close].contains('{') {
                break;
            }
            s = format!("{}{}{}", &s[..i], &body[..close], &body[close + 1..]);
        }
    }
    s
}

/// `\sqrt2` -> `\sqrt{2}`.
fn fix_sqrt(s: &str) -> String {
    let parts: Vec<&str> = s.split("\\sqrt").collect();
    let mut out = parts[0].to_string();
    for p in &parts[1..] {
        let mut ch = p.chars();
        match ch.next() {
            Some(c) if c != '{' && c != '[' && c != ' ' => {
                out.push_str("\\sqrt{");
                out.push(c);
                out.push('}');
                out.push_str(ch.as_str());
            }
            _ => {
                out.push_str("\\sqrt");
                out.push_str(p);
            }
        }
    }
    out
}

/// `\frac12` -> `\frac{1}{2}`, `\frac1{2}` -> `\frac{1}{2}`, `\frac{1}2` -> `\frac{1}{2}`.
fn fix_fracs(s: &str) -> String {
    let parts: Vec<&str> = s.split("\\frac").collect();
    let mut out = parts[0].to_string();
    for p in &parts[1..] {
        out.push_str("\\frac");
        let cs: Vec<char> = p.chars().collect();
        if cs.first() == Some(&'{') {
            // \frac{a}b -> \frac{a}{b}
            if let Some(close) = cs.iter().position(|&c| c == '}') {
                let a: String = cs[..=close].iter().collect();
                match cs.get(close + 1) {
                    Some(&b) if b != '{' => {
                        out.push_str(&a);
                        out.push('{');
                        out.push(b);
                        out.push('}');
                        out.extend(&cs[close + 2..]);
                    }
                    _ => out.push_str(p),
                }
            } else {
                out.push_str(p);
            }
        } else if cs.len() >= 2 {
            let a = cs[0];
            if cs[1] == '{' {
                out.push('{');
                out.push(a);
                out.push('}');
                out.extend(&cs[1..]);
            } else {
                out.push('{');
                out.push(a);
                out.push_str("}{");
                out.push(cs[1]);
                out.push('}');
                out.extend(&cs[2..]);
            }
        } else {
            out.push_str(p);
        }
    }
    out
}

/// `3/4` -> `\frac{3}{4}` for two integers.
fn fix_a_slash_b(s: &str) -> String {
    if let Some((a, b)) = s.split_once('/') {
        let int = |x: &str| !x.is_empty() && x.len() < 30 && x.bytes().all(|c| c.is_ascii_digit());
        if int(a) && int(b) {
            return format!("\\frac{{{a}}}{{{b}}}");
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verl_rules() {
        assert_eq!(normalize("\\dfrac{1}{2}"), normalize("0.5"));
        assert_eq!(normalize("\\frac12"), "\\frac{1}{2}");
        assert_eq!(normalize("3/4"), "\\frac{3}{4}");
        assert_eq!(normalize("\\sqrt2"), "\\sqrt{2}");
        assert_eq!(normalize("90^\\circ"), "90");
        assert_eq!(normalize("x = 5"), "5");
        assert_eq!(
            normalize("\\left( 3, \\frac{\\pi}{2} \\right)"),
            "(3,\\frac{\\pi}{2})"
        );
        assert_eq!(normalize("\\text{Evelyn}"), "Evelyn");
        assert_eq!(normalize("10 \\text{ cm}"), "10");
        assert_eq!(normalize("15\\text{ cm}^2"), "15");
        assert_eq!(normalize("5 \\text{ or } 6"), "5or6");
        assert_eq!(normalize("2 = 5"), "2=5");
        assert_eq!(normalize("\\$18.90"), "18.90");
        assert_eq!(normalize(".5"), "\\frac{1}{2}");
    }
}
