//! Instruction-set levels: detected once at run time, capped and required through the
//! environment (`SPARQ_MAX_ISA`, `SPARQ_REQUIRE_ISA`).

use super::simd;
use crate::{Error, Result};
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
    /// Every level, least capable first.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The name `SPARQ_MAX_ISA` / `SPARQ_REQUIRE_ISA` and `FromStr` take (`"avx2"`).
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

/// A one-line account of the CPU levels: what is supported and what is selected.
pub fn isa_report() -> String {
    let avail = Isa::available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ");
    match Isa::selected() {
        Ok(sel) => format!("cpu isa: selected {sel} (supported: {avail})"),
        Err(e) => format!("cpu isa: selection failed: {e} (supported: {avail})"),
    }
}
