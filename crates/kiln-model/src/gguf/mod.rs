//! GGUF checkpoints (llama.cpp's format): a memory-mapped reader, dequantization to f32, and a
//! Hugging Face view (`config.json`, HF tensor names and layouts, `tokenizers::Tokenizer`) so the
//! rest of kiln only deals with Hugging Face conventions.
//!
//! This module depends on nothing else in the crate (no burn): it is plain bytes to `Vec<f32>`.

mod dequant;
mod error;
mod ggml_type;
mod hf_view;
mod parse;
pub mod tokenizer;
mod value;

#[cfg(test)]
pub(crate) mod testutil;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use self::dequant::dequantize;
pub use self::error::GgufError;
pub use self::ggml_type::GgmlType;
pub use self::hf_view::{hf_config, hf_tensor, hf_tensor_names};
pub use self::parse::TensorInfo;
pub use self::tokenizer::{load_tokenizer, tokenizer_config};
pub use self::value::MetaValue;

/// An open GGUF file: parsed metadata and tensor infos, tensor data memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    map: Bytes,
}

/// The file's bytes: a read-only map, or nothing for an empty file (which cannot be mapped).
enum Bytes {
    Mapped(Mmap),
    Empty,
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Empty => &[],
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses `path`. Fails on a missing file, a non-GGUF file, GGUF v1, corrupt
    /// metadata, or a tensor whose data lies past the end of the file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            file: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let map = if len == 0 {
            Bytes::Empty
        } else {
            // SAFETY: the map is read-only. As with every mmap-based model loader, the file must
            // not be truncated or rewritten while it is open; kiln never writes GGUF files.
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        let header = parse::parse_header(map.as_slice(), &path)?;
        let meta_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            version: header.version,
            metadata: header.metadata,
            meta_index,
            tensors: header.tensors,
            tensor_index,
            alignment: header.alignment,
            data_offset: header.data_offset,
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        let found = match found {
            MetaValue::Array { .. } | MetaValue::String(_) => found.type_name(),
            other => format!("{} {other:?}", other.type_name()),
        };
        GgufError::WrongType {
            file: self.path.clone(),
            key: key.to_owned(),
            expected,
            found,
        }
    }

    /// Turns `Ok(None)` into a `MissingKey` error.
    pub fn require<T>(
        &self,
        key: &str,
        value: Result<Option<T>, GgufError>,
    ) -> Result<T, GgufError> {
        value?.ok_or_else(|| GgufError::MissingKey {
            file: self.path.clone(),
            key: key.to_owned(),
        })
    }

    /// A string value; `Ok(None)` if absent, an error if present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a string", v)),
        }
    }

    /// An integer of any GGUF integer type that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_int()
                .and_then(|i| u64::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v)),
        }
    }

    /// An integer of any GGUF integer type that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_int()
                .and_then(|i| u32::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an integer in u32 range", v)),
        }
    }

    /// A float (f32, f64, or an integer converted).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.wrong_type(key, "a number", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a bool", v)),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(MetaValue::as_str)
                    .collect::<Option<Vec<_>>>()
            })
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an array of strings", v))
    }

    /// An array of integers of any integer type.
    pub fn get_int_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|x| x.as_int().and_then(|i| i64::try_from(i).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an array of integers", v))
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn missing_tensor(&self, name: &str) -> GgufError {
        GgufError::MissingTensor {
            file: self.path.clone(),
            tensor: name.to_owned(),
        }
    }

    fn unsupported_type(&self, info: &TensorInfo) -> GgufError {
        GgufError::UnsupportedTensorType {
            file: self.path.clone(),
            tensor: info.name.clone(),
            ggml_type: info.ggml_type.to_string(),
        }
    }

    /// The raw (still quantized) bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.missing_tensor(name))?;
        let bytes = self.map.as_slice();
        if info.ggml_type.block_geometry().is_none() {
            return Err(self.unsupported_type(info));
        }
        // Extents were checked at open; this only fails if that check was skipped for the type.
        let range =
            parse::tensor_range(info, self.data_offset, bytes.len() as u64).ok_or_else(|| {
                GgufError::TensorDataTruncated {
                    file: self.path.clone(),
                    tensor: name.to_owned(),
                    end: u64::MAX,
                    file_len: bytes.len() as u64,
                }
            })?;
        Ok(&bytes[range])
    }

    /// The tensor dequantized to f32, with its shape in row-major (numpy / PyTorch) order.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.missing_tensor(name))?;
        let data = self.tensor_bytes(name)?;
        let values = dequantize(info.ggml_type, data, info.n_elements() as usize)
            .ok_or_else(|| self.unsupported_type(info))?;
        Ok((info.shape(), values))
    }
}

#[cfg(test)]
mod tests;
