//! Test support: a minimal GGUF writer (to build valid and deliberately broken files) and the
//! lookup of the SmolLM2 checkpoint and fixtures shared with the project.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::value::{MetaValue, type_id};

/// Builds GGUF bytes in memory.
pub struct Writer {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<(String, MetaValue)>,
    /// (name, ggml type, dims in GGUF order, raw data)
    pub tensors: Vec<(String, u32, Vec<u64>, Vec<u8>)>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(mut self, key: &str, value: MetaValue) -> Self {
        if key == "general.alignment"
            && let Some(a) = value.as_int()
        {
            self.alignment = a as u64;
        }
        self.kv.push((key.to_owned(), value));
        self
    }

    pub fn str(self, key: &str, value: &str) -> Self {
        self.kv(key, MetaValue::String(value.to_owned()))
    }

    pub fn u32(self, key: &str, value: u32) -> Self {
        self.kv(key, MetaValue::U32(value))
    }

    pub fn f32(self, key: &str, value: f32) -> Self {
        self.kv(key, MetaValue::F32(value))
    }

    /// An F32 tensor from values; `dims` in GGUF order.
    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor_raw(name, 0, dims, data)
    }

    pub fn tensor_raw(mut self, name: &str, ggml_type: u32, dims: &[u64], data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_owned(), ggml_type, dims.to_vec(), data));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(value_type(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, ty, dims, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment);
        }
        let data_start = (out.len() as u64).next_multiple_of(self.alignment);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(data);
        }
        out
    }

    /// Writes the file to a fresh temporary path and returns it.
    pub fn write(&self, tag: &str) -> TempFile {
        TempFile::with_bytes(tag, &self.to_bytes())
    }
}

fn value_type(v: &MetaValue) -> u32 {
    use type_id::*;
    match v {
        MetaValue::U8(_) => U8,
        MetaValue::I8(_) => I8,
        MetaValue::U16(_) => U16,
        MetaValue::I16(_) => I16,
        MetaValue::U32(_) => U32,
        MetaValue::I32(_) => I32,
        MetaValue::F32(_) => F32,
        MetaValue::Bool(_) => BOOL,
        MetaValue::String(_) => STRING,
        MetaValue::Array { .. } => ARRAY,
        MetaValue::U64(_) => U64,
        MetaValue::I64(_) => I64,
        MetaValue::F64(_) => F64,
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.extend(x.to_le_bytes()),
        MetaValue::I8(x) => out.extend(x.to_le_bytes()),
        MetaValue::U16(x) => out.extend(x.to_le_bytes()),
        MetaValue::I16(x) => out.extend(x.to_le_bytes()),
        MetaValue::U32(x) => out.extend(x.to_le_bytes()),
        MetaValue::I32(x) => out.extend(x.to_le_bytes()),
        MetaValue::F32(x) => out.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array { elem_type, items } => {
            out.extend(elem_type.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        MetaValue::U64(x) => out.extend(x.to_le_bytes()),
        MetaValue::I64(x) => out.extend(x.to_le_bytes()),
        MetaValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

pub fn str_array(items: &[&str]) -> MetaValue {
    MetaValue::Array {
        elem_type: type_id::STRING,
        items: items
            .iter()
            .map(|s| MetaValue::String((*s).to_owned()))
            .collect(),
    }
}

/// A file in the temp dir, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with_bytes(tag: &str, bytes: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "kiln-gguf-test-{}-{n}-{tag}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, bytes).expect("write temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The project's `shared/` folder: beside the repository in CI and on developer machines
/// (`<repo>/../shared`), or `/work/shared` when this file is built from a scratch crate.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("../../../shared"),
        PathBuf::from("/work/shared"),
    ]
    .into_iter()
    .map(|dir| dir.join(rel))
    .find(|p| p.exists())
}

/// The SmolLM2-135M-Instruct GGUF: `$KILN_SMOLLM2_GGUF`, else from `shared/models/`. Prints a
/// skip notice and returns `None` when it is absent.
pub fn smollm2_gguf(test: &str) -> Option<PathBuf> {
    let found = match std::env::var_os("KILN_SMOLLM2_GGUF") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        None => shared_path("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if found.is_none() {
        eprintln!(
            "SKIP {test}: SmolLM2-135M-Instruct.Q4_1.gguf not found (set KILN_SMOLLM2_GGUF or put it in <repo>/../shared/models/)"
        );
    }
    found
}

/// A fixture of `shared/fixtures/smollm2-135m/`, parsed; `None` (with a skip notice) if absent.
pub fn smollm2_fixture(test: &str, name: &str) -> Option<serde_json::Value> {
    let Some(path) = shared_path(&format!("fixtures/smollm2-135m/{name}")) else {
        eprintln!("SKIP {test}: shared/fixtures/smollm2-135m/{name} not found");
        return None;
    };
    let text = std::fs::read_to_string(&path).expect("read fixture");
    Some(serde_json::from_str(&text).expect("parse fixture"))
}
