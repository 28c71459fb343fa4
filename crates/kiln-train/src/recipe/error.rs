//! Recipe errors. Each names the recipe file (or the `--set` override) and, where there is one,
//! the dotted key, so the message alone tells the user what to edit.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong loading a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file (or a base it extends) cannot be read.
    #[error("cannot read recipe {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax error; `message` is the toml crate's, with the line and column.
    #[error("recipe {} is not valid TOML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A key the schema does not have, a value of the wrong type, a missing required key.
    #[error("recipe {}: {key}: {message}", path.display())]
    Key {
        /// The file that defined the key (the recipe given for keys from `--set`).
        path: PathBuf,
        /// Dotted key path, e.g. `rollout.temperature` or `tasks.countdown.train`.
        key: String,
        message: String,
    },
    /// Semantic problems, all of them. Each is `(key, message)`, where the message is a whole
    /// line that starts with the key (e.g. `rollout.n = 0: must be at least 1`).
    #[error("{}", ProblemList { path, problems })]
    Invalid {
        path: PathBuf,
        problems: Vec<(String, String)>,
    },
    /// `extends` is malformed, forms a cycle, is too deep, or is not allowed here.
    #[error("recipe {}: {message}", path.display())]
    Extends { path: PathBuf, message: String },
    /// A malformed `--set key=value`, or one that cannot be applied.
    #[error("--set `{text}`: {message}")]
    Override { text: String, message: String },
}

impl RecipeError {
    /// The dotted keys this error is about (empty for I/O, syntax and override errors).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Self::Key { key, .. } => vec![key.as_str()],
            Self::Invalid { problems, .. } => problems.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// Display helper for [`RecipeError::Invalid`]: one problem on one line, several as a list.
struct ProblemList<'a> {
    path: &'a PathBuf,
    problems: &'a [(String, String)],
}

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.problems {
            [] => write!(f, "recipe {path} is invalid"),
            [(_, message)] => write!(f, "recipe {path}: {message}"),
            many => {
                write!(f, "recipe {path} has {} problems:", many.len())?;
                for (_, message) in many {
                    write!(f, "\n  {message}")?;
                }
                Ok(())
            }
        }
    }
}
