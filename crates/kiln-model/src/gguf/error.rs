//! Errors of the GGUF reader. Every variant names the file, and the key or tensor when there is
//! one, so a user with a corrupt or unsupported checkpoint knows what to fix.

use std::path::PathBuf;

/// Anything that can go wrong reading a GGUF file or viewing it with Hugging Face conventions.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, inspected or memory-mapped.
    #[error("{}: cannot read GGUF file: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("{}: not a GGUF file (magic bytes {magic:02x?}, expected \"GGUF\")", file.display())]
    NotGguf { file: PathBuf, magic: Vec<u8> },

    /// GGUF v1 (u32 counts) and future versions are not read; big-endian files are reported here too.
    #[error("{}: unsupported GGUF version {version} ({hint})", file.display())]
    UnsupportedVersion {
        file: PathBuf,
        version: u32,
        hint: &'static str,
    },

    /// A read ran past the end of the file: the file is truncated, or a length field is corrupt.
    #[error(
        "{}: truncated or corrupt: {what} needs {needed} bytes at offset {offset}, but only {available} are left",
        file.display()
    )]
    Truncated {
        file: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// A tensor's data lies (partly) past the end of the file.
    #[error(
        "{}: tensor `{tensor}` is truncated: its data ends at byte {end} but the file has {file_len} bytes",
        file.display()
    )]
    TensorDataTruncated {
        file: PathBuf,
        tensor: String,
        end: u64,
        file_len: u64,
    },

    /// A structurally invalid field: bad value type, bad dimension count, invalid UTF-8, ...
    #[error("{}: corrupt GGUF: {what}", file.display())]
    Corrupt { file: PathBuf, what: String },

    /// A required metadata key is absent.
    #[error("{}: missing metadata key `{key}`", file.display())]
    MissingKey { file: PathBuf, key: String },

    /// A metadata key holds a value of another type (or out of range for the requested one).
    #[error("{}: metadata key `{key}`: expected {expected}, found {found}", file.display())]
    WrongType {
        file: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A tensor name that the file does not contain.
    #[error("{}: no tensor named `{tensor}`", file.display())]
    MissingTensor { file: PathBuf, tensor: String },

    /// The tensor is stored in a ggml type this reader cannot dequantize.
    #[error(
        "{}: tensor `{tensor}` has ggml type {ggml_type}, which kiln cannot dequantize \
         (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)",
        file.display()
    )]
    UnsupportedTensorType {
        file: PathBuf,
        tensor: String,
        ggml_type: String,
    },

    /// `general.architecture` names a model family kiln does not implement.
    #[error(
        "{}: unknown architecture `{arch}` (supported: llama, qwen2, qwen3)",
        file.display()
    )]
    UnknownArchitecture { file: PathBuf, arch: String },

    /// A feature of the checkpoint (tokenizer model, pre-tokenizer, rope scaling, ...) kiln does not handle.
    #[error("{}: unsupported: {what}", file.display())]
    Unsupported { file: PathBuf, what: String },

    /// The `tokenizers` crate refused the vocabulary rebuilt from the file.
    #[error("{}: cannot build tokenizer: {message}", file.display())]
    Tokenizer { file: PathBuf, message: String },
}
