//! Writing GGUF v3 files: metadata and tensors in, bytes out (readable by [`super::Gguf`] and by
//! ggml's own reader). Used to build synthetic models for benches and tests.

use super::gguf::Value;
use crate::{DType, Error, Result};

const ALIGNMENT: usize = 32;

/// A GGUF file under construction.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    /// name, GGUF dims (`dims[0]` contiguous), format, data
    tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file: add metadata and tensors, then write it.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata entry; arrays must hold values of one type (as GGUF requires).
    pub fn metadata(&mut self, key: &str, value: Value) -> Result<&mut Self> {
        fn homogeneous(v: &Value) -> bool {
            match v {
                Value::Array(items) => items.iter().all(|i| type_id(i) == type_id(&items[0]) && homogeneous(i)),
                _ => true,
            }
        }
        if !homogeneous(&value) {
            return Err(Error::Gguf(format!("metadata {key:?}: an array mixes value types")));
        }
        self.metadata.push((key.to_string(), value));
        Ok(self)
    }

    /// Adds a tensor; `bytes` must hold exactly the `dims` (GGUF order) in `dtype`.
    pub fn tensor(&mut self, name: &str, dims: &[usize], dtype: DType, bytes: Vec<u8>) -> Result<&mut Self> {
        let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|e| dtype.bytes_for(e));
        if expected != Some(bytes.len()) {
            return Err(Error::Gguf(format!("tensor {name:?}: {dims:?} {dtype} needs {expected:?} bytes, got {}", bytes.len())));
        }
        self.tensors.push((name.to_string(), dims.to_vec(), dtype, bytes));
        Ok(self)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&type_id(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for (name, dims, dtype, bytes) in &self.tensors {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|&d| out.extend_from_slice(&(d as u64).to_le_bytes()));
            out.extend_from_slice(&dtype.ggml_id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + bytes.len()).next_multiple_of(ALIGNMENT);
        }
        for (_, _, _, bytes) in &self.tensors {
            out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
            out.extend_from_slice(bytes);
        }
        out
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array is written as an array of u8 (its element type is not recoverable).
            let elem = items.first().map_or(0, type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(out, i));
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
