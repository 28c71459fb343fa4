//! Answer extraction: the last `\boxed{...}` / `\fbox{...}` (balanced braces) or `\boxed 5`.

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
}
