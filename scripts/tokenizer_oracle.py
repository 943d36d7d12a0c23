#!/usr/bin/env python3
"""Independent oracle for sparq's tokenizer glue: llama.cpp's own tokenizer (through
llama-cpp-python 0.3.36, vocab only) on a fixed set of texts — unicode, digits, whitespace runs,
code, special tokens. Writes the texts with their token ids.

Usage: python scripts/tokenizer_oracle.py MODEL.gguf OUT.json
"""
import json
import sys

from llama_cpp import Llama

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; 1234567890 and 3.14159.",
    "  leading spaces, trailing   \t tabs\t\tand\n\n\nnewlines   ",
    "Unicode: naïve café, Ünïcödé, 日本語のテキスト, 한국어, emoji 🤖🚀👍🏽, Ελληνικά, русский.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "don't won't it's we're I'm they've she'll he'd",
    "URL: https://example.com/path?q=1&r=two#frag  email@test.org",
    "$$ \\int_0^1 x^2 dx = \\frac{1}{3} $$  {\"json\": [1, 2, {\"k\": null}]}",
    "    indented\n\tcode    block   with    runs          of spaces",
    "<|endoftext|>text after a special token<|im_end|>",
    "ALL CAPS SHOUTING!!! and... ellipses??? ---dashes--- ___underscores___",
    "",
]


def main(path, out):
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    cases = [{"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)} for t in TEXTS]
    json.dump({"oracle": "llama-cpp-python 0.3.36 (llama.cpp 0c1e57098), vocab_only, add_bos=False, special=True",
               "cases": cases}, open(out, "w", encoding="utf-8"), ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
