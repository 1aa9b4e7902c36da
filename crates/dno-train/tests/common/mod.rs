//! A tiny random Llama (2 layers, hidden 16, vocab 32) with a word-level tokenizer, for tests.
#![allow(dead_code)]

use anyhow::Result;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_math::SplitMix64;
use dno_model::model::WeightSource;
use dno_model::{ChatTemplate, LlamaConfig, LoadedModel, Llama, Tok};
use dno_train::TrainExample;

pub const VOCAB: usize = 32;

pub fn tiny_config() -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "max_position_embeddings": 128,
        "bos_token_id": 1,
        "eos_token_id": 2
    }))
    .expect("tiny config")
}

/// Deterministic N(0, 0.02²)-ish weights (uniform with the same variance); norms are 1.
struct RandomSource {
    cfg: LlamaConfig,
    rng: SplitMix64,
}

impl WeightSource for RandomSource {
    fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let c = &self.cfg;
        let (d, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (q, kv) = (c.num_attention_heads * c.head_dim(), c.n_kv_heads() * c.head_dim());
        let shape = if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
            return Ok(Some((vec![d], vec![1.0; d])));
        } else if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
            vec![v, d]
        } else if name.ends_with("q_proj.weight") {
            vec![q, d]
        } else if name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
            vec![kv, d]
        } else if name.ends_with("o_proj.weight") {
            vec![d, q]
        } else if name.ends_with("gate_proj.weight") || name.ends_with("up_proj.weight") {
            vec![i, d]
        } else if name.ends_with("down_proj.weight") {
            vec![d, i]
        } else {
            return Ok(None);
        };
        let n: usize = shape.iter().product();
        let scale = 0.5 * 3f64.sqrt(); // uniform(-s, s) with std 0.5: lively logits on a tiny model
        let data = (0..n).map(|_| ((self.rng.next_f64() * 2.0 - 1.0) * scale) as f32).collect();
        Ok(Some((shape, data)))
    }

    fn origin(&self) -> String {
        "random test weights".into()
    }
}

pub fn tiny_tokenizer() -> Tok {
    let mut vocab = serde_json::Map::new();
    for id in 0..VOCAB {
        let tok = match id {
            0 => "<unk>".to_string(),
            1 => "<s>".to_string(),
            2 => "</s>".to_string(),
            _ => format!("w{id}"),
        };
        vocab.insert(tok, serde_json::json!(id));
    }
    let doc = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Tok::from_json(&doc, Some("<s>".into()), Some("</s>".into())).expect("tiny tokenizer")
}

pub fn tiny_model(seed: u64, device: &Device) -> LoadedModel {
    let cfg = tiny_config();
    let mut src = RandomSource { cfg: cfg.clone(), rng: SplitMix64::new(seed) };
    let model = Llama::from_source(&cfg, &mut src, device).expect("tiny model");
    LoadedModel {
        model,
        config: cfg,
        tokenizer: tiny_tokenizer(),
        chat: ChatTemplate::new(None, "<s>".into(), "</s>".into()).expect("chat"),
    }
}

/// `n` preference pairs over the tiny vocabulary: chosen responses use tokens 3..17, rejected
/// 17..31, so "prefer the low half" is learnable.
pub fn pairs(n: usize, seed: u64) -> Vec<TrainExample> {
    let mut rng = SplitMix64::new(seed);
    let mut tok = |lo: u64, hi: u64| (lo + rng.below(hi - lo)) as u32;
    (0..n)
        .map(|k| {
            let plen = 2 + k % 3;
            let prompt: Vec<u32> = (0..plen).map(|_| tok(3, 31)).collect();
            let chosen: Vec<u32> = (0..3 + k % 2).map(|_| tok(3, 17)).collect();
            let rejected: Vec<u32> = (0..3 + (k + 1) % 2).map(|_| tok(17, 31)).collect();
            TrainExample {
                id: format!("pair-{k}"),
                prompt_tokens: prompt,
                chosen_tokens: chosen,
                rejected_tokens: Some(rejected),
                target: 0.73,
                weight: 1.0,
                chosen_winrate: 0.8,
                rejected_winrate: 0.2,
            }
        })
        .collect()
}

/// Logits of `model` on a fixed token matrix, flattened.
pub fn probe_logits(model: &Llama, device: &Device) -> Vec<f32> {
    let tokens: Vec<i64> = vec![1, 5, 9, 20, 3, 7, 1, 30, 12, 4, 18, 25];
    let t = Tensor::<2, Int>::from_data(TensorData::new(tokens, [2, 6]), device);
    model.forward(t).into_data().try_to_vec::<f32>().expect("logits")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
