//! Parity with reference data produced by scripts/make_reference.py (transformers loading the
//! SmolLM2-135M-Instruct Q4_1 GGUF). The reference JSON is committed; the GGUF is fetched by
//! scripts/fetch_smollm2.sh (CI runs it). Tests that need the GGUF print `SKIPPED: ...` to stderr
//! and return when it is absent; in CI (`CI=true`) a missing file fails them instead.

use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_model::model::to_vec_f32;
use dno_model::{generate, load_model, GenRequest, LoadedModel, SamplingParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gguf_path() -> PathBuf {
    if let Ok(p) = std::env::var("DNO_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let models = std::env::var("DNO_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/dno/models"));
    models.join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A missing fixture: a failure in CI, else a skip that shows (written to the stderr handle
/// itself, which the test harness does not capture).
fn missing(p: &Path, hint: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{} absent ({hint}); CI must run the parity tests", p.display());
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: SmolLM2 parity test: {} absent ({hint})", p.display());
}

fn reference(name: &str) -> Option<Value> {
    let p = repo().join("fixtures/reference/smollm2").join(name);
    if !p.is_file() {
        missing(&p, "committed reference data; regenerate with scripts/make_reference.py");
        return None;
    }
    Some(serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
}

fn model() -> Option<&'static LoadedModel> {
    static M: OnceLock<Option<LoadedModel>> = OnceLock::new();
    M.get_or_init(|| {
        let p = gguf_path();
        if !p.is_file() {
            missing(&p, "run scripts/fetch_smollm2.sh");
            return None;
        }
        Some(load_model(&p, &Device::flex()).unwrap())
    })
    .as_ref()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn messages(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
        .collect()
}

fn render(lm: &LoadedModel, msgs: &[(String, String)]) -> String {
    let m: Vec<(&str, &str)> = msgs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    lm.chat.render_messages(&m, true).unwrap()
}

#[test]
fn chat_template_and_tokenizer_match_reference() {
    let (Some(lm), Some(chat)) = (model(), reference("chat.json")) else { return };
    let cases = chat["cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let text = render(lm, &messages(&c["messages"]));
        assert_eq!(text, c["text"].as_str().unwrap(), "chat text differs for case {name}");
        let got = lm.tokenizer.encode(&text, false).unwrap();
        assert_eq!(got, ids(&c["ids"]), "token ids differ for case {name}");
    }
    println!("chat.json: {} cases, text and ids identical", cases.len());
}

#[test]
fn tokenizer_matches_reference_corpus() {
    let (Some(lm), Some(tok)) = (model(), reference("tokenize.json")) else { return };
    let cases = tok["cases"].as_array().unwrap();
    let mut bad = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let text = c["text"].as_str().unwrap();
        let got = lm.tokenizer.encode(text, false).unwrap();
        if got != ids(&c["ids"]) {
            println!("case {i} {text:?}: ours {got:?} reference {:?}", ids(&c["ids"]));
            // Known divergence: transformers' GGUF converter drops SmolLM2's Digits pre-tokenizer
            // (the original tokenizer.json and llama.cpp's `smollm` pre-tokenizer split every
            // Unicode digit on its own), which only matters for non-ASCII numerals such as
            // "½" or "①" preceded by a space.
            let non_ascii_numeral = text.chars().any(|ch| ch.is_numeric() && !ch.is_ascii_digit());
            if !non_ascii_numeral {
                bad.push(i);
            }
        }
        let dec = lm.tokenizer.decode(&ids(&c["ids"]), false).unwrap();
        assert_eq!(dec, c["decoded"].as_str().unwrap(), "decode differs for case {i}");
    }
    println!("tokenize.json: {} cases, {} unexplained differences", cases.len(), bad.len());
    assert!(bad.is_empty(), "token ids differ for cases {bad:?}");
}

#[test]
fn tokenizer_matches_llama_cpp_exactly() {
    let (Some(lm), Some(tok)) = (model(), reference("tokenize_llamacpp.json")) else { return };
    let cases = tok["cases"].as_array().unwrap();
    for (i, c) in cases.iter().enumerate() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(lm.tokenizer.encode(text, false).unwrap(), ids(&c["ids"]), "case {i} {text:?}");
    }
    println!("tokenize_llamacpp.json: {} / {} cases identical to llama.cpp", cases.len(), cases.len());
}

#[test]
fn logits_match_reference() {
    let (Some(lm), Some(refs)) = (model(), reference("logits.json")) else { return };
    let device = Device::flex();
    for c in refs["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let toks = ids(&c["ids"]);
        let t = Tensor::<2, Int>::from_data(
            TensorData::new(toks.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, toks.len()]),
            &device,
        );
        let all = to_vec_f32(lm.model.forward(t)).unwrap();
        let v = lm.model.vocab_size();
        let last = &all[all.len() - v..];
        let top_ids = ids(&c["top50_ids"]);
        let top_vals: Vec<f64> = c["top50_values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let top_diff = top_ids
            .iter()
            .zip(&top_vals)
            .map(|(&i, &want)| (last[i as usize] as f64 - want).abs())
            .fold(0.0, f64::max);
        let full: Vec<f64> = c["logits_rounded_3dp"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let full_diff = full.iter().zip(last).map(|(w, &g)| (g as f64 - w).abs()).fold(0.0, f64::max);
        let argmax = (0..v).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        println!("logits {name}: max |dlogit| top50 = {top_diff:.2e}, full vocab (vs 3dp) = {full_diff:.2e}, argmax {argmax} (ref {})", top_ids[0]);
        assert_eq!(argmax as u32, top_ids[0], "argmax differs for {name}");
        assert!(top_diff < 2e-3, "{name}: top-50 logits differ by {top_diff}");
        assert!(full_diff < 2.5e-3, "{name}: logits differ by {full_diff}");
    }
}

#[test]
fn greedy_matches_reference() {
    let (Some(lm), Some(refs)) = (model(), reference("greedy.json")) else { return };
    let n = refs["max_new_tokens"].as_u64().unwrap() as usize;
    let cases = refs["cases"].as_array().unwrap();
    let reqs: Vec<GenRequest> =
        cases.iter().map(|c| GenRequest { prompt: ids(&c["prompt_ids"]), seeds: vec![0] }).collect();
    for (c, r) in cases.iter().zip(&reqs) {
        assert_eq!(r.prompt, lm.tokenizer.encode(&render(lm, &messages(&c["messages"])), false).unwrap());
    }
    // Without EOS: exactly n argmax steps.
    let no_eos = LoadedModel {
        model: lm.model.clone(),
        config: lm.config.clone(),
        tokenizer: without_eos(&lm.tokenizer),
        chat: dno_model::ChatTemplate::new(lm.chat.source().map(String::from), String::new(), String::new()).unwrap(),
    };
    let greedy = SamplingParams { temperature: 0.0, max_new_tokens: n, ..Default::default() };
    let out = generate(&no_eos, &reqs, &greedy, |_| {}).unwrap();
    let with_eos = generate(lm, &reqs, &greedy, |_| {}).unwrap();
    let (mut matched, mut total) = (0, 0);
    for ((c, g), ge) in cases.iter().zip(&out).zip(&with_eos) {
        let want = ids(&c["no_stop_new_ids"]);
        let margins: Vec<f64> = c["no_stop_top1_top2_margin"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let got = &g[0].tokens;
        let agree = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        matched += agree;
        total += want.len();
        println!("greedy {}: {agree}/{} tokens match", c["name"].as_str().unwrap(), want.len());
        // A divergence is only acceptable at a near-tie of the reference logits.
        if agree < want.len() {
            assert!(margins[agree] < 1e-2, "diverged at step {agree} where the reference margin is {}", margins[agree]);
        } else {
            assert_eq!(ge[0].tokens, ids(&c["generate_new_ids"]), "EOS-stopping generation differs");
        }
    }
    println!("greedy total: {matched}/{total} tokens match");
}


#[test]
fn score_matches_sampler_on_smollm2() {
    let Some(lm) = model() else { return };
    let text = lm.chat.render(None, "Name three colours.", true).unwrap();
    let prompt = lm.tokenizer.encode(&text, false).unwrap();
    let params = SamplingParams { temperature: 1.0, top_p: 1.0, max_new_tokens: 24, ..Default::default() };
    let out = generate(lm, &[GenRequest { prompt: prompt.clone(), seeds: vec![7, 8] }], &params, |_| {}).unwrap();
    let pairs: Vec<_> = out[0].iter().map(|g| (prompt.clone(), g.tokens.clone())).collect();
    let s = dno_model::score(lm, &pairs, 2).unwrap();
    for (g, s) in out[0].iter().zip(&s) {
        let sum: f64 = g.token_logprobs.iter().map(|&x| x as f64).sum();
        println!("smollm2 score {s:.5} vs sampler sum {sum:.5} ({} tokens)", g.tokens.len());
        assert!((s - sum).abs() < 1e-3);
    }
}

/// The tokenizer with no end-of-sequence ids (generation runs to its length).
fn without_eos(t: &dno_model::Tok) -> dno_model::Tok {
    let mut t = t.clone();
    t.eos_ids.clear();
    t
}
