//! Loading a recipe: read the TOML, resolve `extends`, apply `--set` overrides, deserialise
//! into [`Recipe`] with the dotted path of any bad key, then validate.
//!
//! Merging works on `toml::Table`s before any typing, so a base may leave required keys to its
//! children and an override may touch any key, including ones a file leaves at its default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::error::RecipeError;
use super::schema::Recipe;
use super::validate::validate;

/// The longest `extends` chain followed (the recipe itself included).
pub const MAX_EXTENDS_DEPTH: usize = 16;

/// Tag keys of internally tagged tables (`kind` for data specs, `type` for entropy and
/// schedules). A child table whose tag differs from its base's replaces it whole, because the
/// base's variant-specific keys would be unknown keys of the child's variant.
const TAG_KEYS: [&str; 2] = ["kind", "type"];

/// Loads the recipe at `path`: follows `extends`, applies the `--set key=value` overrides in
/// order, deserialises and validates. The returned recipe has `extends = None`.
pub fn load_recipe(path: &Path, overrides: &[String]) -> Result<Recipe, RecipeError> {
    let mut origins = Origins::default();
    let mut table = resolve_file(path, &mut Vec::new(), &mut origins)?;
    for text in overrides {
        apply_override(&mut table, text, &mut origins)?;
    }
    let recipe = deserialize(table, path, &origins)?;
    validate(&recipe, path)?;
    Ok(recipe)
}

/// The merged table `load_recipe` deserialises (extends resolved, overrides applied), without
/// typing or validation: for tools that show what a recipe resolves to.
pub fn resolve_table(path: &Path, overrides: &[String]) -> Result<Table, RecipeError> {
    let mut origins = Origins::default();
    let mut table = resolve_file(path, &mut Vec::new(), &mut origins)?;
    for text in overrides {
        apply_override(&mut table, text, &mut origins)?;
    }
    Ok(table)
}

/// Loads a TOML file of another schema `T` with the recipe machinery: `extends`, `--set`
/// overrides, and errors that name the file and the dotted key (`kiln rm-train`'s recipes).
/// Validation is the caller's.
pub fn load_toml_as<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[String],
) -> Result<T, RecipeError> {
    let mut origins = Origins::default();
    let mut table = resolve_file(path, &mut Vec::new(), &mut origins)?;
    for text in overrides {
        apply_override(&mut table, text, &mut origins)?;
    }
    deserialize(table, path, &origins)
}

/// Parses and validates a self-contained recipe (no `extends`), e.g. the `recipe.toml` saved in
/// a run directory. `origin` names it in errors.
pub fn from_toml_str(text: &str, origin: &str) -> Result<Recipe, RecipeError> {
    let path = PathBuf::from(origin);
    let table = parse_table(text, &path)?;
    if table.contains_key("extends") {
        return Err(RecipeError::Extends {
            path,
            message: "`extends` is not allowed here: this recipe must be self-contained \
                      (load the file with load_recipe to resolve it)"
                .into(),
        });
    }
    let recipe = deserialize(table, &path, &Origins::default())?;
    validate(&recipe, &path)?;
    Ok(recipe)
}

/// The recipe as TOML (the resolved recipe a run saves as `recipe.toml`);
/// `from_toml_str(&to_toml(r), ..)` gives back `r`.
///
/// # Panics
///
/// Only for a recipe that [`validate`] rejects because TOML cannot hold it (a `seed` above
/// `i64::MAX`): every recipe that loads or validates serialises.
pub fn to_toml(recipe: &Recipe) -> String {
    // toml writes the keys in schema order and moves sub-tables after plain keys itself (so
    // `algorithm.entropy` may sit between scalar fields).
    toml::to_string(recipe).expect("a validated recipe is representable in TOML")
}

/// Where each dotted key of the merged table was last set: a file, or a `--set` override.
/// Used to point a key error at the file the user has to edit.
#[derive(Default)]
struct Origins(HashMap<String, Origin>);

enum Origin {
    File(PathBuf),
    Override(String),
}

impl Origins {
    fn record(&mut self, prefix: &str, value: &Value, origin: &dyn Fn() -> Origin) {
        self.0.insert(prefix.to_string(), origin());
        if let Value::Table(t) = value {
            for (k, v) in t {
                self.record(&format!("{prefix}.{k}"), v, origin);
            }
        }
    }

    fn record_table(&mut self, table: &Table, origin: &dyn Fn() -> Origin) {
        for (k, v) in table {
            self.record(k, v, origin);
        }
    }

    /// The origin of `key` or of its nearest enclosing table that has one.
    fn find(&self, key: &str) -> Option<&Origin> {
        let mut key = key;
        loop {
            if let Some(o) = self.0.get(key) {
                return Some(o);
            }
            key = &key[..key.rfind('.')?];
        }
    }
}

fn read_table(path: &Path) -> Result<Table, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_table(&text, path)
}

fn parse_table(text: &str, path: &Path) -> Result<Table, RecipeError> {
    text.parse::<Table>().map_err(|e| RecipeError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads `path` and everything it extends, merged (the file's own keys win). `chain` holds the
/// files being resolved (outermost first) as `(as named, canonical)` for cycle detection.
fn resolve_file(
    path: &Path,
    chain: &mut Vec<(PathBuf, PathBuf)>,
    origins: &mut Origins,
) -> Result<Table, RecipeError> {
    let mut table = read_table(path)?;
    // Canonical paths detect a cycle however the files name each other (`./a.toml`,
    // `../dir/a.toml`); the file was just read, so it exists.
    let canonical = path.canonicalize().map_err(|source| RecipeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(start) = chain.iter().position(|(_, c)| *c == canonical) {
        let cycle: Vec<String> = chain[start..]
            .iter()
            .map(|(p, _)| p.display().to_string())
            .chain([path.display().to_string()])
            .collect();
        return Err(RecipeError::Extends {
            path: chain[chain.len() - 1].0.clone(),
            message: format!("`extends` forms a cycle: {}", cycle.join(" -> ")),
        });
    }
    chain.push((path.to_path_buf(), canonical));
    if chain.len() > MAX_EXTENDS_DEPTH {
        let names: Vec<String> = chain.iter().map(|(p, _)| p.display().to_string()).collect();
        return Err(RecipeError::Extends {
            path: chain[0].0.clone(),
            message: format!(
                "`extends` chain is longer than {MAX_EXTENDS_DEPTH} files: {}",
                names.join(" -> ")
            ),
        });
    }

    let merged = match table.remove("extends") {
        None => {
            origins.record_table(&table, &|| Origin::File(path.to_path_buf()));
            table
        }
        Some(Value::String(base_name)) => {
            // Relative to the directory of the file that names it, not the working directory.
            // `./` parts are dropped so messages show `dir/base.toml`, not `dir/./base.toml`.
            let base_path: PathBuf = path
                .parent()
                .unwrap_or(Path::new(""))
                .join(&base_name)
                .components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect();
            if !base_path.is_file() {
                return Err(RecipeError::Extends {
                    path: path.to_path_buf(),
                    message: format!(
                        "extends = {base_name:?}: {} is not a file",
                        base_path.display()
                    ),
                });
            }
            let mut base = resolve_file(&base_path, chain, origins)?;
            origins.record_table(&table, &|| Origin::File(path.to_path_buf()));
            merge(&mut base, table);
            base
        }
        Some(other) => {
            return Err(RecipeError::Extends {
                path: path.to_path_buf(),
                message: format!(
                    "extends must be a string (a recipe path relative to this file), found {}",
                    describe(&other)
                ),
            });
        }
    };
    chain.pop();
    Ok(merged)
}

/// Deep merge: tables merge key by key (recursively); everything else in `child`, arrays
/// included, replaces what `base` has. A tagged table whose tag changes is replaced whole.
fn merge(base: &mut Table, child: Table) {
    for (key, value) in child {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(c)) if same_tags(b, &c) => merge(b, c),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Whether every tag the child table sets matches the base's.
fn same_tags(base: &Table, child: &Table) -> bool {
    TAG_KEYS
        .iter()
        .all(|tag| child.get(*tag).is_none_or(|t| base.get(*tag) == Some(t)))
}

/// Applies one `--set a.b.c=value`: the value is TOML (`2e-6`, `true`, `"s"`, `[1, 2]`,
/// `{ type = "tre-k", k = 2, coef = 0.001 }`), else the text itself as a string.
fn apply_override(table: &mut Table, text: &str, origins: &mut Origins) -> Result<(), RecipeError> {
    let err = |message: String| RecipeError::Override {
        text: text.to_string(),
        message,
    };
    let Some((key, raw)) = text.split_once('=') else {
        return Err(err(
            "expected key=value (e.g. --set optim.lr=2e-6 or --set rollout.n=16)".into(),
        ));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(err("the key before `=` is empty".into()));
    }
    let path = parse_key(key).ok_or_else(|| {
        err(format!(
            "`{key}` is not a dotted key (e.g. rollout.temperature; quote parts holding dots)"
        ))
    })?;
    if path[0] == "extends" {
        return Err(err(
            "`extends` cannot be overridden (it is resolved before overrides)".into(),
        ));
    }
    let value = parse_value(raw.trim());

    let (last, parents) = path
        .split_last()
        .expect("parse_key returns at least one part");
    let mut current = &mut *table;
    for (i, part) in parents.iter().enumerate() {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            other => {
                return Err(err(format!(
                    "cannot set a key inside `{}`: it is {}, not a table",
                    path[..=i].join("."),
                    describe(other)
                )));
            }
        };
    }
    origins.record(&path.join("."), &value, &|| {
        Origin::Override(text.to_string())
    });
    current.insert(last.clone(), value);
    Ok(())
}

/// The parts of a TOML dotted key (`a.b."c.d"` -> `[a, b, c.d]`), parsed by toml itself so
/// quoting works as in a file.
fn parse_key(key: &str) -> Option<Vec<String>> {
    let doc: Table = format!("{key} = 0").parse().ok()?;
    let mut parts = Vec::new();
    let mut table = &doc;
    loop {
        if table.len() != 1 {
            return None;
        }
        let (k, v) = table.iter().next()?;
        parts.push(k.clone());
        match v {
            Value::Table(t) => table = t,
            _ => return Some(parts),
        }
    }
}

/// A `--set` value: TOML if it parses as one value, else the raw text as a string (so
/// `--set model.path=/tmp/x` and `--set device=cuda:0` need no quotes). Dates are kept as
/// text: no recipe key is a date, and `2024-01-01` is more likely a name.
fn parse_value(raw: &str) -> Value {
    let doc: Option<Table> = format!("v = {raw}").parse().ok();
    match doc {
        Some(mut t) if t.len() == 1 => match t.remove("v") {
            Some(Value::Datetime(_)) | None => Value::String(raw.to_string()),
            Some(v) => v,
        },
        _ => Value::String(raw.to_string()),
    }
}

/// "an integer", "a table", ... for messages.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("a string ({s:?})"),
        Value::Integer(i) => format!("an integer ({i})"),
        Value::Float(f) => format!("a float ({f})"),
        Value::Boolean(b) => format!("a boolean ({b})"),
        Value::Datetime(d) => format!("a date-time ({d})"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// Deserialises the merged table, turning serde's message into one that names the dotted key
/// and the file that set it.
fn deserialize<T: serde::de::DeserializeOwned>(
    table: Table,
    path: &Path,
    origins: &Origins,
) -> Result<T, RecipeError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        let (key, mut message) = describe_serde_error(&at, e.inner().message());
        let file = match origins.find(&key) {
            Some(Origin::File(f)) => f.clone(),
            Some(Origin::Override(text)) => {
                message.push_str(&format!(" (set by --set `{text}`)"));
                // An unquoted value that reads as TOML (`123`, `true`) is not a string.
                if message.contains("expected a string") {
                    message.push_str("; quote a string value: --set 'key=\"text\"'");
                }
                path.to_path_buf()
            }
            None => path.to_path_buf(),
        };
        let key = if key.is_empty() {
            "(top level)".into()
        } else {
            key
        };
        RecipeError::Key {
            path: file,
            key,
            message,
        }
    })
}

/// Rewrites serde's wording for recipe users: `(key, message)`, the key extended to the field
/// at fault for unknown and missing keys.
fn describe_serde_error(at: &str, message: &str) -> (String, String) {
    let join = |field: &str| {
        if at.is_empty() {
            field.to_string()
        } else if at == field || at.ends_with(&format!(".{field}")) {
            at.to_string()
        } else {
            format!("{at}.{field}")
        }
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let expected = names(expected);
        let mut msg = "unknown key".to_string();
        if let Some(best) = closest(field, &expected) {
            msg.push_str(&format!("; did you mean `{best}`?"));
        }
        if expected.is_empty() {
            msg.push_str(" (this table takes no keys)");
        } else {
            msg.push_str(&format!(" (expected one of {})", expected.join(", ")));
        }
        return (join(field), msg);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((variant, expected)) = rest.split_once('`')
    {
        let expected = names(expected);
        let mut msg = format!("unknown value {variant:?}");
        if let Some(best) = closest(variant, &expected) {
            msg.push_str(&format!("; did you mean {best:?}?"));
        }
        msg.push_str(&format!(" (expected one of {})", expected.join(", ")));
        return (at.to_string(), msg);
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        let what = if field == "kind" || field == "type" {
            "missing: this table needs a `".to_string() + field + "` tag"
        } else {
            "missing (this key is required)".to_string()
        };
        return (join(field), what);
    }
    (at.to_string(), message.to_string())
}

/// The names in serde's "expected one of `a`, `b`" tail.
fn names(expected: &str) -> Vec<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The expected name nearest to a misspelt one (at most 2 edits, or a prefix either way).
fn closest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2 || c.starts_with(word) || word.starts_with(c.as_str()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_values_parse_as_toml_or_fall_back_to_text() {
        assert_eq!(parse_value("2e-6"), Value::Float(2e-6));
        assert_eq!(parse_value("16"), Value::Integer(16));
        assert_eq!(parse_value("true"), Value::Boolean(true));
        assert_eq!(parse_value("\"a b\""), Value::String("a b".into()));
        assert_eq!(parse_value("/tmp/x"), Value::String("/tmp/x".into()));
        assert_eq!(parse_value("cuda:0"), Value::String("cuda:0".into()));
        assert_eq!(
            parse_value("2024-01-01"),
            Value::String("2024-01-01".into())
        );
        assert_eq!(parse_value(""), Value::String(String::new()));
        let Value::Table(t) = parse_value("{ type = \"tre-k\", k = 2, coef = 0.001 }") else {
            panic!("inline table");
        };
        assert_eq!(t["k"], Value::Integer(2));
    }

    #[test]
    fn keys_parse_like_toml_dotted_keys() {
        assert_eq!(parse_key("a.b.c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            parse_key("tasks.\"x.y\".weight").unwrap(),
            ["tasks", "x.y", "weight"]
        );
        assert_eq!(parse_key("a..b"), None);
        assert_eq!(parse_key("a b"), None);
    }

    #[test]
    fn merge_is_deep_and_tag_aware() {
        let mut base: Table = "a = 1\n[t]\nx = 1\ny = [1, 2]\n[e]\ntype = \"tre-k\"\nk = 2\n"
            .parse()
            .unwrap();
        let child: Table = "[t]\ny = [3]\n[e]\ntype = \"tre-p\"\np = 0.9\n"
            .parse()
            .unwrap();
        merge(&mut base, child);
        let want: Table = "a = 1\n[t]\nx = 1\ny = [3]\n[e]\ntype = \"tre-p\"\np = 0.9\n"
            .parse()
            .unwrap();
        assert_eq!(base, want);
    }

    #[test]
    fn misspellings_get_a_suggestion() {
        let c: Vec<String> = ["temperature", "top_p", "n"].map(String::from).to_vec();
        assert_eq!(closest("temperatur", &c).as_deref(), Some("temperature"));
        assert_eq!(closest("zzzzzz", &c), None);
    }
}
