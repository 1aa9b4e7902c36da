//! `dno train`'s response encoding (`dno_model::chat::encode_for_training`) against
//! transformers' `apply_chat_template` on the full conversation, for three template families:
//! ChatML (SmolLM2-135M-Instruct's GGUF), Qwen2 (fixtures/tiny-qwen2) and Llama 3
//! (fixtures/tiny-llama3-tokenizer). The reference token ids are in fixtures/eot/reference.json,
//! written by scripts/make_eot_reference.py.

use burn::tensor::Device;
use dno_model::chat::{encode_for_training, ChatTemplate, Clock};
use dno_model::gguf::GgufFile;
use dno_model::Tok;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("fixtures/eot/reference.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The clock the reference was rendered with (transformers' `strftime_now` pinned to it).
fn clock(doc: &Value) -> Clock {
    let naive = chrono::NaiveDateTime::parse_from_str(doc["strftime_now"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S").unwrap();
    Clock::Fixed(naive.and_utc().fixed_offset())
}

/// Asserts every case of `family`: prompt ids, and prompt + response = the full conversation.
fn check_family(doc: &Value, family: &str, tok: &Tok, chat: &ChatTemplate) {
    let fam = &doc["families"][family];
    let eot = fam["end_of_turn_id"].as_u64().unwrap() as u32;
    assert_eq!(tok.token_to_id(fam["end_of_turn_token"].as_str().unwrap()), Some(eot));
    for (i, c) in fam["cases"].as_array().unwrap().iter().enumerate() {
        let messages: Vec<(&str, &str)> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let ended = c["ended"].as_bool().unwrap();
        let (p, r) = encode_for_training(tok, chat, &messages, c["response"].as_str().unwrap(), ended).unwrap();
        assert_eq!(p, ids(&c["prompt_ids"]), "{family} case {i}: prompt tokens");
        let full: Vec<u32> = p.iter().chain(&r).copied().collect();
        assert_eq!(full, ids(&c["full_ids"]), "{family} case {i}: {:?} vs {:?}", tok.decode(&full, false).unwrap(), c["full_text"]);
        // An ended response is closed by the template's end-of-turn token, a truncated one is not.
        assert_eq!(r.contains(&eot), ended, "{family} case {i}");
    }
}

/// Tokenizer and template of an HF directory, read the way `dno_model::hf::load_hf_dir` reads them.
fn hf_tokenizer(dir: &Path) -> (Tok, ChatTemplate) {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    let s = |k: &str| cfg[k].as_str().map(str::to_string);
    let tok = Tok::from_file(&dir.join("tokenizer.json"), s("bos_token"), s("eos_token")).unwrap();
    let chat = ChatTemplate::new(s("chat_template"), s("bos_token").unwrap_or_default(), s("eos_token").unwrap_or_default()).unwrap();
    (tok, chat)
}

#[test]
fn chatml_smollm2_matches_transformers() {
    let models = std::env::var("DNO_MODELS").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/dno/models"));
    let path = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{} absent in CI (scripts/fetch_smollm2.sh)", path.display());
        println!("NOTICE: {} absent (run scripts/fetch_smollm2.sh); skipping", path.display());
        return;
    }
    // The tokenizer and template exactly as `load_gguf` builds them (without the weights).
    let g = GgufFile::open(&path).unwrap();
    let tok = g.tokenizer().unwrap();
    let chat = ChatTemplate::new(
        g.get_str("tokenizer.chat_template").map(str::to_string),
        tok.bos_token.clone().unwrap_or_default(),
        tok.eos_token.clone().unwrap_or_default(),
    )
    .unwrap();
    check_family(&reference(), "chatml", &tok, &chat);
}

#[test]
fn qwen2_matches_transformers() {
    // Through the same loader as `dno train`.
    let lm = dno_model::load_model(&repo().join("fixtures/tiny-qwen2"), &Device::flex()).unwrap();
    check_family(&reference(), "qwen2", &lm.tokenizer, &lm.chat);
}

#[test]
fn llama3_ends_turns_with_eot_id_not_the_eos() {
    let doc = reference();
    let (tok, chat) = hf_tokenizer(&repo().join("fixtures/tiny-llama3-tokenizer"));
    let chat = chat.with_clock(clock(&doc));
    // The tokenizer's EOS is <|end_of_text|>; the template ends an assistant turn with <|eot_id|>.
    assert_eq!(tok.eos_token.as_deref(), Some("<|end_of_text|>"));
    assert_ne!(tok.eos_ids.first().copied(), tok.token_to_id("<|eot_id|>"));
    assert_eq!(chat.assistant_turn_end(&[("user", "hi")]).unwrap().as_deref(), Some("<|eot_id|>"));
    check_family(&doc, "llama3", &tok, &chat);
    // The template prints the date through strftime_now.
    let text = chat.render(None, "hi", true).unwrap();
    assert!(text.contains("Today Date: 26 Jul 2024"), "{text}");
}

#[test]
fn templates_without_an_assistant_turn_end_fall_back_to_the_eos_token() {
    let (tok, _) = hf_tokenizer(&repo().join("fixtures/tiny-llama3-tokenizer"));
    let src = "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}={% endif %}";
    let chat = ChatTemplate::new(Some(src.into()), String::new(), "<|end_of_text|>".into()).unwrap();
    let (p, r) = encode_for_training(&tok, &chat, &[("user", "1+1")], "2", true).unwrap();
    assert_eq!(p, tok.encode("1+1=", false).unwrap());
    let mut want = tok.encode("2", false).unwrap();
    want.push(tok.token_to_id("<|end_of_text|>").unwrap());
    assert_eq!(r, want);
    assert_eq!(encode_for_training(&tok, &chat, &[("user", "1+1")], "2", false).unwrap().1, tok.encode("2", false).unwrap());
}
