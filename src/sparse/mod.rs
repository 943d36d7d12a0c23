//! Sparse inference: products that skip the work, and the bytes, that zeros make unnecessary.
//!
//! Decoding is bound by the bytes of weights read per token. Two kinds of zeros cut them:
//! zeros in the *weights* (pruning — formats to come) and zeros in the *activations*. This
//! module holds the second kind today:
//!
//! - **Activation sparsity** (TEAL, Liu et al. 2024; CATS): most inputs of a linear layer are
//!   small, and setting those below a per-layer threshold to zero costs little quality. A product
//!   `x · wᵀ` then needs only the weight columns of the kept inputs. Stored row by row (GGUF),
//!   a column is scattered over every row; stored **input-major** ([`InputMajorWeights`],
//!   [`Layout::InputMajor`](crate::matmul::Layout::InputMajor)) it is one contiguous run, so a
//!   product reads `(1 − sparsity)` of the matrix. [`Cpu::matmul_act_sparse`](crate::Cpu::matmul_act_sparse)
//!   takes the threshold; on input-major weights it skips the rows of dropped inputs, on any
//!   other layout it multiplies the thresholded input densely (the same values, no saving).
//!
//! An input `xᵢ` is kept when `|xᵢ| > threshold` ([`keeps`]); threshold 0 keeps every nonzero
//! input, so a plain product over input-major weights is exact (and skips exact zeros: ReLU-style
//! inputs cost only their nonzeros).

mod input_major;

pub use input_major::{InputMajorWeights, can_input_major, transpose_gguf_rows};

/// Whether an activation-sparse product with `threshold` keeps the input value `x`.
#[inline]
pub fn keeps(x: f32, threshold: f32) -> bool {
    x.abs() > threshold
}
