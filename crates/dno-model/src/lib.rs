//! `dno-model`: a burn (0.22) runtime for Llama-family decoders (Llama, Mistral, Qwen2, Qwen3,
//! Gemma 3 text, Phi-3).
//!
//! - [`load_model`] reads an HF directory or a `.gguf` file into a [`LoadedModel`].
//! - [`model::Llama`] is the network: full causal forward (trainable) and a KV-cache path.
//! - [`generate::generate`] samples K completions per prompt; [`score::score`] sums response
//!   log-probabilities; [`export::save_hf`] writes an HF directory.
//! - [`lora`] attaches and merges LoRA adapters; [`device::DeviceSpec`] parses "cpu" / "cuda:N".

pub mod attend;
pub mod bf16_linear;
pub mod bf16mm;
pub mod chat;
pub mod config;
pub mod device;
pub mod dtype;
pub mod export;
pub mod fused;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod lora;
pub mod model;
pub mod recompute;
pub mod score;
pub mod silu_gate;
pub mod spm;
pub mod tokenizer;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use std::path::Path;

pub use chat::ChatTemplate;
pub use config::LlamaConfig;
pub use device::DeviceSpec;
pub use dtype::Dtype;
pub use export::{save_hf, save_hf_with, ExportOptions};
pub use generate::{generate, generate_each, FinishReason, GenRequest, Generation, SamplingParams};
pub use model::Llama;
pub use score::{score, score_tensor};
pub use tokenizer::Tok;

/// A model with everything needed to prompt it.
pub struct LoadedModel {
    pub model: Llama,
    pub config: LlamaConfig,
    pub tokenizer: Tok,
    pub chat: ChatTemplate,
}

impl LoadedModel {
    /// Replaces the chat template (Jinja source), e.g. for a base model whose GGUF has none;
    /// `save_hf` then writes this one.
    pub fn set_chat_template(&mut self, source: String) -> Result<()> {
        let bos = self.tokenizer.bos_token.clone().unwrap_or_default();
        let eos = self.tokenizer.eos_token.clone().unwrap_or_default();
        self.chat = ChatTemplate::new(Some(source), bos, eos)?;
        Ok(())
    }

    /// `--chat-template FILE`: replaces the model's chat template with the file's (None: keep it).
    pub fn use_chat_template_file(&mut self, path: Option<&std::path::Path>) -> Result<()> {
        let Some(path) = path else { return Ok(()) };
        let src = std::fs::read_to_string(path).with_context(|| format!("--chat-template: reading {}", path.display()))?;
        self.set_chat_template(src).with_context(|| format!("--chat-template {}", path.display()))
    }
}

/// Loads an HF model directory or a `.gguf` file onto `device`, in f32.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_model_as(path, device, Dtype::F32)
}

/// Loads an HF model directory or a `.gguf` file onto `device`, its weights stored and its
/// activations computed in `dtype` (`--dtype`; see [`Dtype::default_for`]).
pub fn load_model_as(path: &Path, device: &Device, dtype: Dtype) -> Result<LoadedModel> {
    if path.is_dir() {
        hf::load_hf_dir_as(path, device, dtype)
    } else if path.is_file() {
        gguf::load_gguf_as(path, device, dtype)
    } else {
        bail!("model path {} does not exist", path.display())
    }
}
