//! A GGUF (v2, v3) reader over a memory map: metadata, tensor infos, zero-copy tensor views.
//!
//! Everything the file claims is checked before it is used: counts and lengths are bounded by
//! the bytes actually left (no allocation of whatever size a hostile header names), dimensions
//! are multiplied with overflow checks, offsets must be aligned and lie inside the file, types
//! must be known, names unique. Any violation is an [`Error::Gguf`] naming what was wrong and
//! where — never a panic.

use crate::{DType, Error, Result};
use std::collections::HashMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// Deepest nesting of arrays accepted (GGUF files use 1).
const MAX_DEPTH: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
/// GGUF's value types, one variant each (type ids 0–12).
pub enum Value {
    /// GGUF `u8`.
    U8(u8),
    /// GGUF `i8`.
    I8(i8),
    /// GGUF `u16`.
    U16(u16),
    /// GGUF `i16`.
    I16(i16),
    /// GGUF `u32`.
    U32(u32),
    /// GGUF `i32`.
    I32(i32),
    /// GGUF `u64`.
    U64(u64),
    /// GGUF `i64`.
    I64(i64),
    /// GGUF `f32`.
    F32(f32),
    /// GGUF `f64`.
    F64(f64),
    /// GGUF `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values of one type (checked when read).
    Array(Vec<Value>),
}

impl Value {
    /// Any integer type as u64 (if non-negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// Either float type, or any integer, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor lies and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// GGUF order: `dims[0]` is the contiguous one (ggml's `ne0`).
    pub dims: Vec<usize>,
    /// Its storage format.
    pub dtype: DType,
    /// Byte offset inside the file.
    pub offset: usize,
    /// Its length in bytes (checked to lie inside the file).
    pub bytes: usize,
}

impl TensorInfo {
    /// Elements: the product of the dims.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The file's bytes: a memory map, or an owned buffer (tests, fuzzing).
#[derive(Debug)]
enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened GGUF file.
#[derive(Debug)]
pub struct Gguf {
    bytes: Bytes,
    version: u32,
    metadata: HashMap<String, Value>,
    /// In file order; private, so the offsets checked at open cannot be changed afterwards.
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

fn bad<T>(detail: impl Into<String>) -> Result<T> {
    Err(Error::Gguf(detail.into()))
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(end) => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bad(format!("truncated: {what} ({n} bytes) at offset {} runs past the end ({} bytes)", self.pos, self.b.len())),
        }
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    /// A count of items each at least `min_bytes` long: refused if the rest of the file could
    /// not hold that many.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return bad(format!("{what} = {n} at offset {} cannot fit in the {} bytes left", self.pos - 8, self.remaining()));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).or_else(|_| bad(format!("{what} at offset {} is not UTF-8", self.pos - n)))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>("u8")?[0]),
            1 => Value::I8(self.arr::<1>("i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.arr("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.arr("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.arr("f32")?)),
            7 => match self.arr::<1>("bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return bad(format!("bool value {b} at offset {}", self.pos - 1)),
            },
            8 => Value::String(self.string("string length")?),
            9 => {
                if depth >= MAX_DEPTH {
                    return bad(format!("arrays nested deeper than {MAX_DEPTH} at offset {}", self.pos));
                }
                let elem = self.u32("array type")?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => return bad(format!("unknown array element type {t} at offset {}", self.pos - 4)),
                };
                let n = self.count("array length", min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.arr("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.arr("f64")?)),
            t => return bad(format!("unknown metadata value type {t} at offset {}", self.pos - 4)),
        })
    }
}

impl Gguf {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        // Another process truncating the file while it is mapped is outside what any mmap reader
        // can defend against; sparq itself never writes to or truncates model files.
        // SAFETY: read-only private map; nothing in sparq writes through it or resizes the file.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io(format!("{}: mmap: {e}", path.display())))?;
        Gguf::parse(Bytes::Map(map)).map_err(|e| match e {
            Error::Gguf(d) => Error::Gguf(format!("{}: {d}", path.display())),
            e => e,
        })
    }

    /// Parses a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf> {
        Gguf::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<Gguf> {
        let b: &[u8] = match &bytes {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        };
        let mut c = Cursor { b, pos: 0 };
        if c.take(4, "magic")? != MAGIC {
            return bad("not a GGUF file (bad magic)");
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return bad(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        // Smallest tensor info: 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset); kv: 8 + 4 + 1.
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let value = c.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return bad(format!("duplicate metadata key {key:?}"));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return bad(format!("general.alignment {v:?} is not a power of two ≤ 1 MiB")),
            },
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor dims")? as usize;
            if n_dims == 0 || n_dims > 4 {
                return bad(format!("tensor {name:?}: {n_dims} dimensions (1 to 4 supported)"));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64("tensor dim")?;
                dims.push(usize::try_from(d).or_else(|_| bad(format!("tensor {name:?}: dimension {d} too large")))?);
            }
            let ty = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            infos.push((name, dims, ty, offset));
        }
        let data_start = c.pos.next_multiple_of(alignment);
        let mut tensors = Vec::with_capacity(infos.len());
        let mut by_name = HashMap::new();
        for (name, dims, ty, offset) in infos {
            let dtype = DType::from_ggml_id(ty).ok_or_else(|| Error::Gguf(format!("tensor {name:?}: ggml type {ty} is not supported")))?;
            let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let bytes = elems.and_then(|e| dtype.bytes_for(e));
            let Some(bytes) = bytes else {
                return bad(format!("tensor {name:?}: dimensions {dims:?} overflow or are not whole {dtype} blocks"));
            };
            if offset % alignment as u64 != 0 {
                return bad(format!("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}"));
            }
            let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
            let end = start.and_then(|s| s.checked_add(bytes)).filter(|&e| e <= b.len());
            let (Some(start), Some(_)) = (start, end) else {
                return bad(format!("tensor {name:?}: {bytes} bytes at data offset {offset} run past the end of the file ({} bytes)", b.len()));
            };
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return bad(format!("duplicate tensor name {name:?}"));
            }
            tensors.push(TensorInfo { name, dims, dtype, offset: start, bytes });
        }
        Ok(Gguf { bytes, version, metadata, tensors, by_name })
    }

    /// The file's GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata key and value.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.metadata
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// The tensor called `name`; an error naming it if there is none.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i]).ok_or_else(|| Error::Gguf(format!("tensor {name:?} not found")))
    }

    /// The position of the tensor called `name` in [`Gguf::tensors`].
    pub fn tensor_index(&self, name: &str) -> Result<usize> {
        self.by_name.get(name).copied().ok_or_else(|| Error::Gguf(format!("tensor {name:?} not found")))
    }

    /// The bytes of `tensors[index]` (checked at open to lie inside the file).
    pub fn tensor_bytes(&self, index: usize) -> &[u8] {
        let t = &self.tensors[index];
        &self.data()[t.offset..t.offset + t.bytes]
    }

    /// A tensor's bytes, zero-copy (checked at open to lie inside the file).
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self.tensor_info(name)?;
        Ok((t, &self.data()[t.offset..t.offset + t.bytes]))
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required integer metadata value.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| Error::Gguf(format!("metadata {key:?} missing or not an integer")))
    }

    /// A required float metadata value.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key).and_then(Value::as_f64).ok_or_else(|| Error::Gguf(format!("metadata {key:?} missing or not a number")))
    }

    /// A required string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key).and_then(Value::as_str).ok_or_else(|| Error::Gguf(format!("metadata {key:?} missing or not a string")))
    }
}
