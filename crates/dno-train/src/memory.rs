//! An estimate of training's peak memory (`dno train --dry-run`): weights, gradients, optimiser
//! state and activations for a model, batch shape, shard count, checkpointing flag and dtype.
//!
//! Under mixed precision (`--dtype bf16`/`f16`, full fine-tuning) the parameters and their
//! gradients are in the compute dtype, and the optimiser state holds an f32 master copy of every
//! parameter beside the two f32 AdamW moments ([`crate::optim`]); activations are in the compute
//! dtype but for the residual stream and the norms, which stay f32 (`Model::autocast`); the head's
//! log-softmax works on f32 chunks. With LoRA the frozen base is stored in the
//! compute dtype and only the adapters (and their gradients) are f32.
//!
//! Activations are counted from what burn's autodiff keeps for the backward pass of one
//! decoder layer ([`crate::memory::activation_floats_per_token`]), times layers and tokens of the
//! micro-batch, plus the chunked output head's working set. The counts were checked against
//! measured peak RSS on the CPU (`scripts/check_memory_model.sh`, table in the README).

use dno_model::score::HEAD_CHUNK;
use dno_model::{Dtype, LlamaConfig};
use serde::Serialize;

use crate::batch::PackedBatch;
use crate::{TrainConfig, TrainExample};

const F32: u64 = 4;

/// The shape of one micro-batch as it goes through the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Rows of the widest micro-batch (one per pair when the prompt is shared).
    pub rows: usize,
    /// Its padded width in tokens.
    pub width: usize,
    /// Data-parallel shards a micro-batch is split into (each holds its own graph and gradients).
    pub shards: usize,
    pub gradient_checkpointing: bool,
    /// The compute dtype (`--dtype`).
    pub dtype: Dtype,
}

/// Bytes, by what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// The policy's parameters.
    pub weights: u64,
    /// Gradients of the trainable parameters: one set per shard, plus the step's f32 running sum
    /// when a step has several micro-batches.
    pub gradients: u64,
    /// AdamW's two moments per trainable parameter, and under mixed precision its f32 master copy.
    pub optimizer: u64,
    /// What the autodiff graph keeps for the backward pass, over all shards, plus the output
    /// head's chunk working set.
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.optimizer + self.activations
    }
}

/// (all parameters, trainable parameters) of `model` under `cfg` (LoRA: the adapters only).
pub fn parameter_counts(model: &LlamaConfig, cfg: &TrainConfig) -> (u64, u64) {
    let (d, f, v) = (model.hidden_size as u64, model.intermediate_size as u64, model.vocab_size as u64);
    let (h, kv, hd) = (model.num_attention_heads as u64, model.n_kv_heads() as u64, model.head_dim() as u64);
    let bias = if model.qkv_bias() { (h + 2 * kv) * hd } else { 0 } + if model.o_bias() { d } else { 0 };
    let layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * f + 2 * d + bias;
    let head = if model.tie_word_embeddings { 0 } else { v * d };
    let all = v * d + head + model.num_hidden_layers as u64 * layer + d;
    let trainable = match &cfg.lora {
        None => all,
        Some(l) => {
            let r = l.rank as u64;
            let per = |name: &str| -> u64 {
                let (i, o) = match name {
                    "q_proj" => (d, h * hd),
                    "k_proj" | "v_proj" => (d, kv * hd),
                    "o_proj" => (h * hd, d),
                    "gate_proj" | "up_proj" => (d, f),
                    "down_proj" => (f, d),
                    _ => (0, 0),
                };
                r * (i + o)
            };
            model.num_hidden_layers as u64 * l.targets.iter().map(|t| per(t)).sum::<u64>()
        }
    };
    (all, trainable)
}

/// Floats burn's autodiff keeps per token and decoder layer for the backward pass, for a row
/// `width` tokens wide.
///
/// Every op keeps its inputs: the two RMSNorms ~2·D each (input and normalised input), q/k after
/// RoPE and their rotated halves 2·(H + KV)·hd, v KV·hd, the attention output H·hd, the softmax's
/// exponentials and probabilities 2·H·width, the MLP's gate, its sigmoid, SiLU output, up and their
/// product 5·F. With layer-wise checkpointing ([`dno_model::recompute`]) a layer keeps only its
/// input (D) until the backward pass, which rebuilds one layer's full set at a time.
pub fn activation_floats_per_token(model: &LlamaConfig, width: usize, gradient_checkpointing: bool) -> u64 {
    let (d, f) = (model.hidden_size as u64, model.intermediate_size as u64);
    let (h, kv, hd) = (model.num_attention_heads as u64, model.n_kv_heads() as u64, model.head_dim() as u64);
    let w = width as u64;
    if gradient_checkpointing {
        d
    } else {
        4 * d + 2 * (h + kv) * hd + kv * hd + h * hd + 2 * h * w + 5 * f
    }
}

/// The estimate for training `model` with `cfg` on micro-batches shaped like `w`.
pub fn estimate(model: &LlamaConfig, cfg: &TrainConfig, w: &Workload) -> MemoryEstimate {
    let (all, trainable) = parameter_counts(model, cfg);
    let shards = w.shards.max(1) as u64;
    let tokens = (w.rows * w.width) as u64;
    let layers = model.num_hidden_layers as u64;
    let per_token = activation_floats_per_token(model, w.width, w.gradient_checkpointing);
    // Embedding output and final norm per token, the attention mask per row, and per shard the
    // head's chunk working set (logits, probabilities, their gradient: 3 x HEAD_CHUNK x V).
    let d = model.hidden_size as u64;
    // Checkpointing adds the one layer being recomputed.
    let recomputed = if w.gradient_checkpointing { activation_floats_per_token(model, w.width, false) } else { 0 };
    let graph = tokens * (layers * per_token + recomputed + 3 * d) + (w.rows * w.width * w.width) as u64;
    let head = shards * 3 * (HEAD_CHUNK as u64) * model.vocab_size as u64;
    let s = w.dtype.size() as u64;
    // Under mixed precision the residual stream and the norms stay f32 (`Model::autocast`): per
    // token, each layer's two norm inputs and outputs (4·D; with checkpointing its f32 input, D,
    // and 4·D for the layer being recomputed), the embedding output and the final norm (3·D).
    let f32_floats = if w.dtype == Dtype::F32 {
        0
    } else if w.gradient_checkpointing {
        tokens * (layers * d + 4 * d + 3 * d)
    } else {
        tokens * (layers * 4 * d + 3 * d)
    };
    // Trainable parameters (and so their gradients) are f32 in an f32 run and LoRA's adapters,
    // else in the compute dtype.
    let (weights, grad_bytes, masters) = match (&cfg.lora, w.dtype) {
        (_, Dtype::F32) => (all * F32, F32, 0),
        (Some(_), _) => (all * s + trainable * F32, F32, 0),
        (None, _) => (all * s, s, trainable * F32),
    };
    // Every shard's gradients are alive together when they are summed; a step of several
    // micro-batches also keeps the running sum, in f32.
    let accumulator = if cfg.examples_per_step() > cfg.batch_size { trainable * F32 } else { 0 };
    MemoryEstimate {
        weights,
        gradients: shards * trainable * grad_bytes + accumulator,
        optimizer: 2 * trainable * F32 + masters,
        activations: (graph - f32_floats) * s + (f32_floats + head) * F32,
    }
}

/// The widest micro-batch `examples` can make under `cfg`: `batch_size` rows (one per pair, the
/// prompt shared) as wide as the longest packed pair after truncation to `max_len`.
pub fn workload(examples: &[TrainExample], cfg: &TrainConfig, shards: usize, gradient_checkpointing: bool) -> anyhow::Result<Workload> {
    let preference = cfg.loss != dno_math::loss::LossKind::Sft;
    let mut width = 0;
    for e in examples {
        let b = PackedBatch::pack_pairs(&[e.pair_tokens(preference)], cfg.max_len, 0, usize::MAX)
            .map_err(|err| anyhow::anyhow!("example {:?}: {err}", e.id))?;
        width = width.max(b.width);
    }
    let rows = cfg.batch_size.min(examples.len()).max(1);
    Ok(Workload { rows, width, shards: shards.clamp(1, rows), gradient_checkpointing, dtype: Dtype::F32 })
}

/// The estimate as a small table, MiB.
pub fn render(e: &MemoryEstimate) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = String::new();
    for (name, b) in [("weights", e.weights), ("gradients", e.gradients), ("optimizer", e.optimizer), ("activations", e.activations), ("total", e.total())] {
        s.push_str(&format!("  {name:<12} {:>10.1} MiB\n", mib(b)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LlamaConfig {
        serde_json::from_value(serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 8,
            "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": true, "max_position_embeddings": 64
        }))
        .unwrap()
    }

    /// The arithmetic, term by term, on a model small enough to count by hand.
    #[test]
    fn estimate_adds_up_on_a_tiny_model() {
        let m = tiny();
        // d=8, f=12, h=2, kv=1, hd=4: layer = 8·8 (q) + 8·8 (o) + 2·8·4 (k, v) + 3·8·12 + 2·8 = 496.
        let cfg = TrainConfig::default();
        assert_eq!(parameter_counts(&m, &cfg), (100 * 8 + 2 * 496 + 8, 1800));
        let lora = TrainConfig {
            lora: Some(crate::LoraConfig { rank: 2, alpha: 4.0, targets: vec!["q_proj".into(), "down_proj".into()] }),
            ..TrainConfig::default()
        };
        // q: 2·(8 + 8), down: 2·(12 + 8), two layers.
        assert_eq!(parameter_counts(&m, &lora).1, 2 * (32 + 40));
        // 4·8 + 2·3·4 + 4 + 8 + 2·2·10 + 5·12 = 168; checkpointed: the layer's input, 8.
        assert_eq!(activation_floats_per_token(&m, 10, false), 168);
        assert_eq!(activation_floats_per_token(&m, 10, true), 8);
        let w = Workload { rows: 3, width: 10, shards: 2, gradient_checkpointing: false, dtype: Dtype::F32 };
        let e = estimate(&m, &cfg, &w);
        assert_eq!(e.weights, 1800 * 4);
        assert_eq!(e.gradients, 2 * 1800 * 4, "one micro-batch: two shards' gradients, no running sum");
        let accum = estimate(&m, &TrainConfig { grad_accum: 2, ..cfg.clone() }, &w);
        assert_eq!(accum.gradients, 3 * 1800 * 4, "two micro-batches add the f32 running sum");
        assert_eq!(e.optimizer, 2 * 1800 * 4);
        let graph = 30 * (2 * 168 + 24) + 300;
        assert_eq!(e.activations, (graph + 2 * 3 * HEAD_CHUNK as u64 * 100) * 4);
        assert_eq!(e.total(), e.weights + e.gradients + e.optimizer + e.activations);
        let ck = estimate(&m, &cfg, &Workload { gradient_checkpointing: true, ..w });
        assert_eq!(ck.activations, (30 * (2 * 8 + 168 + 24) + 300 + 2 * 3 * HEAD_CHUNK as u64 * 100) * 4);
        assert!(ck.activations < e.activations && ck.weights == e.weights);
        // bf16: bf16 weights and gradients, f32 masters and moments, a bf16 graph but for the
        // f32 residual and norms (30 tokens x (2 layers x 4·8 + 3·8) floats), f32 head.
        let bf = estimate(&m, &cfg, &Workload { dtype: Dtype::Bf16, ..w });
        assert_eq!(bf.weights, 1800 * 2);
        assert_eq!((bf.gradients, bf.optimizer), (2 * 1800 * 2, 3 * 1800 * 4));
        let f32_floats = 30 * (2 * 32 + 24);
        assert_eq!(bf.activations, (graph - f32_floats) * 2 + (f32_floats + 2 * 3 * HEAD_CHUNK as u64 * 100) * 4);
        // bf16 LoRA: the frozen base in bf16, the adapters in f32.
        assert_eq!(estimate(&m, &lora, &Workload { dtype: Dtype::Bf16, ..w }).weights, 1800 * 2 + 144 * 4);
    }
}
