//! Parity of the other families with transformers on committed fixtures (always run; made by
//! scripts/make_tiny_families.py): Qwen3 (HF + GGUF with Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 tensors),
//! Mistral with a sliding window, Gemma 3 (HF + GGUF), Llama 3 rope scaling from GGUF
//! `rope_freqs`, Phi-3 (fused projections; HF + GGUF), and dequantisation of every supported GGUF
//! quant type against gguf-py.
//! Each model: full logits within 1e-4 of transformers, greedy tokens identical (KV-cache path),
//! and `save_hf` writes the family's config keys and reloads with identical logits; a packed
//! training row (shared prompt) respects the sliding window by position.

use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_model::gguf::GgufFile;
use dno_model::model::to_vec_f32;
use dno_model::{generate, load_model, save_hf, GenRequest, LoadedModel, SamplingParams};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
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

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Max |Δlogit| over every position and the whole vocabulary of the reference sequences.
fn worst_logit_diff(lm: &LoadedModel, refs: &Value) -> f64 {
    let mut worst = 0f64;
    for s in refs["sequences"].as_array().unwrap() {
        let got = logits(lm, &ids(&s["ids"]));
        let want: Vec<f64> =
            s["logits"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
        assert_eq!(got.len(), want.len(), "logits shape");
        worst = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(worst, f64::max);
    }
    worst
}

/// Logits and greedy parity with the reference; returns the loaded model.
fn check(model: &str, reference: &str) -> LoadedModel {
    let mut lm = load_model(&fixtures().join(model), &Device::flex()).unwrap_or_else(|e| panic!("{model}: {e:#}"));
    let refs = json(&fixtures().join(reference));
    let d = worst_logit_diff(&lm, &refs);
    println!("{model}: max |dlogit| vs transformers = {d:.2e}");
    assert!(d < 1e-4, "{model}: logits differ by {d}");
    let g = &refs["greedy"];
    let want = ids(&g["new_ids"]);
    lm.tokenizer.eos_ids.clear(); // the reference runs to its length
    let p = SamplingParams { temperature: 0.0, max_new_tokens: want.len(), ..Default::default() };
    let out = generate(&lm, &[GenRequest { prompt: ids(&g["prompt_ids"]), seeds: vec![0] }], &p, |_| {}).unwrap();
    assert_eq!(out[0][0].tokens, want, "{model}: greedy tokens differ");
    println!("{model}: {} greedy tokens identical", want.len());
    lm
}

/// save_hf -> config.json (returned) and a reload with identical logits.
fn export_roundtrip(lm: &LoadedModel, refs: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    save_hf(lm, dir.path()).unwrap();
    let back = load_model(dir.path(), &Device::flex()).unwrap();
    let toks = ids(&json(&fixtures().join(refs))["sequences"][0]["ids"]);
    assert_eq!(max_diff(&logits(lm, &toks), &logits(&back, &toks)), 0.0, "export changed the logits");
    json(&dir.path().join("config.json"))
}

#[test]
fn qwen3_hf_matches_transformers_and_exports() {
    let lm = check("tiny-qwen3", "tiny-qwen3/reference.json");
    assert!(lm.model.layers[0].self_attn.q_norm.is_some(), "q_norm loaded");
    assert!(lm.model.layers[0].self_attn.o_proj.bias.is_some(), "attention_bias read from config");
    assert_eq!(lm.model.layers[0].self_attn.head_dim, 16);
    let cfg = export_roundtrip(&lm, "tiny-qwen3/reference.json");
    assert_eq!(cfg["architectures"][0], "Qwen3ForCausalLM");
    assert_eq!(cfg["head_dim"], 16);
    assert_eq!(cfg["attention_bias"], true);
}

#[test]
fn qwen3_gguf_with_q4_q5_q8_tensors_matches_transformers() {
    let lm = check("tiny-qwen3.gguf", "tiny-qwen3.reference.json");
    let cfg = export_roundtrip(&lm, "tiny-qwen3.reference.json");
    assert_eq!(cfg["architectures"][0], "Qwen3ForCausalLM");
    assert_eq!(cfg["head_dim"], 16);
}

#[test]
fn mistral_sliding_window_matches_transformers_in_forward_and_generation() {
    let lm = check("tiny-mistral-sw", "tiny-mistral-sw/reference.json");
    assert_eq!(lm.model.sliding_window, Some(4));
    assert!(lm.model.layers.iter().all(|l| l.sliding));
    let cfg = export_roundtrip(&lm, "tiny-mistral-sw/reference.json");
    assert_eq!(cfg["sliding_window"], 4);
    // The window matters: without it the logits are not the reference's.
    let mut full = load_model(&fixtures().join("tiny-mistral-sw"), &Device::flex()).unwrap();
    full.model.sliding_window = None;
    let d = worst_logit_diff(&full, &json(&fixtures().join("tiny-mistral-sw/reference.json")));
    println!("tiny-mistral-sw without its window: max |dlogit| = {d:.2e}");
    assert!(d > 1e-2, "sliding window has no effect ({d})");
}

#[test]
fn gemma3_hf_matches_transformers_and_exports() {
    let lm = check("tiny-gemma3", "tiny-gemma3/reference.json");
    let sliding: Vec<bool> = lm.model.layers.iter().map(|l| l.sliding).collect();
    assert_eq!(sliding, [true, false, true, false]);
    assert!(lm.model.inv_freq_local.is_some());
    assert_eq!(lm.model.embed_scale, (32f64).sqrt() as f32);
    let cfg = export_roundtrip(&lm, "tiny-gemma3/reference.json");
    assert_eq!(cfg["architectures"][0], "Gemma3ForCausalLM");
    assert_eq!(cfg["hidden_activation"], "gelu_pytorch_tanh");
    assert_eq!(cfg["query_pre_attn_scalar"], 24); // an int, as transformers requires
    assert_eq!(cfg["sliding_window"], 4);
    assert_eq!(cfg["rope_local_base_freq"], 10000.0);
    assert_eq!(cfg["rope_theta"], 1e6);
    assert_eq!(cfg["layer_types"][1], "full_attention");
    assert_eq!(cfg["tie_word_embeddings"], true);
}

#[test]
fn gemma3_gguf_matches_transformers_gguf_loader_and_exports() {
    let lm = check("tiny-gemma3.gguf", "tiny-gemma3.reference.json");
    let sliding: Vec<bool> = lm.model.layers.iter().map(|l| l.sliding).collect();
    assert_eq!(sliding, [true, true, true, true, true, false]);
    let cfg = export_roundtrip(&lm, "tiny-gemma3.reference.json");
    assert_eq!(cfg["architectures"][0], "Gemma3ForCausalLM");
    assert_eq!(cfg["query_pre_attn_scalar"], 16);
}

#[test]
fn phi3_fused_projections_match_transformers_and_export_fused() {
    let lm = check("tiny-phi3", "tiny-phi3/reference.json");
    assert_eq!(lm.model.sliding_window, Some(4));
    assert!(lm.model.layers.iter().all(|l| l.sliding));
    // save_hf writes qkv_proj / gate_up_proj back (and reloads with identical logits)
    let dir = tempfile::tempdir().unwrap();
    save_hf(&lm, dir.path()).unwrap();
    let st = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&st).unwrap().names().into_iter().map(String::from).collect();
    assert!(names.contains(&"model.layers.1.self_attn.qkv_proj.weight".to_string()), "{names:?}");
    assert!(names.contains(&"model.layers.0.mlp.gate_up_proj.weight".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("q_proj") || n.contains(".up_proj") || n.contains("gate_proj.")), "{names:?}");
    let cfg = export_roundtrip(&lm, "tiny-phi3/reference.json");
    assert_eq!(cfg["architectures"][0], "Phi3ForCausalLM");
    assert_eq!(cfg["sliding_window"], 4);
}

#[test]
fn phi3_gguf_matches_transformers() {
    let lm = check("tiny-phi3.gguf", "tiny-phi3.reference.json");
    assert_eq!(lm.model.sliding_window, None);
    let cfg = export_roundtrip(&lm, "tiny-phi3.reference.json");
    assert_eq!(cfg["architectures"][0], "Phi3ForCausalLM");
}

#[test]
fn phi3_long_context_variants_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixtures().join("tiny-phi3")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let mut cfg = json(&dir.path().join("config.json"));
    let half = vec![1.0; 4]; // head_dim 8 / 2
    cfg["rope_parameters"] = serde_json::json!({"rope_type": "longrope", "rope_theta": 10000.0,
        "short_factor": half, "long_factor": half, "partial_rotary_factor": 1.0});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = format!("{:#}", load_model(dir.path(), &Device::flex()).err().expect("refused"));
    assert!(err.contains("rope_scaling.type") && err.contains("longrope"), "{err}");
    cfg["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = format!("{:#}", load_model(dir.path(), &Device::flex()).err().expect("refused"));
    assert!(err.contains("partial_rotary_factor"), "{err}");
}

#[test]
fn llama3_rope_freqs_from_gguf_matches_hf_rope_scaling() {
    let lm = check("tiny-llama3.gguf", "tiny-llama3.reference.json");
    let rs = lm.config.rope_scaling.as_ref().expect("rope_scaling recovered");
    assert_eq!(rs.rope_type, "llama3");
    assert_eq!((rs.factor, rs.low_freq_factor, rs.high_freq_factor), (Some(4.0), Some(1.0), Some(4.0)));
    assert_eq!(rs.original_max_position_embeddings, Some(128));
    let cfg = export_roundtrip(&lm, "tiny-llama3.reference.json");
    assert_eq!(cfg["rope_scaling"]["rope_type"], "llama3");
    assert_eq!(cfg["rope_scaling"]["original_max_position_embeddings"], 128);
}

#[test]
fn gguf_quant_types_dequantise_like_gguf_py() {
    let g = GgufFile::open(&fixtures().join("gguf-quants.gguf")).unwrap();
    let names = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"];
    for name in names {
        let (shape, got) = g.tensor_f32(name).unwrap().unwrap();
        let (_, want) = g.tensor_f32(&format!("{name}.ref")).unwrap().unwrap();
        assert_eq!(shape, vec![2, 256], "{name}");
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_diff(&got, &want);
        println!("{name}: max |d| vs gguf.quants.dequantize = {d:e} (max |x| {scale})");
        assert!(d <= 1e-6 * scale.max(1.0), "{name}: differs by {d}");
    }
    let e = format!("{:#}", g.tensor_f32("TQ2_0").unwrap_err());
    assert!(e.contains("TQ2_0") && e.contains("not supported") && e.contains("Q5_K"), "{e}");
}

#[test]
fn sliding_window_follows_positions_in_packed_rows() {
    // One row = prompt ++ r1 ++ r2, r2 at the positions right after the prompt and blind to r1
    // (how training shares a prompt): r2's logits equal those of prompt ++ r2 alone.
    use dno_model::model::MASKED;
    let lm = load_model(&fixtures().join("tiny-mistral-sw"), &Device::flex()).unwrap();
    let (p, r1, r2): (Vec<u32>, Vec<u32>, Vec<u32>) = ((10..16).collect(), (40..45).collect(), (70..75).collect());
    let row: Vec<u32> = [p.clone(), r1.clone(), r2.clone()].concat();
    let w = row.len();
    let positions: Vec<usize> = (0..p.len() + r1.len()).chain(p.len()..p.len() + r2.len()).collect();
    let mut mask = vec![0f32; w * w];
    for i in 0..w {
        for j in 0..w {
            let r2_sees_r1 = i >= p.len() + r1.len() && (p.len()..p.len() + r1.len()).contains(&j);
            if j > i || r2_sees_r1 {
                mask[i * w + j] = MASKED;
            }
        }
    }
    let dev = Device::flex();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(row.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, w]), &dev);
    let rope = lm.model.rope(&[positions], &dev);
    let mask = Tensor::<4>::from_data(TensorData::new(mask, [1, 1, w, w]), &dev);
    let packed = to_vec_f32(lm.model.lm_head(lm.model.forward_hidden_with(tokens, &rope, &mask))).unwrap();
    let v = lm.model.vocab_size();
    let alone = logits(&lm, &[p.clone(), r2.clone()].concat());
    let d = max_diff(&packed[(p.len() + r1.len()) * v..], &alone[p.len() * v..]);
    println!("packed r2 vs prompt ++ r2 alone (window 4): max |dlogit| = {d:e}");
    assert!(d < 1e-5, "{d}");
}
