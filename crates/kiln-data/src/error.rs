//! Error type of kiln-data. Every message names the file and, for a bad record, its line (JSONL,
//! 1-based like an editor) or row (Parquet, 0-based like pandas) and the field.

use std::fmt;
use std::path::PathBuf;

/// Where in a file a record sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// A JSONL line, 1-based.
    Line(usize),
    /// A Parquet row, 0-based.
    Row(usize),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Line(n) => write!(f, "line {n}"),
            Loc::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// Errors from loading, mapping and sampling data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSONL line is not valid JSON.
    #[error("{}: {loc}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        loc: Loc,
        #[source]
        source: serde_json::Error,
    },
    /// A record is not a JSON object (or Parquet group).
    #[error("{}: {loc}: expected a JSON object, found {found}", path.display())]
    NotAnObject {
        path: PathBuf,
        loc: Loc,
        found: String,
    },
    /// A field the mapping needs is absent (or null).
    #[error("{}: {loc}: missing field `{field}`", path.display())]
    MissingField {
        path: PathBuf,
        loc: Loc,
        field: String,
    },
    /// A field is present but has the wrong type or an unusable value.
    #[error("{}: {loc}: field `{field}`: {message}", path.display())]
    BadField {
        path: PathBuf,
        loc: Loc,
        field: String,
        message: String,
    },
    /// The Parquet reader failed (bad file, unsupported codec, ...).
    #[error("{}: parquet: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
    /// No data directory could be found.
    #[error(
        "kiln data directory not found: set $KILN_DATA_DIR to the folder holding math500/, math/, \
         countdown/ and gsm8k/ (tried: {tried})"
    )]
    DataDirNotFound { tried: String },
    /// An invalid configuration (field mapping, generator knobs, sampler state).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias of kiln-data.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
