//! Parity with the committed fixtures (always run): fixtures/tiny-qwen2 (HF dir) and
//! fixtures/tiny-llama.gguf, with transformers reference logits / tokens.

use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_model::model::to_vec_f32;
use dno_model::{generate, load_model, save_hf, GenRequest, LoadedModel, SamplingParams};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn logits(lm: &LoadedModel, toks: &[u32]) -> Vec<f32> {
    let t = Tensor::<2, Int>::from_data(
        TensorData::new(toks.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, toks.len()]),
        &Device::flex(),
    );
    to_vec_f32(lm.model.forward(t)).unwrap()
}

/// Max |Δlogit| over all positions and the whole vocabulary for every reference sequence.
fn check_sequences(lm: &LoadedModel, refs: &Value, label: &str) -> f64 {
    let mut worst = 0f64;
    for s in refs["sequences"].as_array().unwrap() {
        let toks = ids(&s["ids"]);
        let got = logits(lm, &toks);
        let want: Vec<f64> = s["logits"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
        assert_eq!(got.len(), want.len(), "{label}: logits shape");
        let d = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
        worst = worst.max(d);
    }
    println!("{label}: max |dlogit| vs transformers = {worst:.2e}");
    worst
}

#[test]
fn tiny_qwen2_hf_matches_transformers() {
    let dir = fixtures().join("tiny-qwen2");
    let lm = load_model(&dir, &Device::flex()).unwrap();
    let refs = json(&dir.join("reference.json"));
    assert!(check_sequences(&lm, &refs, "tiny-qwen2") < 1e-4);

    // chat template + tokenizer
    let chat = &refs["chat"];
    let msgs: Vec<(String, String)> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().into(), m["content"].as_str().unwrap().into()))
        .collect();
    let m: Vec<(&str, &str)> = msgs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let text = lm.chat.render_messages(&m, true).unwrap();
    assert_eq!(text, chat["text"].as_str().unwrap());
    let prompt = lm.tokenizer.encode(&text, false).unwrap();
    assert_eq!(prompt, ids(&chat["ids"]));

    // greedy continuation (stops at EOS if produced)
    let want = ids(&chat["greedy_new_ids"]);
    let p = SamplingParams { temperature: 0.0, max_new_tokens: 16, ..Default::default() };
    let out = generate(&lm, &[GenRequest { prompt, seeds: vec![0] }], &p, |_| {}).unwrap();
    assert_eq!(out[0][0].tokens, want, "greedy tokens differ");

    // tokenizer corpus
    let cases = refs["tokenize"].as_array().unwrap();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        assert_eq!(lm.tokenizer.encode(text, false).unwrap(), ids(&c["ids"]), "tokenize {text:?}");
    }
    println!("tiny-qwen2: chat text/ids, {} greedy tokens and {} tokenizer cases identical", want.len(), cases.len());
}

#[test]
fn tiny_llama_gguf_matches_transformers_and_exports() {
    let path = fixtures().join("tiny-llama.gguf");
    let lm = load_model(&path, &Device::flex()).unwrap();
    let refs = json(&fixtures().join("tiny-llama.reference.json"));
    assert!(check_sequences(&lm, &refs, "tiny-llama.gguf") < 1e-4);
    // GGUF -> HF export -> load gives identical logits
    let dir = tempfile::tempdir().unwrap();
    save_hf(&lm, dir.path()).unwrap();
    let back = load_model(dir.path(), &Device::flex()).unwrap();
    let toks = ids(&refs["sequences"][0]["ids"]);
    assert_eq!(logits(&lm, &toks), logits(&back, &toks));
    let text = "Hello 12345 world";
    assert_eq!(lm.tokenizer.encode(text, false).unwrap(), back.tokenizer.encode(text, false).unwrap());
}
