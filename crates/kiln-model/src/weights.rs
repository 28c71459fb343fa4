//! Where weights come from: Hugging Face safetensors (single file or sharded) and GGUF files,
//! both seen through Hugging Face tensor names and shapes, converted to f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result, io_err};
use crate::gguf::{self, GgufFile};

/// A dense f32 tensor on the host, row-major, in Hugging Face's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A checkpoint's tensors by Hugging Face name.
pub trait TensorSource {
    /// The file or directory, for error messages.
    fn origin(&self) -> &Path;
    /// The tensor called `name`, or `None` when the checkpoint has no such tensor.
    fn tensor(&self, name: &str) -> Result<Option<HostTensor>>;
}

/// One or several memory-mapped safetensors files (sharded checkpoints list their shards in
/// `model.safetensors.index.json`).
pub struct SafetensorsSource {
    origin: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`.
    index: BTreeMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens the weights of a Hugging Face model directory.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            Self::open_files(dir, &[single])
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
                    path: index.clone(),
                    message: format!("index is not valid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Safetensors {
                    path: index.clone(),
                    message: "index has no `weight_map` object".into(),
                })?;
            let mut shards: Vec<PathBuf> = map
                .values()
                .filter_map(|f| f.as_str())
                .map(|f| dir.join(f))
                .collect();
            shards.sort();
            shards.dedup();
            Self::open_files(dir, &shards)
        } else {
            Err(ModelError::NotFound {
                path: single,
                hint: " (nor model.safetensors.index.json)".into(),
            })
        }
    }

    /// Opens the given safetensors files as one checkpoint.
    pub fn open_files(origin: &Path, paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let file = std::fs::File::open(path).map_err(io_err(path))?;
            // SAFETY: the file is only read; a concurrent truncation by another process is the
            // one way this can fault, the same contract as every mmap-based loader.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            drop(st);
            files.push((path.clone(), mmap));
        }
        Ok(SafetensorsSource {
            origin: origin.to_path_buf(),
            files,
            index,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

impl TensorSource for SafetensorsSource {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn tensor(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let (path, mmap) = &self.files[i];
        let bad = |message: String| ModelError::BadTensor {
            path: path.clone(),
            tensor: name.to_string(),
            message,
        };
        let st = SafeTensors::deserialize(mmap).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(bad(format!(
                    "dtype {other:?} is not a float type kiln loads"
                )));
            }
        };
        Ok(Some(HostTensor {
            shape: view.shape().to_vec(),
            data,
        }))
    }
}

/// A GGUF file seen through Hugging Face names (see `gguf::hf_tensor`).
pub struct GgufSource {
    pub file: GgufFile,
    origin: PathBuf,
    names: BTreeMap<String, String>,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let names = gguf::hf_tensor_names(&file).into_iter().collect();
        Ok(GgufSource {
            file,
            origin: path.to_path_buf(),
            names,
        })
    }
}

impl TensorSource for GgufSource {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn tensor(&self, name: &str) -> Result<Option<HostTensor>> {
        if !self.names.contains_key(name) {
            return Ok(None);
        }
        let (shape, data) = gguf::hf_tensor(&self.file, name)?;
        Ok(Some(HostTensor { shape, data }))
    }
}
