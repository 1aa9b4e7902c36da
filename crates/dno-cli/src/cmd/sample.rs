//! `dno sample` (stage 1): K on-policy samples per prompt from burn or an OpenAI-compatible
//! server, sharded by prompt and resumable (completed batches are saved as part files).

use anyhow::{anyhow, bail, Context, Result};
use dno_data::{read_validated, stable_hash, DatasetWriter, PartStore, PromptOrder, PromptRow, Provenance, SampleRow, Shard, ShardMeta, META_SHARD};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

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
    #[arg(short = 'k', long = "k", default_value_t = 5)]
    pub k: usize,
    #[arg(long, default_value_t = dno_model::SamplingParams::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = dno_model::SamplingParams::default().top_p)]
    pub top_p: f32,
    /// 0 = off. Engine openai: sent as the `top_k` extra field (vLLM, SGLang, llama.cpp server).
    #[arg(long, default_value_t = dno_model::SamplingParams::default().top_k)]
    pub top_k: usize,
    /// 0 = off. Engine openai: sent as the `min_p` extra field (vLLM, SGLang, llama.cpp server).
    #[arg(long, default_value_t = dno_model::SamplingParams::default().min_p)]
    pub min_p: f32,
    #[arg(long, default_value_t = dno_model::SamplingParams::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = dno_math::rng::DEFAULT_SEED)]
    pub seed: u64,
    /// System message for the chat template (a prompt's own `system` wins).
    #[arg(long)]
    pub system: Option<String>,
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
    #[arg(long, default_value = "burn", value_parser = ["burn", "openai"])]
    pub engine: String,
    /// cpu, cuda, cuda:N (`--features cuda`), wgpu or wgpu:N (`--features wgpu`) (engine burn).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight and compute precision: f32, bf16 or f16 [default: bf16 on CUDA, f32 elsewhere].
    #[arg(long)]
    pub dtype: Option<String>,
    /// Server base URL (engine openai), e.g. http://localhost:8000/v1; several servers of the
    /// same model comma-separated (A,B,C): requests go round-robin, failed ones are retried on
    /// another server.
    #[arg(long, default_value_t = dno_oracle::ClientConfig::default().base_url)]
    pub base_url: String,
    /// Model name on the server (engine openai).
    #[arg(long)]
    pub api_model: Option<String>,
    /// Environment variable holding the API key (never logged or stored).
    #[arg(long, default_value_t = dno_oracle::ClientConfig::default().api_key_env)]
    pub api_key_env: String,
    /// Concurrent requests (engine openai).
    #[arg(long, default_value_t = dno_oracle::ClientConfig::default().max_concurrency)]
    pub concurrency: usize,
    /// Per-request timeout in seconds (engine openai).
    #[arg(long, default_value_t = dno_oracle::ClientConfig::default().timeout_secs)]
    pub timeout: f64,
    /// Retries per request (engine openai).
    #[arg(long, default_value_t = dno_oracle::ClientConfig::default().max_retries)]
    pub max_retries: u32,
    /// Process only shard I of N (by a stable hash of prompt_id), e.g. 0/4.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Prompts per saved batch (the unit of resume). Default: enough prompts to fill --max-batch
    /// rows (max-batch / K, at least 1), so K = 1 runs decode as many rows together as K = 8 runs.
    #[arg(long)]
    pub batch_prompts: Option<usize>,
    /// Rows decoded together (engine burn).
    #[arg(long, default_value_t = dno_model::SamplingParams::default().max_batch)]
    pub max_batch: usize,
    /// What to do with a prompt longer than the context window: error, truncate (keep its end) or skip.
    #[arg(long, default_value = "error", value_parser = ["error", "truncate", "skip"])]
    pub on_overflow: String,
    /// Overwrite an existing output (and discard a partial run made with other settings).
    #[arg(long)]
    pub force: bool,
}

pub use dno_data::{is_repetitive, reference_id, sample_id};

fn sample_seed(seed: u64, prompt_id: &str, index: usize) -> u64 {
    stable_hash(&["sample-seed", &seed.to_string(), prompt_id, &index.to_string()])
}

struct Batch {
    rows: Vec<SampleRow>,
    tokens: usize,
    length_limited: usize,
}

pub fn run(a: Args) -> Result<()> {
    let _lock = dno_data::lock_output(&a.out)?;
    dno_data::check_output(&a.out, a.force)?;
    if a.k == 0 && !a.include_reference {
        bail!("-k 0 without --include-reference would produce no samples");
    }
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let (reader, mut prompts) = read_validated::<PromptRow>(&a.prompts)?;
    if prompts.is_empty() {
        bail!("{}: no prompts to sample (the file is empty)", a.prompts[0].display());
    }
    // A shard remembers each prompt's position in the unsharded order, so shards merge back into it.
    let mut order = PromptOrder::new(reader.shards());
    let positions: HashMap<String, u64> = prompts.iter().map(|p| (p.prompt_id.clone(), order.note(&p.prompt_id))).collect();
    if let Some(shard) = shard {
        prompts.retain(|p| shard.contains(&p.prompt_id));
        if prompts.is_empty() {
            log::warn!("shard {shard}: none of the prompts falls in this shard; writing an empty output");
        }
    }
    let policy = match (&a.policy, &a.engine[..]) {
        (Some(p), _) => p.clone(),
        (None, "openai") => a.api_model.clone().ok_or_else(|| anyhow!("--engine openai needs --api-model"))?,
        (None, _) => {
            let m = a.model.as_ref().ok_or_else(|| anyhow!("--model is required with --engine burn"))?;
            m.file_stem().and_then(|s| s.to_str()).unwrap_or("policy").to_string()
        }
    };

    let mut prov = Provenance::new("sample", &a)?;
    prov.add_inputs(reader.files())?;
    if let Some(m) = &a.model {
        prov.add_inputs(std::slice::from_ref(m))?;
    }
    // Everything that determines the output, so a resume never mixes runs.
    let mut key_args = a.clone();
    key_args.force = false;
    let run_key = format!(
        "{}|{}",
        serde_json::to_string(&key_args)?,
        prov.inputs.iter().map(|i| i.fingerprint.as_str()).collect::<Vec<_>>().join(",")
    );
    let mut parts = PartStore::open(&a.out, &format!("{:016x}", stable_hash(&[&run_key])), a.force)?;
    let done_rows: Vec<SampleRow> = parts.completed()?;
    let done: HashSet<String> = done_rows.iter().map(|r| r.prompt_id.clone()).collect();
    let todo: Vec<&PromptRow> = prompts.iter().filter(|p| !done.contains(&p.prompt_id)).collect();
    if !done.is_empty() {
        eprintln!("resuming: {} of {} prompts already sampled ({})", done.len(), prompts.len(), parts.dir().display());
    }

    let pb = super::progress(todo.len() as u64, "sampling");
    let mut ticker = super::Ticker::new(30);
    let started = Instant::now();
    let (mut tokens, mut limited, mut n_samples) = (0usize, 0usize, 0usize);
    let mut engine = Engine::new(&a)?;
    let batch_prompts = a.batch_prompts.unwrap_or(a.max_batch / a.k.max(1)).max(1);
    for chunk in todo.chunks(batch_prompts) {
        let mut batch = engine.sample(&a, &policy, chunk)?;
        if a.include_reference {
            for p in chunk {
                if let Some(r) = &p.reference {
                    batch.rows.push(reference_row(p, r, &policy, a.seed));
                }
            }
        }
        tokens += batch.tokens;
        limited += batch.length_limited;
        n_samples += batch.rows.len();
        parts.save(batch.rows, &prov)?;
        pb.inc(chunk.len() as u64);
        let tps = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        pb.set_message(format!("{n_samples} samples, {tps:.1} tok/s"));
        if pb.is_hidden() && log::max_level() >= log::LevelFilter::Warn && ticker.due() {
            eprintln!("sample: {} / {} prompts, {n_samples} samples, {tps:.1} tok/s", pb.position(), todo.len());
        }
    }
    pb.finish_and_clear();

    // Assemble the final file in prompt order (policy samples by index, then the reference).
    let mut all: Vec<SampleRow> = parts.completed()?;
    let order: HashMap<&str, usize> = prompts.iter().enumerate().map(|(i, p)| (p.prompt_id.as_str(), i)).collect();
    all.sort_by_key(|r| (order.get(r.prompt_id.as_str()).copied().unwrap_or(usize::MAX), r.sample_index < 0, r.sample_index));
    let mut w = DatasetWriter::<SampleRow>::create(&a.out, &prov, a.force)?;
    let n_all = all.len();
    let policy_rows = all.iter().filter(|r| !r.is_reference()).count();
    let limited_all = all.iter().filter(|r| r.finish_reason == "length").count();
    let all_ids: HashSet<String> = all.iter().map(|r| r.prompt_id.clone()).collect();
    w.write_all(all)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "prompts": prompts.len(), "samples": n_all, "new_samples": n_samples, "new_tokens": tokens,
        "wall_s": wall, "tokens_per_s": tokens as f64 / wall.max(1e-9),
        "length_limited_share": limited_all as f64 / policy_rows.max(1) as f64, "engine": a.engine,
    });
    w.set_metadata("dno.sample_summary", summary.to_string());
    if let Some(shard) = shard {
        let order = all_ids.iter().map(|id| (id.clone(), positions[id])).collect();
        w.set_metadata(META_SHARD, ShardMeta::new(shard, order).to_json());
    }
    w.finish()?;
    parts.cleanup()?;
    eprintln!(
        "samples: {n_all} for {} prompts -> {} | {tokens} new tokens in {wall:.1}s ({:.1} tok/s) | {:.1}% hit --max-new-tokens",
        prompts.len(),
        a.out.display(),
        tokens as f64 / wall.max(1e-9),
        100.0 * limited as f64 / (n_samples.max(1)) as f64
    );
    Ok(())
}

fn reference_row(p: &PromptRow, text: &str, policy: &str, seed: u64) -> SampleRow {
    SampleRow {
        prompt_id: p.prompt_id.clone(),
        sample_id: reference_id(&p.prompt_id),
        prompt: p.prompt.clone(),
        system: p.system.clone(),
        history: p.history.clone(),
        answer: p.answer.clone(),
        constraints: p.constraints.clone(),
        response: text.to_string(),
        source: "reference".into(),
        policy: format!("reference (with {policy})"),
        sample_index: -1,
        seed: seed as i64,
        response_tokens: 0,
        finish_reason: "reference".into(),
        logprob: None,
        repetitive: is_repetitive(text),
    }
}

fn policy_row(p: &PromptRow, policy: &str, a: &Args, i: usize, text: String, ntok: usize, finish: &str, logprob: Option<f64>) -> SampleRow {
    SampleRow {
        prompt_id: p.prompt_id.clone(),
        sample_id: sample_id(&p.prompt_id, policy, i as i32, a.seed),
        prompt: p.prompt.clone(),
        system: p.system.clone().or_else(|| a.system.clone()),
        history: p.history.clone(),
        answer: p.answer.clone(),
        constraints: p.constraints.clone(),
        repetitive: is_repetitive(&text),
        response: text,
        source: "policy".into(),
        policy: policy.to_string(),
        sample_index: i as i32,
        seed: a.seed as i64,
        response_tokens: ntok as i32,
        finish_reason: finish.into(),
        logprob,
    }
}

enum Engine {
    Burn(Box<dno_model::LoadedModel>),
    OpenAi(std::sync::Arc<dno_oracle::client::Client>, tokio::runtime::Runtime),
}

impl Engine {
    fn new(a: &Args) -> Result<Self> {
        if a.engine == "openai" {
            let cfg = dno_oracle::client::ClientConfig {
                base_url: a.base_url.clone(),
                model: a.api_model.clone().ok_or_else(|| anyhow!("--engine openai needs --api-model"))?,
                api_key_env: a.api_key_env.clone(),
                timeout_secs: a.timeout,
                max_concurrency: a.concurrency,
                max_retries: a.max_retries,
                ..Default::default()
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            Ok(Engine::OpenAi(std::sync::Arc::new(dno_oracle::client::Client::new(cfg)?), rt))
        } else {
            let path = a.model.as_ref().ok_or_else(|| anyhow!("--model is required with --engine burn"))?;
            let spec = a.device.parse::<dno_model::DeviceSpec>()?;
            let dtype = dno_model::Dtype::resolve(a.dtype.as_deref(), &spec).context("--dtype")?;
            let lm = dno_model::load_model_as(path, &spec.device()?, dtype).with_context(|| format!("loading {}", path.display()))?;
            Ok(Engine::Burn(Box::new(lm)))
        }
    }

    fn sample(&mut self, a: &Args, policy: &str, prompts: &[&PromptRow]) -> Result<Batch> {
        match self {
            Engine::Burn(lm) => sample_burn(lm, a, policy, prompts),
            Engine::OpenAi(client, rt) => rt.block_on(sample_openai(client.clone(), a, policy, prompts)),
        }
    }
}

fn sample_burn(lm: &dno_model::LoadedModel, a: &Args, policy: &str, prompts: &[&PromptRow]) -> Result<Batch> {
    let ctx = lm.config.max_position_embeddings;
    let mut reqs = Vec::new();
    let mut kept: Vec<&PromptRow> = Vec::new();
    for p in prompts {
        let mut ids = if a.raw {
            if p.history.is_some() {
                bail!("prompt '{}' is a conversation (it has a history); --raw sends single prompts without a chat template", p.prompt_id);
            }
            lm.tokenizer.encode(&p.prompt, true)?
        } else {
            let system = p.system.as_deref().or(a.system.as_deref());
            let text = super::render_prompt(&lm.chat, system, p.history.as_deref(), &p.prompt)
                .with_context(|| format!("prompt '{}': chat template", p.prompt_id))?;
            lm.tokenizer.encode(&text, false)?
        };
        if ids.len() + a.max_new_tokens > ctx {
            match a.on_overflow.as_str() {
                "skip" => {
                    log::warn!("prompt '{}': {} tokens + {} new exceed the context window ({ctx}); skipped", p.prompt_id, ids.len(), a.max_new_tokens);
                    continue;
                }
                "truncate" if a.max_new_tokens < ctx => {
                    ids = ids[ids.len() - (ctx - a.max_new_tokens)..].to_vec();
                }
                _ => bail!(
                    "prompt '{}': {} prompt tokens + --max-new-tokens {} exceed the model's context window ({ctx}); use --on-overflow truncate|skip",
                    p.prompt_id,
                    ids.len(),
                    a.max_new_tokens
                ),
            }
        }
        reqs.push(dno_model::GenRequest { prompt: ids, seeds: (0..a.k).map(|i| sample_seed(a.seed, &p.prompt_id, i)).collect() });
        kept.push(p);
    }
    let params = dno_model::SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        min_p: a.min_p,
        max_new_tokens: a.max_new_tokens,
        stop: a.stop.clone(),
        max_batch: a.max_batch,
    };
    let gens = if reqs.is_empty() || a.k == 0 { vec![vec![]; reqs.len()] } else { dno_model::generate(lm, &reqs, &params, |_| {})? };
    let mut batch = Batch { rows: Vec::new(), tokens: 0, length_limited: 0 };
    for (p, gs) in kept.iter().zip(gens) {
        for (i, g) in gs.into_iter().enumerate() {
            let finish = match g.finish_reason {
                dno_model::FinishReason::Stop => "stop",
                dno_model::FinishReason::Length => "length",
                dno_model::FinishReason::StopString => "stop_string",
            };
            batch.tokens += g.tokens.len();
            batch.length_limited += (finish == "length") as usize;
            let lp: f64 = g.token_logprobs.iter().map(|&x| x as f64).sum();
            batch.rows.push(policy_row(p, policy, a, i, g.text, g.tokens.len(), finish, Some(lp)));
        }
    }
    Ok(batch)
}

async fn sample_openai(client: std::sync::Arc<dno_oracle::client::Client>, a: &Args, policy: &str, prompts: &[&PromptRow]) -> Result<Batch> {
    let mut tasks = Vec::new();
    for p in prompts {
        for i in 0..a.k {
            let client = client.clone();
            if a.raw && p.history.is_some() {
                bail!("prompt '{}' is a conversation (it has a history); --raw sends single prompts without a chat template", p.prompt_id);
            }
            let messages: Vec<dno_oracle::client::Message> =
                dno_data::conversation(p.system.as_deref().or(a.system.as_deref()), p.history.as_deref(), &p.prompt)
                    .with_context(|| format!("prompt '{}'", p.prompt_id))?
                    .into_iter()
                    .map(|t| dno_oracle::client::Message { role: t.role, content: t.content })
                    .collect();
            let sampling = dno_oracle::client::Sampling {
                n: Some(1),
                temperature: Some(a.temperature as f64),
                top_p: Some(a.top_p as f64),
                // Off (0) is not sent; set, they go as the `top_k` / `min_p` extra fields of
                // vLLM, SGLang and llama.cpp's server.
                top_k: (a.top_k > 0).then_some(a.top_k as u32),
                min_p: (a.min_p > 0.0).then_some(a.min_p as f64),
                max_tokens: Some(a.max_new_tokens as u32),
                seed: Some(sample_seed(a.seed, &p.prompt_id, i)),
                logprobs: true,
                stop: a.stop.clone(),
                ..Default::default()
            };
            let (raw, prompt) = (a.raw, p.prompt.clone());
            tasks.push(tokio::spawn(async move {
                if raw {
                    client.complete(&prompt, &sampling).await
                } else {
                    client.chat(&messages, &sampling).await
                }
            }));
        }
    }
    let mut batch = Batch { rows: Vec::new(), tokens: 0, length_limited: 0 };
    let mut it = tasks.into_iter();
    for p in prompts {
        for i in 0..a.k {
            let done = it.next().expect("one task per sample").await.map_err(|e| anyhow!("request task failed: {e}"))?;
            let c = done.with_context(|| format!("prompt '{}' sample {i}", p.prompt_id))?;
            let choice = c.choices.into_iter().next().ok_or_else(|| anyhow!("prompt '{}': server returned no choices", p.prompt_id))?;
            let finish = match choice.finish_reason.as_deref() {
                Some("length") => "length",
                _ => "stop",
            };
            let ntok = if c.completion_tokens > 0 { c.completion_tokens as usize } else { choice.logprobs.as_ref().map_or(0, |l| l.len()) };
            let lp = choice.logprobs.as_ref().filter(|l| !l.is_empty()).map(|l| l.iter().map(|t| t.logprob).sum::<f64>());
            batch.tokens += ntok;
            batch.length_limited += (finish == "length") as usize;
            batch.rows.push(policy_row(p, policy, a, i, choice.text, ntok, finish, lp));
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn repetition_rule() {
        assert!(!is_repetitive("The answer is 42 because six times seven is forty-two."));
        assert!(is_repetitive(&"the cat sat on the mat ".repeat(10)));
        assert!(is_repetitive(&"0".repeat(200)));
        assert!(!is_repetitive(&(0..100).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")));
    }
    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(sample_id("p", "m", 0, 1), sample_id("p", "m", 0, 1));
        assert_ne!(sample_id("p", "m", 0, 1), sample_id("p", "m", 1, 1));
        assert_ne!(sample_id("p", "m", 0, 1), sample_id("p", "m", 0, 2));
    }
}
