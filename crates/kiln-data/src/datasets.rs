//! Loaders for the data sets in `shared/data` and the data directory lookup.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::loader::{FieldMap, JsonlLoader};
use crate::templates::{CountdownTemplate, MathTemplate};

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "KILN_DATA_DIR";

/// The data directory: `$KILN_DATA_DIR` when set and non-empty (it must then be a directory,
/// else this is an error), otherwise `shared/data` beside the workspace
/// (`<kiln-data crate>/../../../shared/data`, fixed at compile time).
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_dir() {
            return Ok(dir);
        }
        // An explicit setting that is wrong is an error, not a silent fallback.
        return Err(DataError::DataDirNotFound {
            tried: format!("${DATA_DIR_ENV}={} (not a directory)", dir.display()),
        });
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.is_dir() {
        return Ok(dir.canonicalize().unwrap_or(dir));
    }
    Err(DataError::DataDirNotFound {
        tried: format!("${DATA_DIR_ENV} unset; {} (not a directory)", dir.display()),
    })
}

/// Standard file locations under the data directory.
pub mod files {
    /// MATH-500 test set.
    pub const MATH500: &str = "math500/test.jsonl";
    /// MATH train set (7,500 problems).
    pub const MATH_TRAIN: &str = "math/train.jsonl";
    /// Countdown train subset (11,264 rows of TinyZero's train split).
    pub const COUNTDOWN_TRAIN: &str = "countdown/train.jsonl";
    /// Countdown test split (TinyZero's default 1,024 rows).
    pub const COUNTDOWN_TEST: &str = "countdown/test.jsonl";
    /// GSM8K train set.
    pub const GSM8K_TRAIN: &str = "gsm8k/train.jsonl";
    /// GSM8K test set.
    pub const GSM8K_TEST: &str = "gsm8k/test.jsonl";
}

/// MATH-500 with the chat prompt. Ids are the `unique_id`s (`test/precalculus/807.json`).
pub fn load_math500(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    load_math500_with(path, MathTemplate::Chat)
}

/// MATH-500 with a chosen prompt template.
pub fn load_math500_with(path: impl AsRef<Path>, template: MathTemplate) -> Result<Vec<Example>> {
    JsonlLoader::new(FieldMap::math500(template)).load(path)
}

/// The MATH train set with the chat prompt. The records with an empty answer (idx 5341 and 5343
/// in `shared/data/math`) are dropped, each with a logged warning. Ids: `math/train/{idx}`.
pub fn load_math_train(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    load_math_train_with(path, MathTemplate::Chat)
}

/// The MATH train set with a chosen prompt template.
pub fn load_math_train_with(
    path: impl AsRef<Path>,
    template: MathTemplate,
) -> Result<Vec<Example>> {
    JsonlLoader::new(FieldMap::math_train(template)).load(path)
}

/// Countdown with TinyZero's `base` prompt. Ids: `countdown/{file stem}/{index}`.
pub fn load_countdown(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    load_countdown_with(path, CountdownTemplate::Base)
}

/// Countdown with a chosen prompt template.
pub fn load_countdown_with(
    path: impl AsRef<Path>,
    template: CountdownTemplate,
) -> Result<Vec<Example>> {
    JsonlLoader::new(FieldMap::countdown(template)).load(path)
}

/// GSM8K with the chat prompt; the reference is the number after the last `####` (commas
/// removed). Ids: `gsm8k/{file stem}/{index}`.
pub fn load_gsm8k(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    load_gsm8k_with(path, MathTemplate::Chat)
}

/// GSM8K with a chosen prompt template.
pub fn load_gsm8k_with(path: impl AsRef<Path>, template: MathTemplate) -> Result<Vec<Example>> {
    JsonlLoader::new(FieldMap::gsm8k(template)).load(path)
}
