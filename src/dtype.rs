//! Storage formats, GGUF-compatible, and the one table that describes them.

use std::fmt;

/// A tensor storage format. Discriminants are ggml's `ggml_type` ids, so a GGUF tensor's type
/// field maps directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    /// IEEE binary32.
    F32 = 0,
    /// IEEE binary16.
    F16 = 1,
    /// 32-element blocks: an f16 scale `d` and 32 4-bit values `q`, `x = d · (q − 8)` (18 bytes).
    Q4_0 = 2,
    /// 32-element blocks: f16 scale `d` and minimum `m`, 32 4-bit values, `x = d · q + m` (20 bytes).
    Q4_1 = 3,
    /// 32-element blocks: an f16 scale `d` and 32 int8 values, `x = d · q` (34 bytes).
    Q8_0 = 8,
    /// Activation-side format (8-bit values, scale and scaled sum); not used for weights.
    Q8_1 = 9,
    /// bfloat16: the top half of an f32.
    BF16 = 30,
}

/// Static facts about a [`DType`].
#[derive(Debug, Clone, Copy)]
pub struct DTypeInfo {
    /// Lower-case name as ggml spells it (`"q4_1"`), also what [`DType`]'s `FromStr` accepts.
    pub name: &'static str,
    /// Elements per block (1 for plain float formats).
    pub block_elems: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Whether the matmul kernels accept this format as weights.
    pub weight_format: bool,
}

impl DType {
    /// Every format.
    pub const ALL: [DType; 7] = [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q8_1];
    /// The formats the matmul kernels take as weights.
    pub const WEIGHTS: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1];

    /// The one table of format facts.
    pub const fn info(self) -> DTypeInfo {
        let (name, block_elems, block_bytes, weight_format) = match self {
            DType::F32 => ("f32", 1, 4, true),
            DType::F16 => ("f16", 1, 2, true),
            DType::BF16 => ("bf16", 1, 2, true),
            DType::Q8_0 => ("q8_0", 32, 34, true),
            DType::Q4_0 => ("q4_0", 32, 18, true),
            DType::Q4_1 => ("q4_1", 32, 20, true),
            DType::Q8_1 => ("q8_1", 32, 36, false),
        };
        DTypeInfo { name, block_elems, block_bytes, weight_format }
    }

    /// ggml's type id, as stored in GGUF tensor infos.
    pub const fn ggml_id(self) -> u32 {
        self as u32
    }

    /// The format with this ggml type id, if sparq knows it.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.ggml_id() == id)
    }

    /// Bytes needed for `elems` elements; `None` if `elems` is not a whole number of blocks or
    /// the size overflows.
    pub fn bytes_for(self, elems: usize) -> Option<usize> {
        let info = self.info();
        if !elems.is_multiple_of(info.block_elems) {
            return None;
        }
        (elems / info.block_elems).checked_mul(info.block_bytes)
    }

    /// Whether the format stores integer blocks (and so uses the 8-bit activation path).
    pub const fn is_block_quantized(self) -> bool {
        self.info().block_elems > 1
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        DType::ALL
            .into_iter()
            .find(|d| d.info().name.eq_ignore_ascii_case(s))
            .ok_or_else(|| crate::Error::Invalid { what: "dtype", detail: format!("unknown dtype {s:?}") })
    }
}
