//! The CPU backend: instruction-set levels, detected once, and one kernel table per level.
//!
//! `Isa::selected()` picks the best level this CPU supports, capped by `SPARQ_MAX_ISA` and
//! checked against `SPARQ_REQUIRE_ISA`. `Kernels::for_isa` is the one place that maps a level
//! to code: each level's table holds `#[target_feature]` entry points stamped by
//! `isa_entry_points!`, each a three-line wrapper instantiating a generic kernel body (in
//! `kernels/`) with that level's SIMD token (in `simd/`).

pub(crate) mod kernels;
pub(crate) mod pool;
pub(crate) mod simd;
#[cfg(test)]
mod tests;

use crate::kv_cache::KvDtype;
use crate::matmul::Layout;
use crate::{DType, Error, Result};
use kernels::attend::{AttnRows, KvSpan};
use kernels::quant_panel::PanelBuf;
use kernels::{Acts, TaskOut, WeightView};
use std::sync::OnceLock;

/// A CPU instruction-set level, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust on 8-lane arrays; every target.
    Scalar,
    /// 8-lane vectors from the `wide` crate (SSE2/NEON/… as compiled); every target.
    Portable,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ (integer dot products via `vpmaddubsw`).
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`).
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU can run this level (detected at run time).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar | Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => simd::x86::Avx2::detect(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => simd::x86::Avx512::detect(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => simd::x86::Avx512Vnni::detect(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every level this CPU supports, least capable first. Tests and benches iterate this.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The supported levels up to the `SPARQ_MAX_ISA` cap (all of them when it is unset): the
    /// levels the test suites exercise, so that `SPARQ_MAX_ISA=scalar cargo test` runs the
    /// scalar level alone. Errors as [`Isa::selected`] if the variable names no level.
    pub fn allowed() -> Result<Vec<Isa>> {
        Ok(Isa::up_to(env_isa("SPARQ_MAX_ISA")?))
    }

    /// [`Isa::allowed`]'s rule with an explicit cap.
    pub fn up_to(cap: Option<Isa>) -> Vec<Isa> {
        let cap = cap.unwrap_or(Isa::Avx512Vnni);
        Isa::available().into_iter().filter(|i| *i <= cap).collect()
    }

    /// The most capable supported level, ignoring the environment.
    pub fn best() -> Isa {
        Isa::available().into_iter().max().unwrap_or(Isa::Scalar)
    }

    /// The level sparq uses by default: [`Isa::best`], capped by `SPARQ_MAX_ISA`; an error if
    /// `SPARQ_REQUIRE_ISA` names a level that is then not available, or if either variable does
    /// not name a level. Decided once per process.
    pub fn selected() -> Result<Isa> {
        static CHOICE: OnceLock<Result<Isa>> = OnceLock::new();
        CHOICE.get_or_init(|| Isa::choose(env_isa("SPARQ_MAX_ISA")?, env_isa("SPARQ_REQUIRE_ISA")?)).clone()
    }

    /// [`Isa::selected`]'s rule with explicit inputs.
    pub fn choose(max: Option<Isa>, require: Option<Isa>) -> Result<Isa> {
        let cap = max.unwrap_or(Isa::Avx512Vnni);
        let chosen = Isa::available().into_iter().filter(|i| *i <= cap).max().unwrap_or(Isa::Scalar);
        match require {
            Some(req) if !req.is_supported() => {
                Err(Error::IsaUnavailable { requested: req.to_string(), source_of_request: "SPARQ_REQUIRE_ISA", best: Isa::best().to_string() })
            }
            Some(req) if chosen != req => {
                Err(Error::Invalid { what: "SPARQ_REQUIRE_ISA", detail: format!("requires {req}, but SPARQ_MAX_ISA={cap} selects {chosen}") })
            }
            _ => Ok(chosen),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isa> {
        let names = || Isa::ALL.map(Isa::name).join(", ");
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::Invalid { what: "ISA name", detail: format!("{s:?} is not one of {}", names()) })
    }
}

fn env_isa(var: &'static str) -> Result<Option<Isa>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.parse().map(Some).map_err(|e| match e {
            Error::Invalid { detail, .. } => Error::Invalid { what: var, detail },
            e => e,
        }),
        _ => Ok(None),
    }
}

/// Quantizes one activation row: `x` (k) → `qs` (k), `d`, `sums`, `dsums` (k / 32).
pub(crate) type QuantizeFn = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [i32], &mut [f32]);

/// Computes one task's output columns of `y = x · wᵀ` (validated shapes; the columns start on
/// a multiple of the entry's `cols_unit`). Row and panel kernels ignore what they do not use.
pub(crate) type MatmulFn = unsafe fn(WeightView, Acts, &TaskOut, &mut PanelBuf);

/// One matmul kernel of a level's table, named by what it multiplies.
pub(crate) struct MatmulKernel {
    /// The weights' value format.
    pub format: DType,
    /// How those values are arranged.
    pub layout: Layout,
    /// Chosen from this many activation rows on: for a (format, layout), the entry with the
    /// largest `min_m ≤ m` runs.
    pub min_m: usize,
    /// Tasks split the output columns in multiples of this (a tile, a panel, one row).
    pub cols_unit: usize,
    pub run: MatmulFn,
}

/// Folds a run of KV blocks into a task's attention rows.
pub(crate) type AttendFn = unsafe fn(&KvSpan, &mut AttnRows);

/// One attention kernel per KV-cache element type.
pub(crate) struct AttendKernels {
    pub f32: AttendFn,
    pub f16: AttendFn,
    pub i8: AttendFn,
}

impl AttendKernels {
    pub(crate) fn get(&self, dtype: KvDtype) -> AttendFn {
        match dtype {
            KvDtype::F32 => self.f32,
            KvDtype::F16 => self.f16,
            KvDtype::I8 => self.i8,
        }
    }
}

/// `gate = silu(gate) · up` on equal-length slices (SwiGLU).
pub(crate) type SiluMulFn = unsafe fn(&mut [f32], &[f32]);

/// One level's kernels. Function pointers are `unsafe` because they are `#[target_feature]`
/// code; a `Kernels` is only handed out by `Kernels::for_isa` for a supported level, which
/// is what makes calling them sound.
pub(crate) struct Kernels {
    pub isa: Isa,
    pub quantize_row: QuantizeFn,
    /// Every (format, layout, smallest m) this level multiplies; see [`Kernels::matmul`].
    pub matmul: &'static [MatmulKernel],
    pub attend: AttendKernels,
    pub silu_mul: SiluMulFn,
}

impl Kernels {
    /// The table for `isa`, if this CPU supports it. The only way to obtain a `Kernels`.
    pub(crate) fn for_isa(isa: Isa) -> Option<&'static Kernels> {
        if !isa.is_supported() {
            return None;
        }
        Some(match isa {
            Isa::Scalar => &scalar::TABLE,
            Isa::Portable => &portable::TABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &avx2::TABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &avx512::TABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => &avx512vnni::TABLE,
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// The kernel for `format` weights in `layout` at `m` activation rows: of the entries for
    /// that pair, the one with the largest `min_m ≤ m`. `None` if the level has none.
    pub(crate) fn matmul(&self, format: DType, layout: Layout, m: usize) -> Option<&'static MatmulKernel> {
        self.matmul.iter().filter(|e| e.format == format && e.layout == layout && e.min_m <= m).max_by_key(|e| e.min_m)
    }
}

/// Stamps one level's entry points and table. Each entry point is `unsafe` only because of its
/// `#[target_feature]` attributes; its body makes the level's token, whose contract (the CPU
/// supports the level) holds because entry points are reachable only through `TABLE`, which
/// `Kernels::for_isa` returns only for supported levels.
///
/// The matmul entry points are generic over the format (one per kernel family); each line of
/// `matmul` names a (format, layout, smallest m) and the instance that serves it. Adding a
/// format or a layout to a family is one line there.
macro_rules! isa_entry_points {
    ($module:ident, $isa:expr, $lanes:expr, $mr:literal, $token:expr, $($attr:meta),*) => {
        mod $module {
            use super::kernels::formats::{Bf16, F16, F32, FloatFormat, Q4_0, Q4_1, Q8_0, QuantFormat};
            use super::kernels::quant_rows::{BlockPath, RowDot, WidePath};
            use super::kernels::{attend, float_panel, float_rows, math, quant_panel, quant_rows, quant_tiles, quantize};
            use super::*;
            use crate::matmul::{PANEL_MIN_M, tiled::TILE};

            $(#[$attr])*
            unsafe fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i32], dsums: &mut [f32]) {
                quantize::quantize_row($token, x, qs, d, sums, dsums)
            }
            $(#[$attr])*
            unsafe fn float_rows<W: FloatFormat>(w: WeightView, x: Acts, out: &TaskOut, _: &mut PanelBuf) {
                float_rows::rows::<_, W>($token, w.rows(), x, out)
            }
            $(#[$attr])*
            unsafe fn float_panels<W: FloatFormat>(w: WeightView, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                float_panel::panels::<_, W, $mr>($token, w.rows(), x, out, buf)
            }
            $(#[$attr])*
            unsafe fn quant_rows<Q: QuantFormat, P: RowDot<Q>>(w: WeightView, x: Acts, out: &TaskOut, _: &mut PanelBuf) {
                quant_rows::rows::<_, Q, P>($token, w.rows(), x, out)
            }
            $(#[$attr])*
            unsafe fn quant_panels<Q: QuantFormat>(w: WeightView, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                quant_panel::panels::<_, Q, $mr>($token, w.rows(), x, out, buf)
            }
            $(#[$attr])*
            unsafe fn quant_tiles<Q: QuantFormat>(w: WeightView, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                quant_tiles::tiles::<_, Q, $mr>($token, w.tiles(), x, out, buf)
            }
            $(#[$attr])*
            unsafe fn attend_f32(kv: &KvSpan, rows: &mut AttnRows) {
                attend::attend::<_, F32>($token, kv, rows)
            }
            $(#[$attr])*
            unsafe fn attend_f16(kv: &KvSpan, rows: &mut AttnRows) {
                attend::attend::<_, F16>($token, kv, rows)
            }
            $(#[$attr])*
            unsafe fn attend_i8(kv: &KvSpan, rows: &mut AttnRows) {
                // The block size as a constant of the int8 loops (the cache allows 16 and 32).
                if kv.layer.block_size == 16 {
                    attend::attend::<_, attend::I8<{ 16 * 16 }>>($token, kv, rows)
                } else {
                    attend::attend::<_, attend::I8<{ 16 * 32 }>>($token, kv, rows)
                }
            }
            $(#[$attr])*
            unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
                math::silu_mul($token, gate, up)
            }

            const fn entry(format: DType, layout: Layout, min_m: usize, cols_unit: usize, run: MatmulFn) -> MatmulKernel {
                MatmulKernel { format, layout, min_m, cols_unit, run }
            }

            #[rustfmt::skip]
            static MATMUL: [MatmulKernel; 15] = [
                entry(DType::F32,  Layout::Rows,  1,           1,      float_rows::<F32>),
                entry(DType::F16,  Layout::Rows,  1,           1,      float_rows::<F16>),
                entry(DType::BF16, Layout::Rows,  1,           1,      float_rows::<Bf16>),
                entry(DType::Q8_0, Layout::Rows,  1,           1,      quant_rows::<Q8_0, BlockPath>),
                entry(DType::Q4_0, Layout::Rows,  1,           1,      quant_rows::<Q4_0, WidePath>),
                entry(DType::Q4_1, Layout::Rows,  1,           1,      quant_rows::<Q4_1, WidePath>),
                entry(DType::F32,  Layout::Rows,  PANEL_MIN_M, $lanes, float_panels::<F32>),
                entry(DType::F16,  Layout::Rows,  PANEL_MIN_M, $lanes, float_panels::<F16>),
                entry(DType::BF16, Layout::Rows,  PANEL_MIN_M, $lanes, float_panels::<Bf16>),
                entry(DType::Q8_0, Layout::Rows,  PANEL_MIN_M, $lanes, quant_panels::<Q8_0>),
                entry(DType::Q4_0, Layout::Rows,  PANEL_MIN_M, $lanes, quant_panels::<Q4_0>),
                entry(DType::Q4_1, Layout::Rows,  PANEL_MIN_M, $lanes, quant_panels::<Q4_1>),
                entry(DType::Q8_0, Layout::Tiled, 1,           TILE,   quant_tiles::<Q8_0>),
                entry(DType::Q4_0, Layout::Tiled, 1,           TILE,   quant_tiles::<Q4_0>),
                entry(DType::Q4_1, Layout::Tiled, 1,           TILE,   quant_tiles::<Q4_1>),
            ];

            pub(super) static TABLE: Kernels = Kernels {
                isa: $isa,
                quantize_row,
                matmul: &MATMUL,
                attend: AttendKernels { f32: attend_f32, f16: attend_f16, i8: attend_i8 },
                silu_mul,
            };
        }
    };
}

isa_entry_points!(scalar, Isa::Scalar, 8, 4, simd::scalar::Scalar,);
isa_entry_points!(portable, Isa::Portable, 8, 4, simd::portable::Portable,);
// The `unsafe` token constructors below: see the macro's comment.
#[cfg(target_arch = "x86_64")]
// SAFETY: entry points reachable only through a table `Kernels::for_isa` gave out for a detected level.
isa_entry_points!(avx2, Isa::Avx2, 8, 4, unsafe { simd::x86::Avx2::new_unchecked() }, target_feature(enable = "avx2,fma,f16c"));
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
// SAFETY: as above.
isa_entry_points!(avx512, Isa::Avx512, 16, 8, unsafe { simd::x86::Avx512::new_unchecked() }, target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"));
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
// SAFETY: as above.
isa_entry_points!(avx512vnni, Isa::Avx512Vnni, 16, 12, unsafe { simd::x86::Avx512Vnni::new_unchecked() }, target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"));

/// A one-line account of the CPU levels: what is supported and what is selected.
pub fn isa_report() -> String {
    let avail = Isa::available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ");
    match Isa::selected() {
        Ok(sel) => format!("cpu isa: selected {sel} (supported: {avail})"),
        Err(e) => format!("cpu isa: selection failed: {e} (supported: {avail})"),
    }
}
