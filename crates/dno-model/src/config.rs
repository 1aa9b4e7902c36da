//! `LlamaConfig`: the subset of a Hugging Face `config.json` that a Llama-family decoder needs.
//! Supported architectures: `LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`
//! (the latter without sliding-window attention).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SUPPORTED_ARCHITECTURES: &[&str] =
    &["LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"];

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

/// `rope_scaling` block. Only `llama3` (and `default`) are implemented.
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
    /// Llama: bias on q/k/v/o projections. (Qwen2 always has q/k/v biases, see `qkv_bias`.)
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    /// transformers >= 5 style `{"rope_theta": .., "rope_type": .., ...}`; folded into
    /// `rope_theta` / `rope_scaling` by [`LlamaConfig::normalize`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
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
fn default_act() -> String {
    "silu".to_string()
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading model config {}", path.display()))?;
        let mut cfg: LlamaConfig = serde_json::from_str(&text)
            .with_context(|| format!("parsing model config {}", path.display()))?;
        cfg.normalize()
            .with_context(|| format!("model config {}: rope_parameters", path.display()))?;
        cfg.validate()
            .with_context(|| format!("unsupported model config {}", path.display()))?;
        Ok(cfg)
    }

    /// Folds a transformers-5 `rope_parameters` block into `rope_theta` / `rope_scaling`.
    pub fn normalize(&mut self) -> Result<()> {
        let Some(rp) = self.rope_parameters.clone() else { return Ok(()) };
        if let Some(theta) = rp.get("rope_theta").and_then(|v| v.as_f64()) {
            self.rope_theta = theta;
        }
        let ty = rp.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
        if ty != "default" && self.rope_scaling.is_none() {
            self.rope_scaling = Some(serde_json::from_value(rp)?);
        }
        Ok(())
    }

    /// Architecture name, e.g. `LlamaForCausalLM`.
    pub fn architecture(&self) -> &str {
        self.architectures.first().map(|s| s.as_str()).unwrap_or("")
    }

    pub fn is_qwen2(&self) -> bool {
        self.architecture() == "Qwen2ForCausalLM" || self.model_type.as_deref() == Some("qwen2")
    }

    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// q/k/v projections carry a bias (always for Qwen2; with `attention_bias` for Llama).
    pub fn qkv_bias(&self) -> bool {
        self.is_qwen2() || self.attention_bias
    }

    /// o projection carries a bias (Llama `attention_bias`; never for Qwen2).
    pub fn o_bias(&self) -> bool {
        !self.is_qwen2() && self.attention_bias
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
        if self.hidden_act != "silu" {
            bail!("unsupported hidden_act {:?} (only silu)", self.hidden_act);
        }
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
        if self.use_sliding_window == Some(true) {
            bail!("sliding-window attention is not supported");
        }
        if let Some(rs) = &self.rope_scaling {
            match rs.rope_type.as_str() {
                "default" => {}
                "llama3" => {
                    if rs.factor.is_none()
                        || rs.low_freq_factor.is_none()
                        || rs.high_freq_factor.is_none()
                        || rs.original_max_position_embeddings.is_none()
                    {
                        bail!("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor, original_max_position_embeddings");
                    }
                }
                other => bail!("unsupported rope_scaling type {other:?} (supported: llama3)"),
            }
        }
        Ok(())
    }

    /// RoPE inverse frequencies (length head_dim/2), with Llama-3 scaling applied when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let hd = self.head_dim();
        let mut inv: Vec<f64> = (0..hd / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / hd as f64))
            .collect();
        if let Some(rs) = &self.rope_scaling {
            if rs.rope_type == "llama3" {
                let factor = rs.factor.unwrap_or(1.0);
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
        }
        inv.into_iter().map(|f| f as f32).collect()
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
}
