#!/usr/bin/env python3
"""Generate tests/fixtures/quant/*: inputs and the bytes an *independent* implementation produces.

Oracle: the `gguf` Python package (gguf-py, maintained with llama.cpp), whose numpy quantizers
are written to be bit-exact with ggml's `quantize_row_*_ref`. Q8_1 has no gguf-py quantizer, so
it is written here in numpy straight from ggml's `quantize_row_q8_1_ref`.

Usage: python3 scripts/gen_quant_fixtures.py [--out DIR]
       (needs: pip install gguf==0.19.0 numpy==2.4.6; DIR defaults to tests/fixtures/quant)
CI regenerates into a temporary DIR and byte-compares with the committed files.
Files: input.f32 (little-endian f32), then <fmt>.bin for f16, bf16, q8_0, q8_1, q4_0, q4_1,
and <fmt>.deq.f32 (gguf-py's dequantization of those bytes).
"""
import argparse
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"


def inputs() -> np.ndarray:
    rng = np.random.default_rng(20261124)
    blocks = [
        rng.standard_normal(32 * 48),                   # typical weights
        rng.standard_normal(32 * 8) * 1e-3,             # small scale
        rng.uniform(-300, 300, 32 * 8),                 # large scale (f16 range)
        np.zeros(32 * 2),                               # all-zero blocks (d = 0)
        np.full(32, 0.75),                              # constant block (Q4_1: d = 0)
        np.tile([-1.0, 1.0], 16),                       # symmetric extremes
        np.arange(32) - 15.5,                           # ramp with half-integer values
        np.arange(32) * (127 / 31) - 63.5,              # values landing on rounding ties
        np.concatenate([[-8.0], np.linspace(-7, 7, 31)]),  # negative max magnitude first
        rng.integers(-127, 128, 32 * 4).astype(np.float64),  # integers: exact Q8 ties
    ]
    return np.concatenate(blocks).astype(np.float32)


def q8_1(x: np.ndarray) -> np.ndarray:
    """ggml quantize_row_q8_1_ref: d = amax/127, q = roundf(x/d), s = f16(d * Σq)."""
    b = x.reshape(-1, 32)
    d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = quants.np_roundf(b * inv).astype(np.int8)
    s = (q.astype(np.int32).sum(axis=1, keepdims=True).astype(np.float32) * d).astype(np.float32)
    return np.concatenate(
        [d.astype(np.float16).view(np.uint8), s.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    x = inputs()
    assert x.size % 32 == 0
    (out / "input.f32").write_bytes(x.astype("<f4").tobytes())
    formats = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}
    for name, qtype in formats.items():
        data = quants.quantize(x.reshape(1, -1), qtype)
        (out / f"{name}.bin").write_bytes(data.tobytes())
        deq = quants.dequantize(data, qtype).astype("<f4")
        (out / f"{name}.deq.f32").write_bytes(deq.tobytes())
    (out / "q8_1.bin").write_bytes(q8_1(x).tobytes())
    print(f"wrote {x.size} values x {len(formats) + 1} formats to {out}")


if __name__ == "__main__":
    main()
