//! The GGUF tokenizer glue against llama.cpp's tokenizer (the oracle,
//! `scripts/tokenizer_oracle.py`) on a committed test set: unicode, digits, whitespace runs,
//! code and special tokens must encode to exactly the same ids, and decode back to the text.

#[path = "../examples/common/mod.rs"]
mod common;

use sparq::model::Gguf;

#[test]
fn encoding_matches_llama_cpp_exactly() {
    let path = common::find_model(None).unwrap_or_else(|e| panic!("the tokenizer test needs the model: {e}"));
    let tok = common::GgufTokenizer::from_gguf(&Gguf::open(path).unwrap()).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/tokenizer/cases.json")).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "encoding {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), text, "round trip of {text:?}");
    }
}

#[test]
fn chat_template_uses_the_default_system_prompt() {
    let path = common::find_model(None).unwrap();
    let tok = common::GgufTokenizer::from_gguf(&Gguf::open(path).unwrap()).unwrap();
    let p = tok.chat_prompt("Hi", None);
    assert_eq!(
        p,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&p).unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one special token");
    assert!(tok.chat_prompt("Hi", Some("Be brief.")).starts_with("<|im_start|>system\nBe brief.<|im_end|>"));
}
