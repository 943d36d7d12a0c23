//! Sparse inference: products that skip the work, and the bytes, that zeros make unnecessary.
//!
//! Decoding is bound by the bytes of weights read per token. Two kinds of zeros cut them:
//! zeros in the *weights* (pruning — formats to come) and zeros in the *activations*. This
//! module holds the second kind today:
//!
//! - **Activation sparsity** (TEAL, Liu et al. 2024; CATS): most inputs of a linear layer are
//!   small, and setting those below a per-layer threshold to zero costs little quality. A product
//!   `x · wᵀ` then needs only the weights of the kept inputs. Stored row by row (GGUF), an
//!   input's weights are scattered over every row; stored **input-major**
//!   ([`InputMajorWeights`], [`Layout::InputMajor`](crate::matmul::Layout::InputMajor): the
//!   same blocks rearranged, losslessly) they are one contiguous code row, so a product reads
//!   the kept inputs' code rows and each input block's scales once.
//!   [`Cpu::matmul_act_sparse`](crate::Cpu::matmul_act_sparse) takes the threshold; on
//!   input-major weights it skips the rows of dropped inputs, on any other layout it multiplies
//!   the thresholded input densely (the same values, no saving). Either way the result is the
//!   dense integer product of the thresholded input (the input quantized to 8 bits per 32, as
//!   every block-format product does), up to the order of f32 additions.
//!
//! An input `xᵢ` is kept when `|xᵢ| > threshold` ([`keeps`]); threshold 0 keeps every nonzero
//! input (ReLU-style inputs cost only their nonzeros).
//!
//! What it buys is measured, not assumed: at sparsity `s` the bytes read fall to about
//! `1/5 + (1 − s) · 4/5` of Q4_1's (the scales, a fifth, are read for every block with a kept
//! input), and each kept weight costs more arithmetic than a dense one (four code rows are
//! interleaved per 64 multiply-adds). PERFORMANCE.md has the figures: on the one machine
//! measured (a Zen 4 VM, AVX-512 VNNI, 2 threads) the products beat the dense tiled kernel over
//! Q8_0 weights from 50% sparsity and over Q4_1 only from about 70%.

mod input_major;

pub(crate) use input_major::{Geometry, OUTPUT_ALIGN, gguf_rows};
pub use input_major::{InputMajorWeights, can_input_major};

/// Whether an activation-sparse product with `threshold` keeps the input value `x`.
#[inline]
pub fn keeps(x: f32, threshold: f32) -> bool {
    x.abs() > threshold
}
