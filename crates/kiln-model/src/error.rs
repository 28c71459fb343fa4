//! The one error type of kiln-model. Every variant names the file, tensor or key involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not found{hint}")]
    NotFound { path: PathBuf, hint: String },
    #[error("{path}: invalid config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: unknown architecture `{arch}` (supported: llama, qwen2, qwen3)")]
    UnknownArchitecture { path: PathBuf, arch: String },
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor `{tensor}`: {message}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("tokenizer ({origin}): {message}")]
    Tokenizer { origin: String, message: String },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("model `{model}`: {message}")]
    Resolve { model: String, message: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("device `{0}`: {1}")]
    Device(String, String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::NotFound {
                path,
                hint: String::new(),
            }
        } else {
            ModelError::Io { path, source }
        }
    }
}

/// Runs `f`, a call into a third-party crate that may panic on hostile input (minijinja,
/// tokenizers: both found by fuzzing), turning a panic into `Err("<who> panicked: <message>")`.
pub(crate) fn catch_panic<T>(who: &str, f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("{who} panicked: {what}")
    })
}
