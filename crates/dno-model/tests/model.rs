//! End-to-end tests on tiny random models built in Rust (always run, fast).

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::Tiny;
use dno_model::model::{to_vec_f32, KvCache};
use dno_model::{generate, generate_each, load_model, save_hf, score, FinishReason, GenRequest, LoadedModel, SamplingParams};

fn dev() -> Device {
    Device::flex()
}

fn logits(lm: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let t = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, ids.len()]),
        &dev(),
    );
    to_vec_f32(lm.model.forward(t)).unwrap()
}

/// A tiny random model written as an HF directory and loaded back (the directory lives as long as
/// the returned guard).
fn tiny_lm(qwen2: bool, tied: bool, seed: u64) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(qwen2, tied, seed).write_hf(dir.path());
    let lm = load_model(dir.path(), &dev()).unwrap();
    (dir, lm)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const IDS: [u32; 7] = [104, 101, 108, 108, 111, 32, 119];

#[test]
fn forward_matches_naive_reference_llama_and_qwen2() {
    for (qwen2, tied) in [(false, true), (true, false), (false, false)] {
        let tiny = Tiny::new(qwen2, tied, 7);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(dir.path());
        let lm = load_model(dir.path(), &dev()).unwrap();
        let got = logits(&lm, &IDS);
        let want: Vec<f32> = tiny.reference_logits(&IDS).into_iter().flatten().map(|x| x as f32).collect();
        let d = max_diff(&got, &want);
        println!("qwen2={qwen2} tied={tied}: max |dlogit| vs naive f64 reference = {d:e}");
        assert!(d < 1e-3, "max diff {d}");
    }
}

#[test]
fn cached_decode_matches_full_forward() {
    let tiny = Tiny::new(true, true, 3);
    let dir = tempfile::tempdir().unwrap();
    tiny.write_hf(dir.path());
    let lm = load_model(dir.path(), &dev()).unwrap();
    let full = logits(&lm, &IDS);
    let v = lm.model.vocab_size();
    // two slots of left padding (masked as keys), then the real tokens one at a time
    let mut cache = KvCache::new(lm.model.layers.len());
    let zeros = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 0], [1, 2]), &dev());
    let _ = lm.model.forward_cached(zeros, &[0], &[2], &mut cache);
    let mut got = Vec::new();
    for (i, &id) in IDS.iter().enumerate() {
        let t = Tensor::<2, Int>::from_data(TensorData::new(vec![id as i64], [1, 1]), &dev());
        let h = lm.model.forward_cached(t, &[i], &[2], &mut cache);
        got.extend(to_vec_f32(lm.model.lm_head(h)).unwrap());
    }
    assert_eq!(got.len(), IDS.len() * v);
    let d = max_diff(&got, &full);
    println!("cached (left-padded) vs full: max |dlogit| = {d:e}");
    assert!(d < 1e-4, "max diff {d}");
}

#[test]
fn gguf_f32_and_q8_0_load_like_hf() {
    for qwen2 in [false, true] {
        let tiny = Tiny::new(qwen2, true, 11);
        let dir = tempfile::tempdir().unwrap();
        tiny.write_hf(&dir.path().join("hf"));
        tiny.q8_roundtrip().write_hf(&dir.path().join("hf_q8"));
        tiny.write_gguf(&dir.path().join("m.gguf"), false);
        tiny.write_gguf(&dir.path().join("q8.gguf"), true);
        let hf = load_model(&dir.path().join("hf"), &dev()).unwrap();
        let gg = load_model(&dir.path().join("m.gguf"), &dev()).unwrap();
        let q8 = load_model(&dir.path().join("q8.gguf"), &dev()).unwrap();
        let a = logits(&hf, &IDS);
        let d = max_diff(&a, &logits(&gg, &IDS));
        let hf_q8 = load_model(&dir.path().join("hf_q8"), &dev()).unwrap();
        let dq = max_diff(&logits(&hf_q8, &IDS), &logits(&q8, &IDS));
        println!("qwen2={qwen2}: gguf f32 vs hf {d:e}; gguf q8_0 vs hf of the dequantised weights {dq:e}");
        assert!(d < 1e-5, "f32 gguf differs by {d}");
        assert!(dq < 1e-4, "q8_0 gguf differs by {dq}");
        assert_eq!(gg.tokenizer.eos_ids, vec![tiny.vocab as u32 - 1]);
        // tokenizers agree
        let text = "hello world <|im_end|>";
        assert_eq!(hf.tokenizer.encode(text, false).unwrap(), gg.tokenizer.encode(text, false).unwrap());
        assert_eq!(gg.chat.render(None, "hi", true).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }
}

#[test]
fn export_roundtrip_gives_identical_logits() {
    let tiny = Tiny::new(false, true, 5);
    let dir = tempfile::tempdir().unwrap();
    tiny.write_gguf(&dir.path().join("m.gguf"), true);
    let gg = load_model(&dir.path().join("m.gguf"), &dev()).unwrap();
    save_hf(&gg, &dir.path().join("out")).unwrap();
    let back = load_model(&dir.path().join("out"), &dev()).unwrap();
    let d = max_diff(&logits(&gg, &IDS), &logits(&back, &IDS));
    println!("gguf(q8_0) -> save_hf -> load: max |dlogit| = {d:e}");
    assert_eq!(d, 0.0);
    assert_eq!(back.tokenizer.eos_ids, gg.tokenizer.eos_ids);
    assert_eq!(back.chat.render(Some("s"), "u", true).unwrap(), gg.chat.render(Some("s"), "u", true).unwrap());
    let text = "hello <|im_start|> wor";
    assert_eq!(back.tokenizer.encode(text, false).unwrap(), gg.tokenizer.encode(text, false).unwrap());
}

#[test]
fn score_equals_sum_of_sampler_logprobs_and_batch_independence() {
    let (_dir, mut lm) = tiny_lm(true, false, 9);
    lm.tokenizer.eos_ids.clear(); // run to max length
    let reqs = vec![
        GenRequest { prompt: vec![104, 101, 108], seeds: vec![1, 2, 3] },
        GenRequest { prompt: vec![119, 111, 114, 108, 100, 33, 33], seeds: vec![4, 5] },
    ];
    let params = SamplingParams { temperature: 1.0, top_p: 1.0, max_new_tokens: 12, ..Default::default() };
    let mut finished = 0;
    let out = generate(&lm, &reqs, &params, |n| finished += n).unwrap();
    assert_eq!(finished, 5);
    let mut pairs = Vec::new();
    let mut sums = Vec::new();
    for (r, gens) in reqs.iter().zip(&out) {
        for g in gens {
            assert_eq!(g.tokens.len(), 12);
            assert_eq!(g.finish_reason, FinishReason::Length);
            pairs.push((r.prompt.clone(), g.tokens.clone()));
            sums.push(g.token_logprobs.iter().map(|&x| x as f64).sum::<f64>());
        }
    }
    let scores = score(&lm, &pairs, 3).unwrap();
    for (s, want) in scores.iter().zip(&sums) {
        println!("score {s:.6} vs sampler sum {want:.6}");
        assert!((s - want).abs() < 1e-3, "{s} vs {want}");
    }
    // A sample's tokens do not depend on the rest of the batch.
    let alone = generate(&lm, &[GenRequest { prompt: reqs[1].prompt.clone(), seeds: vec![5] }], &params, |_| {}).unwrap();
    assert_eq!(alone[0][0].tokens, out[1][1].tokens);
    // Different seeds give different samples (vocab 261, 12 tokens).
    assert_ne!(out[0][0].tokens, out[0][1].tokens);
    // Greedy: all samples identical.
    let greedy = SamplingParams { temperature: 0.0, max_new_tokens: 6, ..Default::default() };
    let g = generate(&lm, &reqs[..1], &greedy, |_| {}).unwrap();
    assert_eq!(g[0][0].tokens, g[0][1].tokens);
    // Greedy equals argmax of the full forward, step by step.
    let mut seq = reqs[0].prompt.clone();
    for &tok in &g[0][0].tokens {
        let l = logits(&lm, &seq);
        let v = lm.model.vocab_size();
        let last = &l[l.len() - v..];
        let am = (0..v).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        assert_eq!(am as u32, tok);
        seq.push(tok);
    }
}

#[test]
fn continuous_batching_gives_each_sample_what_it_draws_alone() {
    // 18 rows of 6 prompts (lengths 2..12) through 2 slots: rows finish at different steps (one
    // in 8 ids is an EOS), freed slots take the next waiting sample, and the cache compacts
    // several times (capacity 41 = span 25 + 16; ~100 decode steps).
    let (_dir, mut lm) = tiny_lm(true, false, 9);
    lm.tokenizer.eos_ids = (0..261).filter(|i| i % 8 == 3).collect();
    let reqs: Vec<GenRequest> = (0..6u64)
        .map(|i| GenRequest { prompt: (0..2 + 2 * i as u32).map(|j| 97 + (j * 7 + i as u32) % 26).collect(), seeds: vec![10 * i, 10 * i + 1, 10 * i + 2] })
        .collect();
    let params = SamplingParams { temperature: 1.0, top_p: 0.9, max_new_tokens: 13, max_batch: 2, ..Default::default() };
    let mut seen = vec![0; reqs.len()];
    let mut out = vec![vec![]; reqs.len()];
    generate_each(&lm, &reqs, &params, |i, gens| {
        seen[i] += 1;
        out[i] = gens;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![1; 6], "every request is reported exactly once");
    let mut finishes = std::collections::HashSet::new();
    for (r, gens) in reqs.iter().zip(&out) {
        assert_eq!(gens.len(), 3);
        for (g, &seed) in gens.iter().zip(&r.seeds) {
            let alone = generate(&lm, &[GenRequest { prompt: r.prompt.clone(), seeds: vec![seed] }], &SamplingParams { max_batch: 1, ..params.clone() }, |_| {}).unwrap();
            assert_eq!(g.tokens, alone[0][0].tokens, "prompt {:?} seed {seed}", r.prompt);
            assert_eq!(g.finish_reason, alone[0][0].finish_reason);
            for (a, b) in g.token_logprobs.iter().zip(&alone[0][0].token_logprobs) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            finishes.insert((g.finish_reason == FinishReason::Stop, g.tokens.len()));
        }
    }
    // The rows really did end at different times, some by EOS and some by length.
    assert!(finishes.iter().any(|f| f.0) && finishes.iter().any(|f| !f.0), "{finishes:?}");
    assert!(finishes.len() >= 4, "{finishes:?}");
    // An error from the callback stops generation and comes back.
    let err = generate_each(&lm, &reqs, &params, |_, _| anyhow::bail!("disk full")).unwrap_err();
    assert_eq!(err.to_string(), "disk full");
}

#[test]
fn stops_on_eos_and_stop_strings() {
    let (_dir, mut lm) = tiny_lm(false, true, 21);
    let greedy = SamplingParams { temperature: 0.0, max_new_tokens: 8, ..Default::default() };
    let req = [GenRequest { prompt: vec![104, 101], seeds: vec![0] }];
    let base = generate(&lm, &req, &greedy, |_| {}).unwrap()[0][0].clone();
    // Make the 3rd greedy token an EOS id: generation must stop right after it.
    lm.tokenizer.eos_ids = vec![base.tokens[2]];
    let g = generate(&lm, &req, &greedy, |_| {}).unwrap()[0][0].clone();
    if base.tokens[..2].contains(&base.tokens[2]) {
        assert!(g.tokens.len() <= 3);
    } else {
        assert_eq!(g.tokens, base.tokens[..3].to_vec());
    }
    assert_eq!(g.finish_reason, FinishReason::Stop);
    lm.tokenizer.eos_ids.clear();
    // Stop string = the decoded 2nd token: the text is cut before it.
    let piece = lm.tokenizer.decode(&base.tokens[1..2], true).unwrap();
    if !piece.is_empty() {
        let p = SamplingParams { stop: vec![piece.clone()], ..greedy.clone() };
        let g = generate(&lm, &req, &p, |_| {}).unwrap()[0][0].clone();
        assert_eq!(g.finish_reason, FinishReason::StopString);
        assert!(!g.text.contains(&piece));
        assert!(g.tokens.len() <= 2);
    }
}

#[test]
fn clear_errors_for_bad_inputs() {
    let tiny = Tiny::new(false, true, 1);
    let dir = tempfile::tempdir().unwrap();
    // truncated GGUF
    let p = dir.path().join("m.gguf");
    tiny.write_gguf(&p, false);
    let bytes = std::fs::read(&p).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e = format!("{:#}", load_model(&cut, &dev()).err().unwrap());
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    let tiny_hdr = dir.path().join("hdr.gguf");
    std::fs::write(&tiny_hdr, &bytes[..40]).unwrap();
    let e = format!("{:#}", load_model(&tiny_hdr, &dev()).err().unwrap());
    assert!(e.contains("hdr.gguf"), "{e}");
    // shape mismatch names the tensor
    let mut bad = Tiny::new(false, true, 1);
    bad.weights.get_mut("model.layers.1.mlp.up_proj.weight").unwrap().0 = vec![24, 64];
    let hd = dir.path().join("bad");
    bad.write_hf(&hd);
    let e = format!("{:#}", load_model(&hd, &dev()).err().unwrap());
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    // unsupported architecture
    let mut arch = Tiny::new(false, true, 1);
    arch.cfg["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    let ad = dir.path().join("arch");
    arch.write_hf(&ad);
    let e = format!("{:#}", load_model(&ad, &dev()).err().unwrap());
    assert!(e.contains("GPT2LMHeadModel"), "{e}");
    // missing tokenizer
    let md = dir.path().join("notok");
    tiny.write_hf(&md);
    std::fs::remove_file(md.join("tokenizer.json")).unwrap();
    let e = format!("{:#}", load_model(&md, &dev()).err().unwrap());
    assert!(e.contains("tokenizer"), "{e}");
    // missing path
    assert!(load_model(&dir.path().join("nope"), &dev()).is_err());
}
