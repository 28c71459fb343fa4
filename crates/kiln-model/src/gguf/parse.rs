//! Parsing of the GGUF header, metadata and tensor infos from the mapped bytes.
//!
//! Layout (little-endian, v2/v3): magic "GGUF", u32 version, u64 tensor count, u64 metadata
//! count, the metadata key/values, the tensor infos, padding to `general.alignment`, then the
//! tensor data. Every count and length is checked against the bytes left in the file before it
//! is used to allocate, so a corrupt length produces an error instead of a huge allocation.

use std::path::Path;

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::value::{MetaValue, min_encoded_size, type_id};

/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Deeper nesting is not produced by any writer; the limit keeps recursion bounded.
const MAX_ARRAY_DEPTH: usize = 8;
const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's entry in the GGUF tensor-info table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF / ggml order: `dims[0]` is the fastest-varying (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in row-major (numpy / PyTorch) order: GGUF's dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (checked at open time not to overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Size of the data in bytes, when the type is known and rows are whole blocks.
    pub fn n_bytes(&self) -> Option<u64> {
        let row = self.ggml_type.row_bytes(*self.dims.first().unwrap_or(&1))?;
        self.dims
            .iter()
            .skip(1)
            .try_fold(row, |acc, &d| acc.checked_mul(d))
    }
}

/// Everything before the tensor data.
pub(super) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// A bounds-checked little-endian cursor that knows which file it reads, for error messages.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a Path,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, what: impl FnOnce() -> String, needed: u64) -> GgufError {
        GgufError::Truncated {
            file: self.file.to_path_buf(),
            what: what(),
            offset: self.pos as u64,
            needed,
            available: self.left() as u64,
        }
    }

    fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt {
            file: self.file.to_path_buf(),
            what,
        }
    }

    /// Takes `n` bytes, or fails naming `what` when fewer are left.
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.left() as u64 {
            return Err(self.truncated(what, n));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length then the bytes. Invalid UTF-8 is replaced (values) or
    /// rejected (`strict`, for keys and tensor names, which must match exactly).
    fn string(&mut self, what: &dyn Fn() -> String, strict: bool) -> Result<String, GgufError> {
        let len = self.u64(|| format!("{} (string length)", what()))?;
        let bytes = self.take(len, || format!("{} (string of {len} bytes)", what()))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) if !strict => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Err(e) => Err(self.corrupt(format!("{} is not valid UTF-8 ({e})", what()))),
        }
    }

    /// One metadata value of type `ty`; `what` names the key for errors.
    fn value(
        &mut self,
        ty: u32,
        what: &dyn Fn() -> String,
        depth: usize,
    ) -> Result<MetaValue, GgufError> {
        use type_id::*;
        Ok(match ty {
            U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            BOOL => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.corrupt(format!("{}: invalid bool byte {b}", what()))),
            },
            STRING => MetaValue::String(self.string(what, false)?),
            ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(format!(
                        "{}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels",
                        what()
                    )));
                }
                let elem_type = self.u32(|| format!("{} (array element type)", what()))?;
                let Some(min) = min_encoded_size(elem_type) else {
                    return Err(self.corrupt(format!(
                        "{}: unknown array element type {elem_type}",
                        what()
                    )));
                };
                let count = self.u64(|| format!("{} (array length)", what()))?;
                // Guard the allocation: every element takes at least `min` bytes of the file.
                let needed = count.saturating_mul(min);
                if needed > self.left() as u64 {
                    return Err(self
                        .truncated(|| format!("{} (array of {count} elements)", what()), needed));
                }
                let mut items = Vec::with_capacity(count as usize);
                for i in 0..count {
                    let item_what = || format!("{}[{i}]", what());
                    items.push(self.value(elem_type, &item_what, depth + 1)?);
                }
                MetaValue::Array { elem_type, items }
            }
            other => {
                return Err(self.corrupt(format!("{}: unknown value type {other}", what())));
            }
        })
    }
}

/// Parses everything up to the tensor data and checks that each tensor's data lies in the file.
pub(super) fn parse_header(buf: &[u8], file: &Path) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0, file };
    let magic = c
        .take(4, || "the magic bytes".into())
        .map_err(|_| GgufError::NotGguf {
            file: file.to_path_buf(),
            magic: buf.to_vec(),
        })?;
    if magic != b"GGUF" {
        return Err(GgufError::NotGguf {
            file: file.to_path_buf(),
            magic: magic.to_vec(),
        });
    }
    let version = c.u32(|| "the header (version)".into())?;
    check_version(version, file)?;
    let n_tensors = c.u64(|| "the header (tensor count)".into())?;
    let n_kv = c.u64(|| "the header (metadata count)".into())?;

    // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes.
    if n_kv.saturating_mul(13) > c.left() as u64 {
        return Err(c.truncated(
            || format!("{n_kv} metadata entries"),
            n_kv.saturating_mul(13),
        ));
    }
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata entry #{i} (key)"), true)?;
        let what = || format!("metadata key `{key}`");
        let ty = c.u32(|| format!("{} (value type)", what()))?;
        let value = c.value(ty, &what, 0)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_int() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 30 => a as u64,
            _ => {
                return Err(c.corrupt(format!(
                    "general.alignment must be a power of two, found {v:?}"
                )));
            }
        },
    };

    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    if n_tensors.saturating_mul(24) > c.left() as u64 {
        return Err(c.truncated(
            || format!("{n_tensors} tensor infos"),
            n_tensors.saturating_mul(24),
        ));
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen = std::collections::HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("tensor info #{i} (name)"), true)?;
        let n_dims = c.u32(|| format!("tensor `{name}` (dimension count)"))?;
        if n_dims > MAX_DIMS {
            return Err(c.corrupt(format!(
                "tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(|| format!("tensor `{name}` (dimension {d})"))?);
        }
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_none_or(|n| n > i64::MAX as u64)
        {
            return Err(c.corrupt(format!("tensor `{name}` has an absurd shape {dims:?}")));
        }
        let ggml_type = GgmlType(c.u32(|| format!("tensor `{name}` (type)"))?);
        let offset = c.u64(|| format!("tensor `{name}` (data offset)"))?;
        if !seen.insert(name.clone()) {
            return Err(c.corrupt(format!("tensor `{name}` appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    for t in &tensors {
        check_tensor_extent(t, data_offset, buf.len() as u64, file)?;
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn check_version(version: u32, file: &Path) -> Result<(), GgufError> {
    let hint = match version {
        2 | 3 => return Ok(()),
        1 => "GGUF v1 is obsolete; re-convert the model with a current llama.cpp",
        _ if version.swap_bytes() == 2 || version.swap_bytes() == 3 => {
            "this is a big-endian GGUF file; only little-endian files are read"
        }
        _ => "kiln reads GGUF v2 and v3",
    };
    Err(GgufError::UnsupportedVersion {
        file: file.to_path_buf(),
        version,
        hint,
    })
}

/// Fails when the tensor's bytes are not all inside the file (the usual sign of a truncated
/// download). Tensors of types unknown to the size table are checked when read instead.
fn check_tensor_extent(
    t: &TensorInfo,
    data_offset: u64,
    file_len: u64,
    file: &Path,
) -> Result<(), GgufError> {
    let Some(size) = t.n_bytes() else {
        if t.ggml_type.block_geometry().is_some() {
            return Err(GgufError::Corrupt {
                file: file.to_path_buf(),
                what: format!(
                    "tensor `{}` of type {} has a row of {} elements, not a whole number of blocks",
                    t.name,
                    t.ggml_type,
                    t.dims.first().copied().unwrap_or(1)
                ),
            });
        }
        return Ok(());
    };
    let end = data_offset
        .checked_add(t.offset)
        .and_then(|s| s.checked_add(size));
    match end {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(GgufError::TensorDataTruncated {
            file: file.to_path_buf(),
            tensor: t.name.clone(),
            end: end.unwrap_or(u64::MAX),
            file_len,
        }),
    }
}

/// The absolute byte range of a tensor's data, when its size is known and it lies in the file.
pub(super) fn tensor_range(
    t: &TensorInfo,
    data_offset: u64,
    file_len: u64,
) -> Option<std::ops::Range<usize>> {
    let start = data_offset.checked_add(t.offset)?;
    let end = start.checked_add(t.n_bytes()?)?;
    (end <= file_len).then_some(start as usize..end as usize)
}
