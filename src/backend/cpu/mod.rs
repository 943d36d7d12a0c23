//! The CPU backend: [`Cpu`] (a level's kernel table and a pool of threads) and its ops —
//! matrix products (`matmul.rs`) and attention (`attention.rs`), which run the op modules'
//! shared shape checks first and then schedule the kernels.
//!
//! [`Isa::selected`] picks the best level this CPU supports, capped by `SPARQ_MAX_ISA` and
//! checked against `SPARQ_REQUIRE_ISA` (`isa.rs`). `Kernels::for_isa` is the one place that maps
//! a level to code: each level's table holds `#[target_feature]` entry points stamped by
//! `isa_entry_points!`, each a few-line wrapper instantiating a generic kernel body (in
//! `kernels/`) with that level's SIMD token (in `simd/`).

mod attention;
mod isa;
pub(crate) mod kernels;
mod matmul;
pub(crate) mod pool;
pub(crate) mod simd;
#[cfg(test)]
mod tests;

pub use attention::AttnScratch;
pub use isa::{Isa, isa_report};
pub use matmul::Scratch;

use crate::kv_cache::KvDtype;
use crate::matmul::tiled::TILE;
use crate::matmul::{Layout, PANEL_MIN_M, Weights};
use crate::{DType, Error, Result};
use kernels::attend::{AttnRows, KvSpan};
use kernels::quant_panel::PanelBuf;
use kernels::{Acts, TaskOut};
use pool::WorkerPool;

/// CPU execution: a kernel table for one instruction-set level and a pool of threads that
/// stay awake between operations (see `backend::cpu::pool`).
///
/// `Cpu` is `Sync`: one instance can serve many callers, each with its own [`Scratch`].
pub struct Cpu {
    kernels: &'static Kernels,
    pool: WorkerPool,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu").field("isa", &self.kernels.isa).field("threads", &self.threads()).finish()
    }
}

impl Cpu {
    /// The default level ([`Isa::selected`]) with `threads` worker threads (0 = one per core).
    pub fn new(threads: usize) -> Result<Cpu> {
        Cpu::with_isa(Isa::selected()?, threads)
    }

    /// A specific level, which this CPU must support.
    pub fn with_isa(isa: Isa, threads: usize) -> Result<Cpu> {
        let kernels = Kernels::for_isa(isa).ok_or_else(|| Error::IsaUnavailable {
            requested: isa.to_string(),
            source_of_request: "Cpu::with_isa",
            best: Isa::best().to_string(),
        })?;
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let pool = WorkerPool::new(threads).map_err(|e| Error::ThreadPool(e.to_string()))?;
        Ok(Cpu { kernels, pool })
    }

    /// The level this `Cpu` runs.
    pub fn isa(&self) -> Isa {
        self.kernels.isa
    }

    /// Threads an operation runs on (the caller's included).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub(crate) fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    pub(crate) fn pool(&self) -> &WorkerPool {
        &self.pool
    }
}

/// Quantizes one activation row: `x` (k) → `qs` (k), `d`, `sums`, `dsums` (k / 32).
pub(crate) type QuantizeFn = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [i32], &mut [f32]);

/// Computes one task's output columns of `y = x · wᵀ` (validated shapes, weights in the entry's
/// format and layout; the columns start on a multiple of the entry's `cols_unit`). Row kernels
/// ignore the panel buffer.
pub(crate) type MatmulFn = unsafe fn(&Weights, Acts, &TaskOut, &mut PanelBuf);

/// One matmul kernel of a level's table, named by what it multiplies.
pub(crate) struct MatmulKernel {
    /// The weights' value format.
    pub format: DType,
    /// How those values are arranged.
    pub layout: Layout,
    /// Chosen from this many activation rows on: for a (format, layout), the entry with the
    /// largest `min_m ≤ m` runs.
    pub min_m: usize,
    /// Tasks split the output columns in multiples of this (a tile, a panel, one row, a block).
    pub cols_unit: usize,
    /// The form of the activations the kernel reads, which the product builds once per call.
    pub acts: ActsForm,
    pub run: MatmulFn,
}

/// What a matmul kernel reads of the activations (`Acts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActsForm {
    /// f32 rows (float formats).
    Float,
    /// 8-bit blocks with per-row scales (the row kernels of the block formats).
    Quantized,
    /// 8-bit blocks with block-major scales as well (`Acts::by_block`: panels, tiles).
    QuantizedBlockMajor,
    /// 8-bit blocks with per-row scales and the list of kept inputs of each row
    /// (`Acts::active`: the activation-sparse kernels).
    Active,
}

impl MatmulKernel {
    /// A row kernel: any `m`, one output column at a time, scales read per row.
    const fn rows(format: DType, run: MatmulFn) -> MatmulKernel {
        let acts = if format.is_block_quantized() { ActsForm::Quantized } else { ActsForm::Float };
        MatmulKernel { format, layout: Layout::Rows, min_m: 1, cols_unit: 1, acts, run }
    }
    /// A packed-panel kernel over GGUF rows: from `PANEL_MIN_M` rows, `lanes` columns a panel.
    const fn panels(format: DType, lanes: usize, run: MatmulFn) -> MatmulKernel {
        let acts = if format.is_block_quantized() { ActsForm::QuantizedBlockMajor } else { ActsForm::Float };
        MatmulKernel { format, layout: Layout::Rows, min_m: PANEL_MIN_M, cols_unit: lanes, acts, run }
    }
    /// A tile kernel: any `m`, whole tiles of the tiled layout.
    const fn tiles(format: DType, run: MatmulFn) -> MatmulKernel {
        MatmulKernel { format, layout: Layout::Tiled, min_m: 1, cols_unit: TILE, acts: ActsForm::QuantizedBlockMajor, run }
    }
    /// An activation-sparse kernel: any `m`, whole 32-output blocks of the input-major layout.
    const fn input_major(format: DType, run: MatmulFn) -> MatmulKernel {
        MatmulKernel { format, layout: Layout::InputMajor, min_m: 1, cols_unit: crate::sparse::OUTPUT_ALIGN, acts: ActsForm::Active, run }
    }
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
/// `MATMUL` names a format, the family (whose constructor sets the layout, the smallest `m`,
/// the column unit and the scale order) and the instance that serves it. Adding a format to a
/// family is one line there; a new layout is a new family.
macro_rules! isa_entry_points {
    ($module:ident, $isa:expr, $lanes:expr, $mr:literal, $token:expr, $($attr:meta),*) => {
        mod $module {
            use super::kernels::formats::{Bf16, F16, F32, FloatFormat, Q4_0, Q4_1, Q8_0, QuantFormat};
            use super::kernels::quant_rows::{BlockPath, RowDot, WidePath};
            use super::kernels::{act_sparse, attend, float_panel, float_rows, math, quant_panel, quant_rows, quant_tiles, quantize};
            use super::*;

            $(#[$attr])*
            unsafe fn quantize_row(x: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i32], dsums: &mut [f32]) {
                quantize::quantize_row($token, x, qs, d, sums, dsums)
            }
            $(#[$attr])*
            unsafe fn float_rows<W: FloatFormat>(w: &Weights, x: Acts, out: &TaskOut, _: &mut PanelBuf) {
                float_rows::rows::<_, W>($token, w.rows(), x, out)
            }
            $(#[$attr])*
            unsafe fn float_panels<W: FloatFormat>(w: &Weights, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                float_panel::panels::<_, W, $mr>($token, w.rows(), x, out, buf)
            }
            $(#[$attr])*
            unsafe fn quant_rows<Q: QuantFormat, P: RowDot<Q>>(w: &Weights, x: Acts, out: &TaskOut, _: &mut PanelBuf) {
                quant_rows::rows::<_, Q, P>($token, w.rows(), x, out)
            }
            $(#[$attr])*
            unsafe fn quant_panels<Q: QuantFormat>(w: &Weights, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                quant_panel::panels::<_, Q, $mr>($token, w.rows(), x, out, buf)
            }
            $(#[$attr])*
            unsafe fn quant_tiles<Q: QuantFormat>(w: &Weights, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                quant_tiles::tiles::<_, Q, $mr>($token, w.tiles(), x, out, buf)
            }
            $(#[$attr])*
            unsafe fn act_sparse<Q: QuantFormat>(w: &Weights, x: Acts, out: &TaskOut, buf: &mut PanelBuf) {
                act_sparse::act_sparse::<_, Q>($token, w.input_blocks(), x, out, buf)
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

            #[rustfmt::skip]
            static MATMUL: [MatmulKernel; 18] = [
                MatmulKernel::rows(DType::F32,  float_rows::<F32>),
                MatmulKernel::rows(DType::F16,  float_rows::<F16>),
                MatmulKernel::rows(DType::BF16, float_rows::<Bf16>),
                MatmulKernel::rows(DType::Q8_0, quant_rows::<Q8_0, BlockPath>),
                MatmulKernel::rows(DType::Q4_0, quant_rows::<Q4_0, WidePath>),
                MatmulKernel::rows(DType::Q4_1, quant_rows::<Q4_1, WidePath>),
                MatmulKernel::panels(DType::F32,  $lanes, float_panels::<F32>),
                MatmulKernel::panels(DType::F16,  $lanes, float_panels::<F16>),
                MatmulKernel::panels(DType::BF16, $lanes, float_panels::<Bf16>),
                MatmulKernel::panels(DType::Q8_0, $lanes, quant_panels::<Q8_0>),
                MatmulKernel::panels(DType::Q4_0, $lanes, quant_panels::<Q4_0>),
                MatmulKernel::panels(DType::Q4_1, $lanes, quant_panels::<Q4_1>),
                MatmulKernel::tiles(DType::Q8_0, quant_tiles::<Q8_0>),
                MatmulKernel::tiles(DType::Q4_0, quant_tiles::<Q4_0>),
                MatmulKernel::tiles(DType::Q4_1, quant_tiles::<Q4_1>),
                MatmulKernel::input_major(DType::Q8_0, act_sparse::<Q8_0>),
                MatmulKernel::input_major(DType::Q4_0, act_sparse::<Q4_0>),
                MatmulKernel::input_major(DType::Q4_1, act_sparse::<Q4_1>),
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
