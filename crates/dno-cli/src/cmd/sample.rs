//! `dno sample` (stage 1): the flags of `dno_sample::SampleOptions`; the stage is `dno_sample::run`.

use anyhow::Result;
use dno_data::Shard;
use dno_sample::SampleOptions;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Serialize, Clone)]
pub struct Args {
    /// Policy: a GGUF file or an HF directory (engine burn).
    #[arg(long, required_unless_present = "api_model")]
    pub model: Option<PathBuf>,
    /// Prompts (files or shard directories).
    #[arg(long, required = true, num_args = 1..)]
    pub prompts: Vec<PathBuf>,
    /// Output samples Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Samples per prompt.
    #[arg(short = 'k', long = "k", default_value_t = SampleOptions::default().k)]
    pub k: usize,
    #[arg(long, default_value_t = SampleOptions::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = SampleOptions::default().top_p)]
    pub top_p: f32,
    /// 0 = off. Engine openai: sent as the `top_k` extra field (vLLM, SGLang, llama.cpp server).
    #[arg(long, default_value_t = SampleOptions::default().top_k)]
    pub top_k: usize,
    /// 0 = off. Engine openai: sent as the `min_p` extra field (vLLM, SGLang, llama.cpp server).
    #[arg(long, default_value_t = SampleOptions::default().min_p)]
    pub min_p: f32,
    #[arg(long, default_value_t = SampleOptions::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = SampleOptions::default().seed)]
    pub seed: u64,
    /// System message for the chat template (a prompt's own `system` wins).
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template file (Jinja) replacing the model's own, e.g. for a base model whose GGUF
    /// has none (pipelines/chat_templates/gemma.jinja). --engine burn only.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Send the prompt text as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Add each prompt's `reference` as a candidate with source = reference.
    #[arg(long)]
    pub include_reference: bool,
    /// Label for the `policy` column (default: the model's file or directory name).
    #[arg(long)]
    pub policy: Option<String>,
    /// burn (local) or openai (any OpenAI-compatible server: vLLM, SGLang, llama.cpp, TGI).
    #[arg(long, default_value_t = SampleOptions::default().engine.to_string(), value_parser = ["burn", "openai"])]
    pub engine: String,
    /// cpu, cuda, cuda:N (`--features cuda`), wgpu or wgpu:N (`--features wgpu`) (engine burn).
    #[arg(long, default_value_t = SampleOptions::default().device)]
    pub device: String,
    /// Weight and compute precision: f32, bf16 or f16 [default: bf16 on CUDA, f32 elsewhere].
    #[arg(long)]
    pub dtype: Option<String>,
    /// Server base URL (engine openai), e.g. http://localhost:8000/v1; several servers of the
    /// same model comma-separated (A,B,C): requests go round-robin, failed ones are retried on
    /// another server.
    #[arg(long, default_value_t = SampleOptions::default().base_url)]
    pub base_url: String,
    /// Model name on the server (engine openai).
    #[arg(long)]
    pub api_model: Option<String>,
    /// Environment variable holding the API key (never logged or stored).
    #[arg(long, default_value_t = SampleOptions::default().api_key_env)]
    pub api_key_env: String,
    /// Concurrent requests (engine openai).
    #[arg(long, default_value_t = SampleOptions::default().concurrency)]
    pub concurrency: usize,
    /// Per-request timeout in seconds (engine openai).
    #[arg(long, default_value_t = SampleOptions::default().timeout)]
    pub timeout: f64,
    /// Retries per request (engine openai).
    #[arg(long, default_value_t = SampleOptions::default().max_retries)]
    pub max_retries: u32,
    /// Process only shard I of N (by a stable hash of prompt_id), e.g. 0/4.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Prompts per saved batch (the unit of resume). Default: enough prompts to fill --max-batch
    /// rows (max-batch / K, at least 1), so K = 1 runs decode as many rows together as K = 8 runs.
    #[arg(long)]
    pub batch_prompts: Option<usize>,
    /// Rows decoded together (engine burn).
    #[arg(long, default_value_t = SampleOptions::default().max_batch)]
    pub max_batch: usize,
    /// What to do with a prompt longer than the context window: error, truncate (keep its end) or skip.
    #[arg(long, default_value_t = SampleOptions::default().on_overflow.to_string(), value_parser = ["error", "truncate", "skip"])]
    pub on_overflow: String,
    /// Overwrite an existing output (and discard a partial run made with other settings).
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    let o = SampleOptions {
        model: a.model.clone(),
        prompts: a.prompts.clone(),
        out: a.out.clone(),
        k: a.k,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        min_p: a.min_p,
        max_new_tokens: a.max_new_tokens,
        stop: a.stop.clone(),
        seed: a.seed,
        system: a.system.clone(),
        raw: a.raw,
        chat_template: a.chat_template.clone(),
        dtype: a.dtype.clone(),
        include_reference: a.include_reference,
        policy: a.policy.clone(),
        engine: a.engine.parse()?,
        device: a.device.clone(),
        base_url: a.base_url.clone(),
        api_model: a.api_model.clone(),
        api_key_env: a.api_key_env.clone(),
        concurrency: a.concurrency,
        timeout: a.timeout,
        max_retries: a.max_retries,
        shard: a.shard.as_deref().map(Shard::parse).transpose()?,
        batch_prompts: a.batch_prompts,
        max_batch: a.max_batch,
        on_overflow: a.on_overflow.parse()?,
        force: a.force,
    };
    dno_sample::run(&o, &a, &mut super::Report::new(30)).map(|_| ())
}
