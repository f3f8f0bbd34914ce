//! GGUF reader over a byte slice.
//!
//! Takes bytes, not a path, because the bundle maps the GGUF out of the middle of our own
//! executable. Every count, offset and size comes from an untrusted file, so each is checked
//! against the bytes actually present before anything is allocated or sliced.

pub mod facts;

use kernels::GgmlType;
use std::collections::HashMap;
use std::fmt;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// A 64 KiB-long string in a GGUF key or value is already absurd; this bound keeps a hostile
/// length from turning into a giant allocation before the "past the end" check can fire.
const MAX_STRING_BYTES: u64 = 1 << 30;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic is {0:?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file is truncated: {what} at byte {offset} needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("metadata value of key '{key}' has unknown type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("string in {what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    #[error("tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS} allowed)")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor '{name}' has unknown type id {type_id}")]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor '{name}' has type {ty}, which this engine cannot compute with")]
    UnsupportedTensorType { name: String, ty: &'static str },
    #[error(
        "tensor '{name}' has dimensions {dims:?} that overflow or do not fit its type's blocks"
    )]
    BadShape { name: String, dims: Vec<u64> },
    #[error("tensor '{name}' lies past the end of the file (data at {offset}+{size}, file has {available} data bytes)")]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        available: usize,
    },
    #[error("tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("general.alignment is {0}, which is not a power of two")]
    BadAlignment(u64),
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    #[error("missing metadata key '{0}'")]
    MissingKey(String),
    #[error("metadata key '{key}' should be {expected}")]
    WrongType { key: String, expected: &'static str },
}

/// A metadata value as stored in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer type, since writers disagree on which width a count is stored in.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => self.as_i64().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(items) => write!(f, "[{} items]", items.len()),
            Value::Bool(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            other => write!(f, "{}", other.as_i64().unwrap_or_default()),
        }
    }
}

/// A tensor: a view into the file's data section, never a copy.
#[derive(Debug, Clone)]
pub struct Tensor<'a> {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length (the fastest-moving index).
    pub dims: Vec<u64>,
    pub data: &'a [u8],
}

impl Tensor<'_> {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    /// The product of the dimensions after the first; a tensor with empty rows still has them.
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }
}

pub struct Gguf<'a> {
    pub version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<Tensor<'a>>,
    tensor_index: HashMap<String, usize>,
}

impl<'a> Gguf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut reader = Reader { bytes, pos: 0 };
        let magic: [u8; 4] = reader.take(4, "magic")?.try_into().expect("took 4 bytes");
        if &magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = reader.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = reader.u64("tensor count")?;
        let n_kv = reader.u64("metadata count")?;

        // Each key-value pair takes at least 12 bytes, each tensor info at least 24, so counts
        // larger than the file allows are rejected before any vector is sized from them.
        reader.ensure_count(n_kv, 12, "metadata entries")?;
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = reader.string("metadata key")?;
            let type_id = reader.u32("metadata value type")?;
            let value = reader.value(type_id, &key)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match metadata_get(&metadata, &index, "general.alignment") {
            Some(v) => {
                let a = v.as_i64().ok_or_else(|| GgufError::WrongType {
                    key: "general.alignment".into(),
                    expected: "an integer",
                })? as u64;
                if a == 0 || !a.is_power_of_two() {
                    return Err(GgufError::BadAlignment(a));
                }
                a
            }
            None => DEFAULT_ALIGNMENT,
        };

        reader.ensure_count(n_tensors, 24, "tensor infos")?;
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = reader.string("tensor name")?;
            let n_dims = reader.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(reader.u64("tensor dimension")?);
            }
            let type_id = reader.u32("tensor type")?;
            let offset = reader.u64("tensor offset")?;
            infos.push((name, dims, type_id, offset));
        }

        let data_start = align_up(reader.pos as u64, alignment)
            .filter(|&start| start <= bytes.len() as u64)
            .unwrap_or(bytes.len() as u64) as usize;
        let data = &bytes[data_start..];

        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::with_capacity(infos.len());
        for (name, dims, type_id, offset) in infos {
            let tensor = tensor_view(name, dims, type_id, offset, alignment, data)?;
            if tensor_index
                .insert(tensor.name.clone(), tensors.len())
                .is_some()
            {
                return Err(GgufError::DuplicateTensor(tensor.name));
            }
            tensors.push(tensor);
        }

        Ok(Gguf {
            version,
            metadata,
            index,
            tensors,
            tensor_index,
        })
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn tensors(&self) -> &[Tensor<'a>] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor<'a>> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        metadata_get(&self.metadata, &self.index, key)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        expected: &'static str,
        convert: impl Fn(&'s Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => convert(v).map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.to_string(),
                expected,
            }),
        }
    }

    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "a non-negative 32-bit integer", |v| {
            v.as_i64().and_then(|i| u32::try_from(i).ok())
        })
    }

    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a number", Value::as_f32)
    }

    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    pub fn get_array_opt(&self, key: &str) -> Result<Option<&[Value]>, GgufError> {
        self.typed(key, "an array", Value::as_array)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.require(key)?;
        Ok(self.get_str_opt(key)?.expect("key is present"))
    }

    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.require(key)?;
        Ok(self.get_u32_opt(key)?.expect("key is present"))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.require(key)?;
        Ok(self.get_f32_opt(key)?.expect("key is present"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.require(key)?;
        Ok(self.get_bool_opt(key)?.expect("key is present"))
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.require(key)?;
        Ok(self.get_array_opt(key)?.expect("key is present"))
    }

    /// `general.architecture`, the prefix of every model hyperparameter key.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }
}

fn metadata_get<'m>(
    metadata: &'m [(String, Value)],
    index: &HashMap<String, usize>,
    key: &str,
) -> Option<&'m Value> {
    index.get(key).map(|&i| &metadata[i].1)
}

fn align_up(value: u64, alignment: u64) -> Option<u64> {
    value
        .checked_add(alignment - 1)
        .map(|v| v / alignment * alignment)
}

fn tensor_view<'a>(
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
    alignment: u64,
    data: &'a [u8],
) -> Result<Tensor<'a>, GgufError> {
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        name: name.clone(),
        type_id,
    })?;
    if !ty.is_supported_weight() {
        return Err(GgufError::UnsupportedTensorType {
            name,
            ty: ty.name(),
        });
    }
    let bad_shape = || GgufError::BadShape {
        name: name.clone(),
        dims: dims.clone(),
    };
    let row_len = usize::try_from(dims[0]).map_err(|_| bad_shape())?;
    let row_bytes = ty.row_bytes(row_len).ok_or_else(bad_shape)? as u64;
    let n_rows = dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(bad_shape)?;
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(bad_shape)?;
    let size = row_bytes.checked_mul(n_rows).ok_or_else(bad_shape)?;
    if !offset.is_multiple_of(alignment) {
        return Err(GgufError::Misaligned {
            name,
            offset,
            alignment,
        });
    }
    let end = offset.checked_add(size);
    if end.is_none_or(|end| end > data.len() as u64) {
        return Err(GgufError::TensorOutOfBounds {
            name,
            offset,
            size,
            available: data.len(),
        });
    }
    Ok(Tensor {
        name,
        ty,
        dims,
        data: &data[offset as usize..(offset + size) as usize],
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn truncated(&self, what: &'static str, needed: u64) -> GgufError {
        GgufError::Truncated {
            what,
            offset: self.pos,
            needed,
            available: self.remaining(),
        }
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() as u64 {
            return Err(self.truncated(what, n));
        }
        let slice = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(slice)
    }

    /// Rejects a count whose smallest possible encoding is already longer than what is left.
    fn ensure_count(
        &self,
        count: u64,
        min_bytes_each: u64,
        what: &'static str,
    ) -> Result<(), GgufError> {
        match count.checked_mul(min_bytes_each) {
            Some(needed) if needed <= self.remaining() as u64 => Ok(()),
            _ => Err(self.truncated(what, count.saturating_mul(min_bytes_each))),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > MAX_STRING_BYTES {
            return Err(self.truncated(what, len));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { what })
    }

    fn value(&mut self, type_id: u32, key: &str) -> Result<Value, GgufError> {
        const WHAT: &str = "metadata value";
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(WHAT)?[0]),
            1 => Value::I8(self.array::<1>(WHAT)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(WHAT)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(WHAT)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(WHAT)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(WHAT)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(WHAT)?)),
            7 => Value::Bool(self.array::<1>(WHAT)?[0] != 0),
            8 => Value::String(self.string("metadata string")?),
            9 => {
                let item_type = self.u32("array item type")?;
                let len = self.u64("array length")?;
                if item_type == 9 {
                    // Nested arrays are legal but unused by any model; refusing them bounds the
                    // recursion depth a hostile file could force.
                    return Err(GgufError::UnknownValueType {
                        key: key.to_string(),
                        type_id: item_type,
                    });
                }
                let min_item_bytes = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => {
                        return Err(GgufError::UnknownValueType {
                            key: key.to_string(),
                            type_id: item_type,
                        })
                    }
                };
                self.ensure_count(len, min_item_bytes, "metadata array")?;
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(item_type, key)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(WHAT)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(WHAT)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(WHAT)?)),
            _ => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_string(),
                    type_id,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests;
