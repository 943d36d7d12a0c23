//! One error type for the whole crate.

use crate::DType;

/// Everything sparq can refuse, each variant naming the operation that refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// Arguments whose sizes disagree, e.g. `x.len() != m * k`.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The operation that refused, e.g. `"matmul"`.
        op: &'static str,
        /// What was expected and what was found.
        detail: String,
    },
    /// A length that must be a multiple of the format's block size is not.
    #[error("{op}: {what} = {len} is not a multiple of the {dtype} block size {block}")]
    BlockAlign {
        /// The operation that refused.
        op: &'static str,
        /// Which length, e.g. `"k"`.
        what: &'static str,
        /// Its value.
        len: usize,
        /// The format whose blocks it must fill.
        dtype: DType,
        /// That format's elements per block.
        block: usize,
    },
    /// An input held NaN or an infinity where only finite values are accepted.
    #[error("{op}: input contains NaN or infinity")]
    NonFinite {
        /// The operation that refused.
        op: &'static str,
    },
    /// The operation does not support this storage format.
    #[error("{op}: unsupported dtype {dtype}")]
    Unsupported {
        /// The operation that refused.
        op: &'static str,
        /// The format it was given.
        dtype: DType,
    },
    /// An instruction-set level was requested that this CPU (or build) does not have.
    #[error("ISA {requested} requested ({source_of_request}) but this CPU supports at most {best}")]
    IsaUnavailable {
        /// The level asked for.
        requested: String,
        /// Who asked: an environment variable or a function, e.g. `"SPARQ_REQUIRE_ISA"`.
        source_of_request: &'static str,
        /// The most capable level this CPU has.
        best: String,
    },
    /// An environment variable, argument or configuration that is not acceptable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was invalid, e.g. `"sampler"` or `"SPARQ_MAX_ISA"`.
        what: &'static str,
        /// Why, with the value found.
        detail: String,
    },
    /// A GGUF file that is malformed, truncated, or uses something sparq does not support.
    #[error("GGUF: {0}")]
    Gguf(String),
    /// A model sparq cannot run, or inputs it cannot take (e.g. a prompt past the context).
    #[error("model: {0}")]
    Model(String),
    /// A file could not be read.
    #[error("I/O: {0}")]
    Io(String),
    /// The thread pool could not be created.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// `Result` with sparq's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, detail: detail.into() })
}

/// [`Error::NonFinite`] naming `op` unless every value of every slice is finite. A fold over
/// each slice, not a short-circuiting `all`: it vectorizes (the `all` was most of a prefill's
/// KV-cache writes).
pub(crate) fn check_finite(op: &'static str, xs: &[&[f32]]) -> Result<()> {
    let finite = |x: &[f32]| x.iter().fold(true, |ok, v| ok & v.is_finite());
    if xs.iter().fold(true, |ok, x| ok & finite(x)) { Ok(()) } else { Err(Error::NonFinite { op }) }
}
