//! `LlamaConfig`: the subset of a Hugging Face `config.json` that a Llama-family decoder needs.
//! Supported architectures: `LlamaForCausalLM`, `MistralForCausalLM` (with sliding-window
//! attention), `Qwen2ForCausalLM`, `Qwen3ForCausalLM`, `Gemma3ForCausalLM` (text) and
//! `Phi3ForCausalLM` (fused `qkv_proj` / `gate_up_proj`, split on load by [`crate::fused`]).
//! The families differ only in the switches this module derives from the config (see [`Family`]).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
];

/// The model families this runtime implements; each is a set of switches on one decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
    Phi3,
}

/// MLP activation (`hidden_act` / `hidden_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    Silu,
    /// GeGLU with the tanh approximation (`gelu_pytorch_tanh`): `gelu_tanh(gate) * up`.
    GeluTanh,
}

/// `eos_token_id` is an int or a list of ints in HF configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` block. `llama3`, `linear` (and `default`) are implemented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Explicit head size (Qwen3, Gemma 3); default `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v/o projections (Llama, Qwen3, Gemma 3). Qwen2 always has q/k/v biases.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Llama/Qwen/Mistral name of the MLP activation (default silu).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Gemma name of the MLP activation (default gelu_pytorch_tanh).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Keys visible to a query in a sliding-window layer, the query included.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2/Qwen3: sliding windows only when this is true (layers >= `max_window_layers`).
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// `"sliding_attention"` / `"full_attention"` per layer (transformers >= 4.53).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3 (older configs): every `sliding_window_pattern`-th layer is global.
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// Gemma 3: RoPE base of the sliding-window layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// Gemma 3: attention scores are scaled by `query_pre_attn_scalar^-0.5` (an int in
    /// transformers' config class, so a whole value is written back as one).
    #[serde(default, serialize_with = "whole_as_int")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2 style soft-capping; refused when set.
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    /// Phi-3: fraction of each head that RoPE rotates; only 1.0 (all of it) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    /// transformers >= 5 style `{"rope_theta": .., "rope_type": .., ...}` (Gemma 3: one such block
    /// per layer type); folded into `rope_theta` / `rope_scaling` / `rope_local_base_freq` by
    /// [`LlamaConfig::normalize`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
}

fn whole_as_int<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => s.serialize_i64(*x as i64),
        Some(x) => s.serialize_f64(*x),
        None => s.serialize_none(),
    }
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading model config {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("model config {}", path.display()))
    }

    /// Parses, normalises and validates a config.json text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let mut cfg: LlamaConfig = serde_json::from_str(text).context("parsing")?;
        cfg.normalize().context("rope_parameters")?;
        cfg.validate().context("unsupported model config")?;
        Ok(cfg)
    }

    /// Folds a transformers-5 `rope_parameters` block into `rope_theta` / `rope_scaling`
    /// (and, for Gemma 3's per-layer-type blocks, `rope_local_base_freq`).
    pub fn normalize(&mut self) -> Result<()> {
        let Some(rp) = self.rope_parameters.clone() else { return Ok(()) };
        let (global, local) = match rp.get("full_attention") {
            Some(full) => (full.clone(), rp.get("sliding_attention").cloned()),
            None => (rp, None),
        };
        if let Some(theta) = global.get("rope_theta").and_then(|v| v.as_f64()) {
            self.rope_theta = theta;
        }
        if let Some(f) = global.get("partial_rotary_factor").and_then(|v| v.as_f64()) {
            self.partial_rotary_factor = Some(f);
        }
        let ty = global.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
        if ty != "default" && self.rope_scaling.is_none() {
            self.rope_scaling = Some(serde_json::from_value(global)?);
        }
        if let Some(local) = local {
            let ty = local.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
            if ty != "default" {
                bail!("sliding_attention rope_type {ty:?} is not supported (only default)");
            }
            if let Some(theta) = local.get("rope_theta").and_then(|v| v.as_f64()) {
                self.rope_local_base_freq = Some(theta);
            }
        }
        Ok(())
    }

    /// Architecture name, e.g. `LlamaForCausalLM`.
    pub fn architecture(&self) -> &str {
        self.architectures.first().map(|s| s.as_str()).unwrap_or("")
    }

    /// The family of a supported architecture (Llama for anything else; see [`Self::validate`]).
    pub fn family(&self) -> Family {
        match self.architecture() {
            "MistralForCausalLM" => Family::Mistral,
            "Qwen2ForCausalLM" => Family::Qwen2,
            "Qwen3ForCausalLM" => Family::Qwen3,
            "Gemma3ForCausalLM" => Family::Gemma3,
            "Phi3ForCausalLM" => Family::Phi3,
            _ => Family::Llama,
        }
    }

    pub fn is_qwen2(&self) -> bool {
        self.family() == Family::Qwen2
    }

    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// `head_dim`, else the family default transformers uses (Qwen3 128, Gemma 3 256,
    /// otherwise `hidden_size / num_attention_heads`).
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(match self.family() {
            Family::Qwen3 => 128,
            Family::Gemma3 => 256,
            _ => self.hidden_size / self.num_attention_heads.max(1),
        })
    }

    /// q/k/v projections carry a bias (always for Qwen2; with `attention_bias` otherwise).
    pub fn qkv_bias(&self) -> bool {
        self.is_qwen2() || self.attention_bias
    }

    /// o projection carries a bias (`attention_bias`; never for Qwen2).
    pub fn o_bias(&self) -> bool {
        !self.is_qwen2() && self.attention_bias
    }

    /// Per-head RMSNorm on queries and keys before RoPE (`q_norm` / `k_norm`, Qwen3 and Gemma 3).
    pub fn qk_norm(&self) -> bool {
        matches!(self.family(), Family::Qwen3 | Family::Gemma3)
    }

    /// Gemma's RMSNorm scales by `1 + weight` (the stored weight is an offset from 1).
    pub fn norm_offset(&self) -> f64 {
        if self.family() == Family::Gemma3 {
            1.0
        } else {
            0.0
        }
    }

    /// Gemma 3's "sandwich" norms: the attention and MLP outputs are normed again before the residual add.
    pub fn sandwich_norms(&self) -> bool {
        self.family() == Family::Gemma3
    }

    /// Embeddings are multiplied by this (Gemma: √hidden, computed in f32 like transformers'
    /// `embed_scale` buffer cast to the f32 weights this runtime computes with).
    pub fn embed_scale(&self) -> f32 {
        if self.family() == Family::Gemma3 {
            (self.hidden_size as f64).sqrt() as f32
        } else {
            1.0
        }
    }

    /// Attention score scale: `query_pre_attn_scalar^-0.5` (Gemma 3, default 256) or `head_dim^-0.5`.
    pub fn attn_scale(&self) -> f64 {
        let s = match (self.family(), self.query_pre_attn_scalar) {
            (_, Some(s)) => s,
            (Family::Gemma3, None) => 256.0,
            _ => self.head_dim() as f64,
        };
        1.0 / s.sqrt()
    }

    /// The configured MLP activation name.
    pub fn act_name(&self) -> &str {
        match (&self.hidden_activation, &self.hidden_act) {
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) if self.family() == Family::Gemma3 => "gelu_pytorch_tanh",
            (None, None) => "silu",
        }
    }

    pub fn activation(&self) -> Result<Activation> {
        Ok(match self.act_name() {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
            other => bail!("unsupported hidden activation {other:?} (supported: silu, gelu_pytorch_tanh)"),
        })
    }

    /// The sliding window in effect (None: every layer attends to the whole prefix).
    /// Qwen2/Qwen3 apply `sliding_window` only with `use_sliding_window`; Llama never has one.
    pub fn effective_sliding_window(&self) -> Option<usize> {
        match self.family() {
            Family::Llama => None,
            Family::Qwen2 | Family::Qwen3 if self.use_sliding_window != Some(true) => None,
            Family::Gemma3 => Some(self.sliding_window.unwrap_or(4096)),
            _ => self.sliding_window,
        }
    }

    /// Whether layer `i` uses sliding-window attention (and, for Gemma 3, the local RoPE base).
    pub fn layer_is_sliding(&self, i: usize) -> bool {
        if self.effective_sliding_window().is_none() {
            return false;
        }
        match (self.family(), &self.layer_types) {
            // transformers' Mistral and Phi-3 apply the window on every layer, whatever layer_types says
            (Family::Mistral | Family::Phi3, _) => true,
            (_, Some(types)) => types.get(i).map(|t| t == "sliding_attention").unwrap_or(false),
            (Family::Gemma3, None) => (i + 1) % self.sliding_window_pattern.unwrap_or(6).max(1) != 0,
            (_, None) => i >= self.max_window_layers.unwrap_or(28),
        }
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(|e| e.to_vec()).unwrap_or_default()
    }

    /// Checks that this runtime implements what the config describes.
    pub fn validate(&self) -> Result<()> {
        let arch = self.architecture();
        if !SUPPORTED_ARCHITECTURES.contains(&arch) {
            bail!(
                "unsupported architecture {:?} (supported: {})",
                if arch.is_empty() { "<missing `architectures`>" } else { arch },
                SUPPORTED_ARCHITECTURES.join(", ")
            );
        }
        self.activation()?;
        if self.mlp_bias {
            bail!("mlp_bias = true is not supported");
        }
        if self.num_attention_heads == 0 || self.num_hidden_layers == 0 || self.hidden_size == 0 {
            bail!("num_attention_heads, num_hidden_layers and hidden_size must be > 0");
        }
        if self.num_attention_heads % self.n_kv_heads() != 0 {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.n_kv_heads()
            );
        }
        if self.head_dim() % 2 != 0 {
            bail!("head_dim {} must be even for RoPE", self.head_dim());
        }
        if self.effective_sliding_window() == Some(0) {
            bail!("sliding_window must be > 0");
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                bail!("layer_types has {} entries for {} layers", types.len(), self.num_hidden_layers);
            }
            if let Some(t) = types.iter().find(|t| *t != "sliding_attention" && *t != "full_attention") {
                bail!("unsupported layer type {t:?} (supported: sliding_attention, full_attention)");
            }
        }
        for (key, v) in [
            ("final_logit_softcapping", self.final_logit_softcapping),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
        ] {
            if v.is_some() {
                bail!("{key} is not supported");
            }
        }
        if self.use_bidirectional_attention == Some(true) {
            bail!("use_bidirectional_attention = true is not supported");
        }
        if let Some(f) = self.partial_rotary_factor.filter(|&f| f != 1.0) {
            bail!("partial_rotary_factor = {f} is not supported (only 1.0: RoPE over the whole head)");
        }
        if let Some(rs) = &self.rope_scaling {
            match rs.rope_type.as_str() {
                "default" => {}
                "longrope" | "su" => bail!(
                    "rope_scaling.type = {:?} (LongRoPE short_factor/long_factor, the long-context Phi-3 variants) is not supported; the 4k-context variants (rope_scaling null) load",
                    rs.rope_type
                ),
                "linear" => {
                    if rs.factor.is_none() {
                        bail!("rope_scaling linear needs factor");
                    }
                }
                "llama3" => {
                    if rs.factor.is_none()
                        || rs.low_freq_factor.is_none()
                        || rs.high_freq_factor.is_none()
                        || rs.original_max_position_embeddings.is_none()
                    {
                        bail!("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor, original_max_position_embeddings");
                    }
                }
                other => bail!("unsupported rope_scaling type {other:?} (supported: llama3, linear)"),
            }
        }
        Ok(())
    }

    /// Unscaled RoPE inverse frequencies `base^(-2i/head_dim)` (length head_dim/2), in f64.
    fn base_inv_freq(&self, base: f64) -> Vec<f64> {
        let hd = self.head_dim();
        (0..hd / 2).map(|i| 1.0 / base.powf((2 * i) as f64 / hd as f64)).collect()
    }

    /// RoPE inverse frequencies (length head_dim/2) of the full-attention layers, with
    /// `rope_scaling` (llama3 or linear) applied when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let mut inv = self.base_inv_freq(self.rope_theta);
        if let Some(rs) = &self.rope_scaling {
            let factor = rs.factor.unwrap_or(1.0);
            match rs.rope_type.as_str() {
                "linear" => inv.iter_mut().for_each(|f| *f /= factor),
                "llama3" => {
                    let low = rs.low_freq_factor.unwrap_or(1.0);
                    let high = rs.high_freq_factor.unwrap_or(1.0);
                    let old_ctx = rs.original_max_position_embeddings.unwrap_or(8192) as f64;
                    let low_wavelen = old_ctx / low;
                    let high_wavelen = old_ctx / high;
                    for f in inv.iter_mut() {
                        let wavelen = 2.0 * std::f64::consts::PI / *f;
                        if wavelen > low_wavelen {
                            *f /= factor;
                        } else if wavelen >= high_wavelen {
                            let smooth = (old_ctx / wavelen - low) / (high - low);
                            *f = (1.0 - smooth) * *f / factor + smooth * *f;
                        }
                    }
                }
                _ => {}
            }
        }
        inv.into_iter().map(|f| f as f32).collect()
    }

    /// Gemma 3: unscaled RoPE inverse frequencies of the sliding-window layers
    /// (`rope_local_base_freq`, default 10000). None when those layers share the global table.
    pub fn rope_inv_freq_local(&self) -> Option<Vec<f32>> {
        if self.family() != Family::Gemma3 {
            return None;
        }
        let base = self.rope_local_base_freq.unwrap_or(10000.0);
        Some(self.base_inv_freq(base).into_iter().map(|f| f as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qwen2_and_rejects_unknown_arch() {
        let json = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":10,
            "hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
            "num_key_value_heads":1,"eos_token_id":[1,2],"tie_word_embeddings":true}"#;
        let c: LlamaConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert!(c.qkv_bias() && !c.o_bias());
        assert_eq!(c.eos_ids(), vec![1, 2]);
        assert_eq!(c.head_dim(), 4);
        let mut bad = c.clone();
        bad.architectures = vec!["GPTNeoXForCausalLM".into()];
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("GPTNeoXForCausalLM"), "{err}");
    }

    #[test]
    fn llama3_rope_scaling_changes_low_frequencies_only() {
        let json = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":128,
            "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":1,"rope_theta":500000.0,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192}}"#;
        let c: LlamaConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        // the same scaling given as transformers-5 rope_parameters
        let json5 = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":128,
            "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":1,
            "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let mut c5: LlamaConfig = serde_json::from_str(json5).unwrap();
        c5.normalize().unwrap();
        c5.validate().unwrap();
        assert_eq!(c5.rope_inv_freq(), c.rope_inv_freq());
        let mut plain = c.clone();
        plain.rope_scaling = None;
        let (a, b) = (c.rope_inv_freq(), plain.rope_inv_freq());
        assert_eq!(a[0], b[0]); // highest frequency untouched
        let last = a.len() - 1;
        assert!((a[last] * 8.0 - b[last]).abs() < 1e-9 * b[last].abs().max(1.0)); // lowest divided by factor
    }

    fn cfg(json: serde_json::Value) -> Result<LlamaConfig> {
        LlamaConfig::from_json_str(&json.to_string())
    }

    #[test]
    fn family_switches_follow_transformers_defaults() {
        let base = serde_json::json!({"vocab_size": 10, "hidden_size": 64, "intermediate_size": 16,
            "num_hidden_layers": 12, "num_attention_heads": 4});
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            cfg(v)
        };
        // Qwen2.5 hub configs carry a sliding_window that transformers ignores without use_sliding_window
        let q = with(serde_json::json!({"architectures": ["Qwen2ForCausalLM"], "sliding_window": 32768,
            "use_sliding_window": false, "max_window_layers": 2})).unwrap();
        assert_eq!(q.effective_sliding_window(), None);
        assert!(!q.layer_is_sliding(5));
        let q = with(serde_json::json!({"architectures": ["Qwen2ForCausalLM"], "sliding_window": 8,
            "use_sliding_window": true, "max_window_layers": 2})).unwrap();
        assert!(!q.layer_is_sliding(1) && q.layer_is_sliding(2));
        // Qwen3: head_dim defaults to 128, q/k norms, attention_bias on all four projections
        let q3 = with(serde_json::json!({"architectures": ["Qwen3ForCausalLM"], "attention_bias": true})).unwrap();
        assert_eq!(q3.head_dim(), 128);
        assert!(q3.qk_norm() && q3.qkv_bias() && q3.o_bias());
        assert_eq!(q3.norm_offset(), 0.0);
        // Mistral: the window applies on every layer
        let m = with(serde_json::json!({"architectures": ["MistralForCausalLM"], "sliding_window": 4})).unwrap();
        assert!((0..12).all(|i| m.layer_is_sliding(i)));
        // Llama never has a window
        let l = with(serde_json::json!({"architectures": ["LlamaForCausalLM"], "sliding_window": 4})).unwrap();
        assert_eq!(l.effective_sliding_window(), None);
        // Gemma 3 as published on the hub (transformers 4.x keys): every 6th layer global
        let g = with(serde_json::json!({"architectures": ["Gemma3ForCausalLM"], "head_dim": 16,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
            "sliding_window_pattern": 6, "query_pre_attn_scalar": 256, "hidden_activation": "gelu_pytorch_tanh"})).unwrap();
        let sliding: Vec<bool> = (0..12).map(|i| g.layer_is_sliding(i)).collect();
        assert_eq!(sliding.iter().filter(|s| !**s).count(), 2);
        assert!(!sliding[5] && !sliding[11] && sliding[0]);
        assert_eq!(g.activation().unwrap(), Activation::GeluTanh);
        assert_eq!(g.attn_scale(), 1.0 / 16.0);
        assert_eq!(g.embed_scale(), 8.0);
        assert_eq!(g.norm_offset(), 1.0);
        let local = g.rope_inv_freq_local().unwrap();
        assert_eq!(local[1], 1.0 / 10000f64.powf(2.0 / 16.0) as f32);
        assert_ne!(local[1], g.rope_inv_freq()[1]);
        // transformers-5 nested rope_parameters give the same thing
        let g5 = with(serde_json::json!({"architectures": ["Gemma3ForCausalLM"], "head_dim": 16,
            "sliding_window": 512, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}})).unwrap();
        assert_eq!((g5.rope_inv_freq(), g5.rope_inv_freq_local()), (g.rope_inv_freq(), g.rope_inv_freq_local()));
        // what we do not implement is refused, naming it
        for (extra, needle) in [
            (serde_json::json!({"architectures": ["Gemma3ForCausalLM"], "final_logit_softcapping": 30.0}), "final_logit_softcapping"),
            (serde_json::json!({"architectures": ["LlamaForCausalLM"], "hidden_act": "relu"}), "relu"),
            (serde_json::json!({"architectures": ["Gemma3ForConditionalGeneration"]}), "Gemma3ForCausalLM"),
            (serde_json::json!({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn", "factor": 2.0}}), "yarn"),
            (serde_json::json!({"architectures": ["Gemma3ForCausalLM"], "layer_types": ["chunked_attention"]}), "layer_types"),
        ] {
            let e = format!("{:#}", with(extra).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }
}
