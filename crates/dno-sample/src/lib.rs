//! Stage 1 of DNO, `dno sample`: K on-policy samples per prompt, from the local burn model
//! (`dno-model`) or from any OpenAI-compatible server (`dno-oracle`'s client), sharded by prompt
//! and resumable: completed batches of prompts are saved as part files, and a rerun of the same
//! settings samples only the prompts still missing.

use anyhow::{anyhow, bail, Context, Result};
use dno_data::{
    is_repetitive, read_validated, reference_id, sample_id, stable_hash, DatasetWriter, PartStore, PromptOrder, PromptRow, Provenance, Reporter,
    SampleRow, Shard, ShardMeta, META_SHARD,
};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Where samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The local burn model (`--model`).
    Burn,
    /// Any OpenAI-compatible server: vLLM, SGLang, llama.cpp, TGI.
    OpenAi,
}

impl std::str::FromStr for EngineKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "burn" => Ok(EngineKind::Burn),
            "openai" => Ok(EngineKind::OpenAi),
            _ => bail!("--engine {s}: expected burn or openai"),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Burn => "burn",
            EngineKind::OpenAi => "openai",
        })
    }
}

/// What to do with a prompt longer than the context window (engine burn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    Error,
    /// Keep the prompt's end.
    Truncate,
    Skip,
}

impl std::str::FromStr for Overflow {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "error" => Ok(Overflow::Error),
            "truncate" => Ok(Overflow::Truncate),
            "skip" => Ok(Overflow::Skip),
            _ => bail!("--on-overflow {s}: expected error, truncate or skip"),
        }
    }
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overflow::Error => "error",
            Overflow::Truncate => "truncate",
            Overflow::Skip => "skip",
        })
    }
}

/// Everything a sampling run is made of. Serialised (less `force`) into the key that a resume
/// must match, so parts of runs with other settings are never mixed.
#[derive(Debug, Clone, Serialize)]
pub struct SampleOptions {
    /// Policy: a GGUF file or an HF directory (engine burn).
    pub model: Option<PathBuf>,
    /// Prompts (files or shard directories).
    pub prompts: Vec<PathBuf>,
    /// Output samples Parquet file.
    pub out: PathBuf,
    /// Samples per prompt.
    pub k: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f32,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub seed: u64,
    /// System message for the chat template (a prompt's own `system` wins).
    pub system: Option<String>,
    /// Send the prompt text as is, without the chat template.
    pub raw: bool,
    /// Chat template file (Jinja) replacing the model's own (engine burn only).
    pub chat_template: Option<PathBuf>,
    /// Weight and compute precision, f32, bf16 or f16 (None: `dno_model::Dtype::default_for` the
    /// device: bf16 on CUDA, f32 elsewhere).
    pub dtype: Option<String>,
    /// Add each prompt's `reference` as a candidate with source = reference.
    pub include_reference: bool,
    /// Label of the `policy` column (default: the model's file stem, or the API model name).
    pub policy: Option<String>,
    pub engine: EngineKind,
    /// cpu, cuda[:N], wgpu[:N] (engine burn).
    pub device: String,
    /// Engine openai: server base URL(s), comma-separated.
    pub base_url: String,
    /// Engine openai: model name on the server.
    pub api_model: Option<String>,
    /// Engine openai: environment variable holding the API key.
    pub api_key_env: String,
    /// Engine openai: requests in flight.
    pub concurrency: usize,
    /// Engine openai: seconds per request.
    pub timeout: f64,
    /// Engine openai: retries per request.
    pub max_retries: u32,
    /// Sample only this shard of the prompts.
    pub shard: Option<Shard>,
    /// Prompts per saved batch (the unit of resume); default max_batch / K, at least 1.
    pub batch_prompts: Option<usize>,
    /// Rows decoded together (engine burn).
    pub max_batch: usize,
    pub on_overflow: Overflow,
    /// Overwrite an existing output (and discard a partial run made with other settings).
    #[serde(skip)]
    pub force: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        let s = dno_model::SamplingParams::default();
        let c = dno_oracle::ClientConfig::default();
        SampleOptions {
            model: None,
            prompts: Vec::new(),
            out: PathBuf::new(),
            k: 5,
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            max_new_tokens: s.max_new_tokens,
            stop: s.stop,
            seed: dno_math::rng::DEFAULT_SEED,
            system: None,
            raw: false,
            chat_template: None,
            dtype: None,
            include_reference: false,
            policy: None,
            engine: EngineKind::Burn,
            device: "cpu".into(),
            base_url: c.base_url,
            api_model: None,
            api_key_env: c.api_key_env,
            concurrency: c.max_concurrency,
            timeout: c.timeout_secs,
            max_retries: c.max_retries,
            shard: None,
            batch_prompts: None,
            max_batch: s.max_batch,
            on_overflow: Overflow::Error,
            force: false,
        }
    }
}

impl SampleOptions {
    /// Prompts per saved batch: `batch_prompts`, else enough prompts to fill `max_batch` rows.
    pub fn prompts_per_batch(&self) -> usize {
        self.batch_prompts.unwrap_or(self.max_batch / self.k.max(1)).max(1)
    }

    fn params(&self) -> dno_model::SamplingParams {
        dno_model::SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            max_new_tokens: self.max_new_tokens,
            stop: self.stop.clone(),
            max_batch: self.max_batch,
        }
    }
}

/// What a run did (also stored as the output's `dno.sample_summary` metadata).
#[derive(Debug, Clone, Serialize)]
pub struct SampleSummary {
    pub prompts: usize,
    pub samples: usize,
    pub new_samples: usize,
    pub new_tokens: usize,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    /// Share of the policy samples that hit `max_new_tokens`.
    pub length_limited_share: f64,
    pub engine: EngineKind,
}

/// The prompt side of a chat: the system message, the earlier turns (`history`) and the final user
/// turn, rendered by the model's chat template with the assistant's generation prompt.
pub fn render_prompt(chat: &dno_model::ChatTemplate, system: Option<&str>, history: Option<&str>, prompt: &str) -> Result<String> {
    let turns = dno_data::conversation(system, history, prompt)?;
    let messages: Vec<(&str, &str)> = turns.iter().map(|t| (t.role.as_str(), t.content.as_str())).collect();
    chat.render_messages(&messages, true)
}

fn sample_seed(seed: u64, prompt_id: &str, index: usize) -> u64 {
    stable_hash(&["sample-seed", &seed.to_string(), prompt_id, &index.to_string()])
}

struct Batch {
    rows: Vec<SampleRow>,
    tokens: usize,
    length_limited: usize,
}

/// Run the sampling stage; `config` is recorded as the output's provenance configuration.
pub fn run(o: &SampleOptions, config: &impl Serialize, reporter: &mut dyn Reporter) -> Result<SampleSummary> {
    let _lock = dno_data::lock_output(&o.out)?;
    dno_data::check_output(&o.out, o.force)?;
    if o.k == 0 && !o.include_reference {
        bail!("-k 0 without --include-reference would produce no samples");
    }
    let (reader, mut prompts) = read_validated::<PromptRow>(&o.prompts)?;
    if prompts.is_empty() {
        bail!("{}: no prompts to sample (the file is empty)", o.prompts[0].display());
    }
    // A shard remembers each prompt's position in the unsharded order, so shards merge back into it.
    let mut order = PromptOrder::new(reader.shards());
    let positions: HashMap<String, u64> = prompts.iter().map(|p| (p.prompt_id.clone(), order.note(&p.prompt_id))).collect();
    if let Some(shard) = o.shard {
        prompts.retain(|p| shard.contains(&p.prompt_id));
        if prompts.is_empty() {
            log::warn!("shard {shard}: none of the prompts falls in this shard; writing an empty output");
        }
    }
    let policy = match (&o.policy, o.engine) {
        (Some(p), _) => p.clone(),
        (None, EngineKind::OpenAi) => o.api_model.clone().ok_or_else(|| anyhow!("--engine openai needs --api-model"))?,
        (None, EngineKind::Burn) => {
            let m = o.model.as_ref().ok_or_else(|| anyhow!("--model is required with --engine burn"))?;
            m.file_stem().and_then(|s| s.to_str()).unwrap_or("policy").to_string()
        }
    };

    let mut prov = Provenance::new("sample", config)?;
    prov.add_inputs(reader.files())?;
    if let Some(m) = &o.model {
        prov.add_inputs(std::slice::from_ref(m))?;
    }
    // Everything that determines the output, so a resume never mixes runs.
    let run_key = format!(
        "{}|{}",
        serde_json::to_string(o)?,
        prov.inputs.iter().map(|i| i.fingerprint.as_str()).collect::<Vec<_>>().join(",")
    );
    let mut parts = PartStore::open(&o.out, &format!("{:016x}", stable_hash(&[&run_key])), o.force)?;
    let done_rows: Vec<SampleRow> = parts.completed()?;
    let done: HashSet<String> = done_rows.iter().map(|r| r.prompt_id.clone()).collect();
    let todo: Vec<&PromptRow> = prompts.iter().filter(|p| !done.contains(&p.prompt_id)).collect();
    if !done.is_empty() {
        reporter.note(&format!("resuming: {} of {} prompts already sampled ({})", done.len(), prompts.len(), parts.dir().display()));
    }

    let started = Instant::now();
    let (mut tokens, mut limited, mut n_samples, mut n_prompts) = (0usize, 0usize, 0usize, 0usize);
    let mut engine = Engine::new(o)?;
    reporter.start("sampling", todo.len() as u64);
    // Finished prompts are saved in groups (the unit of resume) while the others keep sampling.
    engine.sample(o, &policy, &todo, &mut |done: &[&PromptRow], mut batch: Batch| {
        if o.include_reference {
            for p in done {
                if let Some(r) = &p.reference {
                    batch.rows.push(reference_row(p, r, &policy, o.seed));
                }
            }
        }
        tokens += batch.tokens;
        limited += batch.length_limited;
        n_samples += batch.rows.len();
        n_prompts += done.len();
        parts.save(batch.rows, &prov)?;
        let tps = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        reporter.progress(n_prompts as u64, &format!("{n_samples} samples, {tps:.1} tok/s"));
        Ok(())
    })?;
    reporter.finish();

    // Assemble the final file in prompt order (policy samples by index, then the reference).
    let mut all: Vec<SampleRow> = parts.completed()?;
    let order: HashMap<&str, usize> = prompts.iter().enumerate().map(|(i, p)| (p.prompt_id.as_str(), i)).collect();
    all.sort_by_key(|r| (order.get(r.prompt_id.as_str()).copied().unwrap_or(usize::MAX), r.sample_index < 0, r.sample_index));
    let mut w = DatasetWriter::<SampleRow>::create(&o.out, &prov, o.force)?;
    let n_all = all.len();
    let policy_rows = all.iter().filter(|r| !r.is_reference()).count();
    let limited_all = all.iter().filter(|r| r.finish_reason == "length").count();
    let all_ids: HashSet<String> = all.iter().map(|r| r.prompt_id.clone()).collect();
    w.write_all(all)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = SampleSummary {
        prompts: prompts.len(),
        samples: n_all,
        new_samples: n_samples,
        new_tokens: tokens,
        wall_s: wall,
        tokens_per_s: tokens as f64 / wall.max(1e-9),
        length_limited_share: limited_all as f64 / policy_rows.max(1) as f64,
        engine: o.engine,
    };
    w.set_metadata("dno.sample_summary", serde_json::to_string(&summary)?);
    if let Some(shard) = o.shard {
        let order = all_ids.iter().map(|id| (id.clone(), positions[id])).collect();
        w.set_metadata(META_SHARD, ShardMeta::new(shard, order).to_json());
    }
    w.finish()?;
    parts.cleanup()?;
    reporter.note(&format!(
        "samples: {n_all} for {} prompts -> {} | {tokens} new tokens in {wall:.1}s ({:.1} tok/s) | {:.1}% hit --max-new-tokens",
        prompts.len(),
        o.out.display(),
        summary.tokens_per_s,
        100.0 * limited as f64 / (n_samples.max(1)) as f64
    ));
    Ok(summary)
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

/// One generated response, as either engine reports it.
struct Generated {
    text: String,
    tokens: usize,
    finish: &'static str,
    logprob: Option<f64>,
}

fn policy_row(p: &PromptRow, policy: &str, o: &SampleOptions, i: usize, g: Generated) -> SampleRow {
    SampleRow {
        prompt_id: p.prompt_id.clone(),
        sample_id: sample_id(&p.prompt_id, policy, i as i32, o.seed),
        prompt: p.prompt.clone(),
        system: p.system.clone().or_else(|| o.system.clone()),
        history: p.history.clone(),
        answer: p.answer.clone(),
        constraints: p.constraints.clone(),
        repetitive: is_repetitive(&g.text),
        response: g.text,
        source: "policy".into(),
        policy: policy.to_string(),
        sample_index: i as i32,
        seed: o.seed as i64,
        response_tokens: g.tokens as i32,
        finish_reason: g.finish.into(),
        logprob: g.logprob,
    }
}

impl Batch {
    fn new() -> Self {
        Batch { rows: Vec::new(), tokens: 0, length_limited: 0 }
    }
    fn push(&mut self, p: &PromptRow, policy: &str, o: &SampleOptions, i: usize, g: Generated) {
        self.tokens += g.tokens;
        self.length_limited += (g.finish == "length") as usize;
        self.rows.push(policy_row(p, policy, o, i, g));
    }
}

fn no_raw_conversations(o: &SampleOptions, p: &PromptRow) -> Result<()> {
    if o.raw && p.history.is_some() {
        bail!("prompt '{}' is a conversation (it has a history); --raw sends single prompts without a chat template", p.prompt_id);
    }
    Ok(())
}

/// A sampling engine: the local model, or a client of an OpenAI-compatible server.
enum Engine {
    Burn(Box<dno_model::LoadedModel>),
    OpenAi(Arc<dno_oracle::Client>, tokio::runtime::Runtime),
}

impl Engine {
    fn new(o: &SampleOptions) -> Result<Self> {
        match o.engine {
            EngineKind::OpenAi => {
                let cfg = dno_oracle::ClientConfig {
                    base_url: o.base_url.clone(),
                    model: o.api_model.clone().ok_or_else(|| anyhow!("--engine openai needs --api-model"))?,
                    api_key_env: o.api_key_env.clone(),
                    timeout_secs: o.timeout,
                    max_concurrency: o.concurrency,
                    max_retries: o.max_retries,
                    ..Default::default()
                };
                let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
                Ok(Engine::OpenAi(Arc::new(dno_oracle::Client::new(cfg)?), rt))
            }
            EngineKind::Burn => {
                let path = o.model.as_ref().ok_or_else(|| anyhow!("--model is required with --engine burn"))?;
                let spec = o.device.parse::<dno_model::DeviceSpec>()?;
                let dtype = dno_model::Dtype::resolve(o.dtype.as_deref(), &spec).context("--dtype")?;
                let mut lm = dno_model::load_model_as(path, &spec.device()?, dtype).with_context(|| format!("loading {}", path.display()))?;
                lm.model = lm.model.for_cpu_decoding();
                lm.use_chat_template_file(o.chat_template.as_deref())?;
                Ok(Engine::Burn(Box::new(lm)))
            }
        }
    }

    /// Samples every prompt of `todo`, handing finished prompts to `save` in groups of
    /// [`SampleOptions::prompts_per_batch`].
    fn sample(&mut self, o: &SampleOptions, policy: &str, todo: &[&PromptRow], save: &mut Save) -> Result<()> {
        match self {
            Engine::Burn(lm) => sample_burn(lm, o, policy, todo, save),
            Engine::OpenAi(client, rt) => {
                for chunk in todo.chunks(o.prompts_per_batch()) {
                    save(chunk, rt.block_on(sample_openai(client.clone(), o, policy, chunk))?)?;
                }
                Ok(())
            }
        }
    }
}

/// Receives finished prompts and their samples.
type Save<'a> = dyn FnMut(&[&PromptRow], Batch) -> Result<()> + 'a;

/// The local engine: all prompts go to one continuous-batching generation (dno_model::generate_each).
fn sample_burn(lm: &dno_model::LoadedModel, o: &SampleOptions, policy: &str, prompts: &[&PromptRow], save: &mut Save) -> Result<()> {
    let ctx = lm.config.max_position_embeddings;
    let mut reqs = Vec::new();
    let mut kept: Vec<&PromptRow> = Vec::new();
    for p in prompts {
        no_raw_conversations(o, p)?;
        let mut ids = if o.raw {
            lm.tokenizer.encode(&p.prompt, true)?
        } else {
            let system = p.system.as_deref().or(o.system.as_deref());
            let text = render_prompt(&lm.chat, system, p.history.as_deref(), &p.prompt).with_context(|| format!("prompt '{}': chat template", p.prompt_id))?;
            lm.tokenizer.encode(&text, false)?
        };
        if ids.len() + o.max_new_tokens > ctx {
            match o.on_overflow {
                Overflow::Skip => {
                    log::warn!("prompt '{}': {} tokens + {} new exceed the context window ({ctx}); skipped", p.prompt_id, ids.len(), o.max_new_tokens);
                    continue;
                }
                Overflow::Truncate if o.max_new_tokens < ctx => {
                    ids = ids[ids.len() - (ctx - o.max_new_tokens)..].to_vec();
                }
                _ => bail!(
                    "prompt '{}': {} prompt tokens + --max-new-tokens {} exceed the model's context window ({ctx}); use --on-overflow truncate|skip",
                    p.prompt_id,
                    ids.len(),
                    o.max_new_tokens
                ),
            }
        }
        reqs.push(dno_model::GenRequest { prompt: ids, seeds: (0..o.k).map(|i| sample_seed(o.seed, &p.prompt_id, i)).collect() });
        kept.push(p);
    }
    let per_save = o.prompts_per_batch();
    if o.k == 0 {
        for chunk in kept.chunks(per_save) {
            save(chunk, Batch::new())?;
        }
        return Ok(());
    }
    let (mut done, mut batch) = (Vec::new(), Batch::new());
    dno_model::generate_each(lm, &reqs, &o.params(), |r, gens| {
        let p = kept[r];
        for (i, g) in gens.into_iter().enumerate() {
            let finish = match g.finish_reason {
                dno_model::FinishReason::Stop => "stop",
                dno_model::FinishReason::Length => "length",
                dno_model::FinishReason::StopString => "stop_string",
            };
            let logprob = Some(g.token_logprobs.iter().map(|&x| x as f64).sum());
            batch.push(p, policy, o, i, Generated { tokens: g.tokens.len(), text: g.text, finish, logprob });
        }
        done.push(p);
        if done.len() >= per_save {
            save(&std::mem::take(&mut done), std::mem::replace(&mut batch, Batch::new()))?;
        }
        Ok(())
    })?;
    if !done.is_empty() {
        save(&done, batch)?;
    }
    Ok(())
}

async fn sample_openai(client: Arc<dno_oracle::Client>, o: &SampleOptions, policy: &str, prompts: &[&PromptRow]) -> Result<Batch> {
    use dno_oracle::client::{Message, Sampling};
    let mut tasks = Vec::new();
    for p in prompts {
        no_raw_conversations(o, p)?;
        let messages: Vec<Message> = dno_data::conversation(p.system.as_deref().or(o.system.as_deref()), p.history.as_deref(), &p.prompt)
            .with_context(|| format!("prompt '{}'", p.prompt_id))?
            .into_iter()
            .map(|t| Message { role: t.role, content: t.content })
            .collect();
        for i in 0..o.k {
            let client = client.clone();
            let sampling = Sampling {
                n: Some(1),
                temperature: Some(o.temperature as f64),
                top_p: Some(o.top_p as f64),
                // Off (0) is not sent; set, they go as the `top_k` / `min_p` extra fields of
                // vLLM, SGLang and llama.cpp's server.
                top_k: (o.top_k > 0).then_some(o.top_k as u32),
                min_p: (o.min_p > 0.0).then_some(o.min_p as f64),
                max_tokens: Some(o.max_new_tokens as u32),
                seed: Some(sample_seed(o.seed, &p.prompt_id, i)),
                logprobs: true,
                stop: o.stop.clone(),
                ..Default::default()
            };
            let (raw, prompt, messages) = (o.raw, p.prompt.clone(), messages.clone());
            tasks.push(tokio::spawn(async move {
                if raw {
                    client.complete(&prompt, &sampling).await
                } else {
                    client.chat(&messages, &sampling).await
                }
            }));
        }
    }
    let mut batch = Batch::new();
    let mut it = tasks.into_iter();
    for p in prompts {
        for i in 0..o.k {
            let done = it.next().expect("one task per sample").await.map_err(|e| anyhow!("request task failed: {e}"))?;
            let c = done.with_context(|| format!("prompt '{}' sample {i}", p.prompt_id))?;
            let choice = c.choices.into_iter().next().ok_or_else(|| anyhow!("prompt '{}': server returned no choices", p.prompt_id))?;
            let finish = match choice.finish_reason.as_deref() {
                Some("length") => "length",
                _ => "stop",
            };
            let tokens = if c.completion_tokens > 0 { c.completion_tokens as usize } else { choice.logprobs.as_ref().map_or(0, |l| l.len()) };
            let logprob = choice.logprobs.as_ref().filter(|l| !l.is_empty()).map(|l| l.iter().map(|t| t.logprob).sum::<f64>());
            batch.push(p, policy, o, i, Generated { text: choice.text, tokens, finish, logprob });
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_prompt_and_index() {
        assert_eq!(sample_seed(1, "p", 0), sample_seed(1, "p", 0));
        assert_ne!(sample_seed(1, "p", 0), sample_seed(1, "p", 1));
        assert_ne!(sample_seed(1, "p", 0), sample_seed(1, "q", 0));
        assert_ne!(sample_seed(1, "p", 0), sample_seed(2, "p", 0));
    }

    #[test]
    fn prompts_per_batch_fills_max_batch() {
        let o = SampleOptions { k: 8, max_batch: 64, ..SampleOptions::default() };
        assert_eq!(o.prompts_per_batch(), 8);
        assert_eq!(SampleOptions { k: 1, ..o.clone() }.prompts_per_batch(), 64);
        assert_eq!(SampleOptions { k: 100, ..o.clone() }.prompts_per_batch(), 1);
        assert_eq!(SampleOptions { batch_prompts: Some(3), ..o }.prompts_per_batch(), 3);
    }

    #[test]
    fn force_is_not_part_of_the_run_key() {
        let a = SampleOptions::default();
        let b = SampleOptions { force: true, ..a.clone() };
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        let c = SampleOptions { k: 6, ..a.clone() };
        assert_ne!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&c).unwrap());
    }

    #[test]
    fn engine_and_overflow_names_round_trip() {
        for e in ["burn", "openai"] {
            assert_eq!(e.parse::<EngineKind>().unwrap().to_string(), e);
        }
        for v in ["error", "truncate", "skip"] {
            assert_eq!(v.parse::<Overflow>().unwrap().to_string(), v);
        }
        assert!("tgi".parse::<EngineKind>().is_err());
    }
}
