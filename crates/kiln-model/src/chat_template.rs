//! Hugging Face chat templates (`tokenizer_config.json` / `tokenizer.chat_template`) rendered
//! with minijinja, configured to behave like transformers' `apply_chat_template`:
//!
//! - `trim_blocks` and `lstrip_blocks` on, as transformers sets them;
//! - the globals transformers adds: `raise_exception(msg)`, `strftime_now(fmt)`, the special
//!   tokens (`bos_token`, `eos_token`), `tools` / `documents` as none;
//! - the Python `str` / `dict` methods HF templates call (`.strip()`, `.startswith()`,
//!   `.split()`, `.items()`, `.get()`, ...), implemented here because minijinja's core has no
//!   Python methods (minijinja-contrib's `pycompat` would add a dependency for a few functions);
//! - `tojson` formatted like Python's `json.dumps` (", " / ": " separators, no HTML escaping);
//!   maps print sorted by key, not in insertion order, until minijinja and serde_json get their
//!   `preserve_order` features (matters only for tool-calling templates).
//!
//! Message contents are data: `{{ ... }}` inside a message is printed, never evaluated.
//!
//! The template itself is code from the checkpoint. It gets no file system (no loader: every
//! `include` / `import` / `extends` fails), a budget of [`MAX_FUEL`] VM steps (a loop without end
//! is an error, not a hang), a cap on the rendered prompt's size, and a panic inside minijinja
//! becomes an error. A template written to be slow or memory-hungry in other ways (building a
//! huge value step by step) is not stopped, as it is not in transformers' sandbox either.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind, from_args};
use minijinja::{Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};

/// One chat turn, as in transformers' `[{"role": ..., "content": ...}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
}

const TEMPLATE_NAME: &str = "chat_template";

/// Template VM instructions one render may execute. Qwen3's template takes about 55 per
/// message, so this is room for 18k messages, while a template that loops without end stops
/// within about a second even when its steps are expensive (fuzzing found a loop defining a
/// macro in every iteration that took 11 s under a budget of 10M steps).
const MAX_FUEL: u64 = 1_000_000;

/// The longest rendered prompt: far beyond any context window.
const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// The largest `tojson(indent=...)`.
const MAX_TOJSON_INDENT: usize = 64;

/// A compiled chat template plus the special tokens it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (Jinja, as found in `tokenizer_config.json`).
    pub fn new(source: &str, bos: String, eos: String) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_unknown_method_callback(python_method);
        env.set_fuel(Some(MAX_FUEL));
        guarded(|| env.add_template_owned(TEMPLATE_NAME, source.to_owned()))
            .map_err(ChatTemplateError::Syntax)?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// Renders the conversation, as `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` does.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// Like [`render`](Self::render), with extra template variables (e.g. `tools`,
    /// `enable_thinking`) that override the defaults.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, ChatTemplateError> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        ctx.insert("bos_token".into(), Value::from(self.bos.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos.as_str()));
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        for (k, v) in extra {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Render(describe(&e)))?;
        let mut out = CappedOutput(Vec::new());
        guarded(|| template.render_captured_to(ctx, &mut out).map(drop))
            .map_err(ChatTemplateError::Render)?;
        // minijinja writes only `str`s.
        String::from_utf8(out.0).map_err(|e| ChatTemplateError::Render(e.to_string()))
    }
}

/// The rendered prompt, refusing to grow past [`MAX_OUTPUT_BYTES`].
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendered prompt would be longer than {} MiB",
                MAX_OUTPUT_BYTES >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs minijinja, turning a panic inside it into an error: a checkpoint's template must never
/// crash kiln. Found by fuzzing: minijinja 2.24 panics on a reversed slice of an empty sequence
/// (`messages[::-1]` with no messages, as in Qwen3's template).
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, String> {
    match crate::error::catch_panic("the template engine (minijinja)", f)? {
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(format!(
            "the template ran for more than {MAX_FUEL} steps (an endless loop?): {}",
            describe(&e)
        )),
        result => result.map_err(|e| describe(&e)),
    }
}

/// The error with its source chain (minijinja puts the template location in the display).
fn describe(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// transformers' `raise_exception`: templates use it to reject malformed conversations.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("raise_exception: {message}"),
    ))
}

/// transformers' `strftime_now`: the current time formatted with a C `strftime` format (UTC).
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as usize, day)
}

/// A subset of C `strftime` covering what chat templates use; other directives are kept as is.
fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
    let month_name = MONTHS[month - 1];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    // Each line repeats the indent once per nesting level: `indent=10**9` would ask for
    // gigabytes (found by fuzzing). Templates use 2 or 4.
    if let Some(n) = indent.filter(|&n| n > MAX_TOJSON_INDENT) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: indent={n} is too large (at most {MAX_TOJSON_INDENT})"),
        ));
    }
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    write_py_json(&json, indent, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// Python `json.dumps` layout: ", " and ": " separators inline; with `indent`, one item per
/// line and "," at line ends.
fn write_py_json(
    v: &serde_json::Value,
    indent: Option<usize>,
    sort: bool,
    level: usize,
    out: &mut String,
) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, sort, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            let mut entries: Vec<_> = map.iter().collect();
            if sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_py_json(item, indent, sort, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Python's `str.isspace` characters, used by argument-less `strip` / `split`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python `str` and `dict` methods HF chat templates call.
fn python_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        return string_method(s, method, args);
    }
    if value.kind() == ValueKind::Map {
        match method {
            "items" => return state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => {
                from_args::<()>(args)?;
                return Ok(Value::from(value.try_iter()?.collect::<Vec<_>>()));
            }
            "values" => {
                from_args::<()>(args)?;
                let values: Result<Vec<Value>, Error> =
                    value.try_iter()?.map(|k| value.get_item(&k)).collect();
                return Ok(Value::from(values?));
            }
            "get" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let found = value.get_item(&key)?;
                return Ok(if found.is_undefined() {
                    default.unwrap_or(Value::from(()))
                } else {
                    found
                });
            }
            _ => {}
        }
    }
    Err(Error::new(
        ErrorKind::UnknownMethod,
        format!("{} has no method `{method}`", value.kind()),
    ))
}

fn string_method(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let strip_set = |chars: Option<&str>| -> Box<dyn Fn(char) -> bool> {
        match chars {
            None => Box::new(is_py_space),
            Some(set) => {
                let set = set.to_owned();
                Box::new(move |c| set.contains(c))
            }
        }
    };
    Ok(match method {
        "strip" | "lstrip" | "rstrip" => {
            let (chars,): (Option<&str>,) = from_args(args)?;
            let pat = strip_set(chars);
            Value::from(match method {
                "strip" => s.trim_matches(&pat),
                "lstrip" => s.trim_start_matches(&pat),
                _ => s.trim_end_matches(&pat),
            })
        }
        "startswith" | "endswith" => {
            let (affix,): (Value,) = from_args(args)?;
            // Python accepts one string or a tuple of candidates.
            let candidates: Vec<String> = match affix.as_str() {
                Some(one) => vec![one.to_owned()],
                None => affix.try_iter()?.map(|v| v.to_string()).collect(),
            };
            let hit = candidates.iter().any(|c| {
                if method == "startswith" {
                    s.starts_with(c.as_str())
                } else {
                    s.ends_with(c.as_str())
                }
            });
            Value::from(hit)
        }
        "split" | "rsplit" => {
            let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
            let limit = maxsplit
                .filter(|&m| m >= 0)
                .map(|m| m as usize + 1)
                .unwrap_or(usize::MAX);
            let parts: Vec<String> = match (sep, method) {
                (None, _) => s
                    .split(is_py_space)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
                (Some(""), _) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "split: empty separator",
                    ));
                }
                (Some(sep), "split") => s.splitn(limit, sep).map(str::to_owned).collect(),
                (Some(sep), _) => {
                    let mut parts: Vec<String> = s.rsplitn(limit, sep).map(str::to_owned).collect();
                    parts.reverse();
                    parts
                }
            };
            Value::from(parts)
        }
        "upper" => Value::from(s.to_uppercase()),
        "lower" => Value::from(s.to_lowercase()),
        "title" | "capitalize" => {
            let mut out = String::with_capacity(s.len());
            let mut at_word_start = true;
            for (i, c) in s.chars().enumerate() {
                let start = if method == "title" {
                    at_word_start
                } else {
                    i == 0
                };
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.extend(c.to_lowercase());
                }
                at_word_start = !c.is_alphanumeric();
            }
            Value::from(out)
        }
        "replace" => {
            let (old, new, count): (&str, &str, Option<i64>) = from_args(args)?;
            Value::from(match count {
                Some(n) if n >= 0 => s.replacen(old, new, n as usize),
                _ => s.replace(old, new),
            })
        }
        "find" => {
            let (needle,): (&str,) = from_args(args)?;
            Value::from(
                s.find(needle)
                    .map(|b| s[..b].chars().count() as i64)
                    .unwrap_or(-1),
            )
        }
        "count" => {
            let (needle,): (&str,) = from_args(args)?;
            Value::from(s.matches(needle).count())
        }
        "join" => {
            let (items,): (Value,) = from_args(args)?;
            let parts: Vec<String> = items.try_iter()?.map(|v| v.to_string()).collect();
            Value::from(parts.join(s))
        }
        "isdigit" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_numeric())),
        "isspace" => Value::from(!s.is_empty() && s.chars().all(is_py_space)),
        _ => {
            return Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("string has no method `{method}`"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn smollm2() -> ChatTemplate {
        ChatTemplate::new(SMOLLM2, "<|im_start|>".into(), "<|im_end|>".into()).unwrap()
    }

    #[test]
    fn smollm2_default_system_prompt() {
        let out = smollm2()
            .render(&[ChatMessage::new("user", "hi")], true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = smollm2()
            .render(
                &[
                    ChatMessage::new("system", "S"),
                    ChatMessage::new("user", "hi"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        );
    }

    #[test]
    fn message_content_is_data_not_template() {
        let evil = "{{ raise_exception('boom') }} {% for x in range(10) %}x{% endfor %} {{ 7 * 6 }} \
                    {{ 7*7 }} {% for %} {% include \"/etc/passwd\" %} {% import 'x' as y %} {# c #}";
        let out = smollm2()
            .render(&[ChatMessage::new("system", evil)], false)
            .unwrap();
        assert_eq!(out, format!("<|im_start|>system\n{evil}<|im_end|>\n"));
    }

    /// A template is code from the checkpoint: it gets no file system. `include`, `import` and
    /// `extends` of any path fail (there is no loader), and so does recursion into itself.
    #[test]
    fn templates_cannot_read_files() {
        for src in [
            "{% include \"/etc/passwd\" %}",
            "{% include \"../../../../../../etc/passwd\" %}",
            "{% import \"/etc/passwd\" as p %}{{ p }}",
            "{% from \"/etc/passwd\" import root %}{{ root }}",
            "{% extends \"/etc/passwd\" %}",
            "{% include [\"/etc/hostname\", \"/etc/passwd\"] %}",
        ] {
            let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
            let err = t.render(&[], false).unwrap_err().to_string();
            assert!(err.contains("template not found"), "{src}: {err}");
            assert!(!err.contains("root:"), "{src}: {err}");
        }
        // Including itself: minijinja's recursion limit ends it with an error.
        let t = ChatTemplate::new(
            "x{% include \"chat_template\" %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("recursion"), "{err}");
    }

    /// Found by fuzzing (tests/fuzz_inputs): `[][::-1]` panics inside minijinja 2.24.
    #[test]
    fn an_engine_panic_is_a_render_error() {
        let t = ChatTemplate::new(
            "{% for m in messages[::-1] %}{{ m.content }}{% endfor %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let out = t.render(
            &[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")],
            false,
        );
        assert_eq!(out.unwrap(), "ba");
        let err = t.render(&[], false).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render(_)), "{err}");
        assert!(
            err.to_string().starts_with(
                "chat template failed to render: the template engine (minijinja) panicked: "
            ),
            "{err}"
        );
    }

    /// Found by fuzzing: a template that loops without end, prints without end, or indents JSON
    /// by a billion spaces stops with an error instead of hanging or exhausting memory.
    #[test]
    fn runaway_templates_are_errors() {
        let render = |src: &str| {
            ChatTemplate::new(src, String::new(), String::new())
                .unwrap()
                .render(&[ChatMessage::new("user", "x")], false)
                .unwrap_err()
                .to_string()
        };
        let t0 = std::time::Instant::now();
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        );
        assert!(
            err.contains("the template ran for more than 1000000 steps (an endless loop?)"),
            "{err}"
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
        let err = render("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
        assert!(
            err.contains("the rendered prompt would be longer than 64 MiB"),
            "{err}"
        );
        let err = render("{{ messages|tojson(indent=1000000000) }}");
        assert!(
            err.contains("tojson: indent=1000000000 is too large (at most 64)"),
            "{err}"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok",
            String::new(),
            String::new(),
        )
        .unwrap();
        let err = t
            .render(&[ChatMessage::new("assistant", "x")], false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation must start with user"),
            "{err}"
        );
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], false).unwrap(),
            "ok"
        );
    }

    #[test]
    fn syntax_error_is_reported() {
        let err =
            ChatTemplate::new("{% for m in messages %}", String::new(), String::new()).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Syntax(_)), "{err}");
    }

    #[test]
    fn python_string_methods() {
        let t = ChatTemplate::new(
            "{% for m in messages %}[{{ m.content.strip() }}|{{ m.content.lstrip() }}|{{ m.content.rstrip('\n ') }}|\
             {{ m.content.startswith(' a') }}|{{ m.content.endswith(('x', 'b\n')) }}|{{ m.content.split()|length }}|\
             {{ m.content.split('</think>')[-1].lstrip('\n') }}|{{ m.content.upper() }}|{{ m.content.replace('a', 'A') }}]{% endfor %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let out = t
            .render(&[ChatMessage::new("user", " a b\n")], false)
            .unwrap();
        assert_eq!(out, "[a b|a b\n| a b|True|True|2| a b\n| A B\n| A b\n]");
        let out = t
            .render(
                &[ChatMessage::new("user", "<think>r</think>\n\nans")],
                false,
            )
            .unwrap();
        assert!(out.contains("|ans|"), "{out}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        // transformers compiles with trim_blocks=True, lstrip_blocks=True.
        let t = ChatTemplate::new(
            "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}",
            String::new(),
            String::new(),
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "q")], false).unwrap(),
            "U:q\n"
        );
    }

    /// Python's separators and no HTML escaping, as jinja2 + transformers print. One known
    /// difference: Python keeps dict insertion order, while here maps come out sorted by key
    /// (minijinja and serde_json are built without their `preserve_order` features).
    #[test]
    fn tojson_like_python() {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "tools".into(),
            serde_json::json!([{"name": "f", "args": {"x": "<&>"}, "n": [1, 2]}]),
        );
        let t = ChatTemplate::new(
            "{{ tools[0]|tojson }}#{{ tools[0].n|tojson(indent=2) }}",
            String::new(),
            String::new(),
        )
        .unwrap();
        let out = t.render_with(&[], false, &extra).unwrap();
        assert_eq!(
            out,
            "{\"args\": {\"x\": \"<&>\"}, \"n\": [1, 2], \"name\": \"f\"}#[\n  1,\n  2\n]"
        );
    }

    #[test]
    fn dict_methods_and_defaults() {
        let mut extra = serde_json::Map::new();
        extra.insert("d".into(), serde_json::json!({"a": 1}));
        let t = ChatTemplate::new(
            "{% for k, v in d.items() %}{{ k }}={{ v }}{% endfor %} {{ d.get('a') }} {{ d.get('z', 5) }} {{ tools is none }} {{ bos_token }}",
            "<s>".into(),
            String::new(),
        )
        .unwrap();
        assert_eq!(
            t.render_with(&[], false, &extra).unwrap(),
            "a=1 1 5 True <s>"
        );
    }

    /// The constructs Qwen3's and Llama 3.1's templates rely on (written for this test, not
    /// copied): namespace, reversed slicing, loop.index0, `is string` / `is false` tests, `in`,
    /// split/lstrip/rstrip chains, `|trim`, whitespace control. Expected output checked with
    /// jinja2 under transformers' settings.
    const QWEN3_LIKE: &str = "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == \"assistant\" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') + '<|im_end|>\\n' }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content|trim + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}";

    #[test]
    fn qwen3_like_template() {
        let t = ChatTemplate::new(QWEN3_LIKE, String::new(), "<|im_end|>".into()).unwrap();
        let messages = [
            ChatMessage::new("user", " 2+2? "),
            ChatMessage::new("assistant", "<think>\nadd\n</think>\n\n4"),
            ChatMessage::new("user", "and 3+3?"),
            ChatMessage::new("assistant", "<think>\nadd again\n</think>\n\n6"),
        ];
        let out = t.render(&messages, false).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n\
             <|im_start|>user\nand 3+3?<|im_end|>\n\
             <|im_start|>assistant\n<think>\nadd again\n</think>\n\n6<|im_end|>\n"
        );
        let mut extra = serde_json::Map::new();
        extra.insert("enable_thinking".into(), serde_json::Value::Bool(false));
        let out = t.render_with(&messages[..1], true, &extra).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
        let out = t.render(&messages[..1], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:05:09 UTC was a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %A %B %%", t),
            "2024-07-26 13:05:09 Friday July %"
        );
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
        let now =
            ChatTemplate::new("{{ strftime_now('%Y') }}", String::new(), String::new()).unwrap();
        assert!(now.render(&[], false).unwrap().starts_with("20"));
    }

    #[test]
    fn smollm2_from_gguf_matches_transformers() {
        use crate::gguf::testutil::{smollm2_fixture, smollm2_gguf};
        use crate::gguf::{GgufFile, load_tokenizer, tokenizer_config};
        let test = "smollm2_from_gguf_matches_transformers";
        let (Some(path), Some(cases)) = (
            smollm2_gguf(test),
            smollm2_fixture(test, "tokenizer_cases.json"),
        ) else {
            return;
        };
        let file = GgufFile::open(&path).unwrap();
        let cfg = tokenizer_config(&file).unwrap();
        let template = ChatTemplate::new(
            cfg["chat_template"].as_str().unwrap(),
            cfg["bos_token"].as_str().unwrap().to_owned(),
            cfg["eos_token"].as_str().unwrap().to_owned(),
        )
        .unwrap();
        let tokenizer = load_tokenizer(&file).unwrap();
        for case in cases["chat_template"].as_array().unwrap() {
            let messages: Vec<ChatMessage> =
                serde_json::from_value(case["messages"].clone()).unwrap();
            let rendered = template.render(&messages, true).unwrap();
            assert_eq!(rendered, case["rendered"].as_str().unwrap());
            let ids = tokenizer
                .encode(rendered, false)
                .unwrap()
                .get_ids()
                .to_vec();
            let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            assert_eq!(ids, want);
        }
    }
}
