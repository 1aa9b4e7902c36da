//! `dno annotate`: samples -> preferences (stage 2).
//!
//! Candidates are grouped by prompt (in file order) and handed to a preference oracle from
//! `dno-oracle`: an LLM judge over any OpenAI-compatible server (pairwise, both orders averaged;
//! or the paper's batched 6-point score annotation, App. C), a verifier against the samples'
//! `answer`, or an external command speaking the JSONL protocol of `dno-oracle/PROTOCOL.md`.
//! Every answer is cached in `<out>.cache.jsonl` as soon as it arrives, so a rerun after a crash,
//! a kill or failed calls pays only for what is missing. Failed judgments are never turned into
//! preferences: by default any failure means no output and a non-zero exit.

use anyhow::{anyhow, bail, Context, Result};
use dno_data::{Dataset, DatasetReader, DatasetWriter, PreferenceRow, PromptOrder, Provenance, SampleRow, Shard, ShardMeta, META_SHARD};
use dno_oracle::{
    Accounting, Cache, Candidate, Client, ClientConfig, CommandConfig, CommandOracle, Failure, Item, ItemResult, Judge, JudgeConfig,
    JudgeMode, Oracle, PairSpec, Progress, RunOptions, Verifier, VerifyMode,
};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Oracle flags shared by `dno annotate` and `dno eval`. Defaults come from `dno-oracle`'s
/// `ClientConfig`, `JudgeConfig`, `CommandConfig` and `RunOptions`.
#[derive(clap::Args, Serialize, Clone, Debug)]
pub struct OracleArgs {
    /// Which oracle answers P(a > b): judge (LLM over an OpenAI-compatible server), verifier
    /// (compare with the samples' `answer`, or check their `constraints` with --verify
    /// constraints), command (external program, see PROTOCOL.md).
    #[arg(long, value_parser = ["judge", "verifier", "command"])]
    pub oracle: String,
    /// Judge: pairwise (each pair asked in both orders, averaged) or score (all candidates of a
    /// prompt scored in one call on a 6-point rubric; the paper's App. C annotation).
    #[arg(long, default_value_t = JudgeConfig::default().mode.to_string(), value_parser = ["pairwise", "score"])]
    pub mode: String,
    /// Judge: server base URL (`/chat/completions` is appended); several servers of the same
    /// model comma-separated (A,B,C): requests go round-robin, a failed one is retried on another
    /// server, and a server that stops answering leaves the rotation (probed again later).
    #[arg(long, default_value_t = ClientConfig::default().base_url)]
    pub base_url: String,
    /// Judge: model name sent to the server.
    #[arg(long, default_value_t = ClientConfig::default().model)]
    pub api_model: String,
    /// Judge: NAME of the environment variable holding the API key (the key is never printed or
    /// stored; unset = no Authorization header, for local servers).
    #[arg(long, default_value_t = ClientConfig::default().api_key_env)]
    pub api_key_env: String,
    /// Judge: template file replacing the built-in one (placeholders: pairwise {prompt},
    /// {response_a}, {response_b}, {answer}; score {prompt}, {responses}, {answer} and the
    /// response count as n in braces).
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// Judge: system message (`--system` is an old spelling, kept for a release).
    #[arg(long, alias = "system", value_name = "TEXT")]
    pub judge_system: Option<String>,
    /// Judge: requests in flight at most (over all --base-url servers together).
    #[arg(long, default_value_t = ClientConfig::default().max_concurrency)]
    pub concurrency: usize,
    /// Judge: requests per minute (unlimited when not given).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Judge: tokens (prompt + completion) per minute (unlimited when not given).
    #[arg(long)]
    pub tpm: Option<u32>,
    /// Seconds per judge request (default 120) or per command batch (default 600).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Judge: retries of a failed request (429, 5xx, timeouts, broken bodies, null content or a
    /// body without choices/message) after the first attempt.
    #[arg(long, default_value_t = ClientConfig::default().max_retries)]
    pub max_retries: u32,
    /// Judge: first backoff delay in seconds between retries (doubles per retry, with jitter).
    #[arg(long, value_name = "SECS", default_value_t = ClientConfig::default().backoff_base_secs)]
    pub retry_backoff: f64,
    /// Stop after this many failures in a row (default: 20 judge requests that failed all their
    /// retries, or 50 failed judgments in output order); 0 = never stop.
    #[arg(long)]
    pub max_consecutive_failures: Option<u32>,
    /// Judge: sampling temperature (`--temperature` is an old spelling, kept for a release).
    #[arg(long, alias = "temperature", default_value_t = JudgeConfig::default().temperature)]
    pub judge_temperature: f64,
    /// Judge: max completion tokens (default 512 pairwise, 300 + 200·K score; `--max-tokens` is
    /// an old spelling, kept for a release).
    #[arg(long, alias = "max-tokens")]
    pub judge_max_tokens: Option<u32>,
    /// Judge (pairwise): ask for token logprobs and turn the verdict token's A/B/tie mass into a
    /// continuous preference.
    #[arg(long)]
    pub logprobs: bool,
    /// Judge: alternatives per position with --logprobs.
    #[arg(long, default_value_t = JudgeConfig::default().top_logprobs)]
    pub top_logprobs: u32,
    /// Verifier: exact, normalized, last-number (the last number of the response equals the last
    /// number of the answer; GSM8K-style), regex:PATTERN, or constraints (the fraction of the
    /// prompt's `constraints` met; see schemas/constraints.md). `dno eval` also uses it for accuracy.
    #[arg(long, default_value = "last-number")]
    pub verify: String,
    /// Command oracle: the command line, run with `sh -c`.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Command oracle: requests per batch.
    #[arg(long, default_value_t = CommandConfig::shell("x").batch_size)]
    pub batch_size: usize,
    /// Command oracle: keep one process alive across batches.
    #[arg(long)]
    pub persistent: bool,
}

impl OracleArgs {
    /// The verifier mode of `--verify`.
    pub fn verify_mode(&self) -> Result<VerifyMode> {
        self.verify.parse().map_err(|e: anyhow::Error| anyhow!("--verify: {e:#}"))
    }

    /// Build the oracle. `seed` seeds the score-mode candidate shuffle.
    pub fn build(&self, seed: u64) -> Result<Oracle> {
        match self.oracle.as_str() {
            "judge" => {
                let mut cc = ClientConfig {
                    base_url: self.base_url.clone(),
                    model: self.api_model.clone(),
                    api_key_env: self.api_key_env.clone(),
                    max_concurrency: self.concurrency,
                    rpm: self.rpm,
                    tpm: self.tpm,
                    max_retries: self.max_retries,
                    backoff_base_secs: self.retry_backoff,
                    ..ClientConfig::default()
                };
                if let Some(t) = self.timeout {
                    cc.timeout_secs = t;
                }
                if let Some(n) = self.max_consecutive_failures {
                    cc.max_consecutive_failures = n;
                }
                let client = Client::new(cc).map_err(|e| anyhow!("judge: {e:#}"))?;
                let jc = JudgeConfig {
                    mode: self.mode.parse::<JudgeMode>()?,
                    template_path: self.template.clone(),
                    system: self.judge_system.clone(),
                    temperature: self.judge_temperature,
                    max_tokens: self.judge_max_tokens,
                    logprobs: self.logprobs,
                    top_logprobs: self.top_logprobs,
                    shuffle_seed: seed,
                    ..JudgeConfig::default()
                };
                let judge = Judge::new(Arc::new(client), jc).map_err(|e| anyhow!("judge: {e:#}"))?;
                Ok(Oracle::Judge(Arc::new(judge)))
            }
            "verifier" => Ok(Oracle::Verifier(Arc::new(Verifier::new(self.verify_mode()?)))),
            "command" => {
                let cmd = self.command.clone().ok_or_else(|| anyhow!("--oracle command needs --command CMD"))?;
                // `dno` restores the default SIGPIPE action (quiet exit when piped into `head`); a
                // program that exits without reading its stdin must be an error, not our death.
                #[cfg(unix)]
                unsafe {
                    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                }
                let mut cfg = CommandConfig::shell(cmd);
                cfg.batch_size = self.batch_size;
                cfg.persistent = self.persistent;
                if let Some(t) = self.timeout {
                    cfg.batch_timeout_secs = t;
                }
                Ok(Oracle::Command(Arc::new(CommandOracle::new(cfg).map_err(|e| anyhow!("{e:#}"))?)))
            }
            other => bail!("--oracle {other}: expected judge, verifier or command"),
        }
    }

    /// Driver options for this oracle.
    pub fn run_options(&self, pairs: PairSpec, seed: u64) -> RunOptions {
        let mut o = RunOptions { pairs, seed, ..RunOptions::default() };
        // Few prompts in flight at a time, so that prompts finish (and progress shows) steadily
        // with a slow judge, instead of every prompt finishing near the end.
        o.max_items_in_flight = (4 * self.concurrency).clamp(8, o.max_items_in_flight);
        if let Some(n) = self.max_consecutive_failures {
            o.max_consecutive_failures = n as usize;
        }
        o
    }
}

#[derive(clap::Args, Serialize)]
pub struct Args {
    /// Samples written by `dno sample` (files or shard directories).
    #[arg(long, required = true, num_args = 1..)]
    pub samples: Vec<PathBuf>,
    /// Output preferences Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub oracle: OracleArgs,
    /// Which pairs of a prompt's candidates to judge: all, vs-reference or random:N.
    #[arg(long, default_value_t = RunOptions::default().pairs.to_string())]
    pub pairs: String,
    /// Answer cache (default: `<out>.cache.jsonl` beside the output). Delete it to ask again.
    #[arg(long, value_name = "PATH")]
    pub cache: Option<PathBuf>,
    /// Seed for `--pairs random:N` and the score-mode candidate shuffle.
    #[arg(long, default_value_t = RunOptions::default().seed)]
    pub seed: u64,
    /// Print how many calls and tokens the run would cost (cached answers excluded) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the successful judgments even when some failed (they are left out of the output).
    #[arg(long)]
    pub allow_failures: bool,
    /// Judge only shard I of N: the prompts whose stable hash of prompt_id falls in shard I, as
    /// `dno sample --shard` splits them (given a shard directory of N samples files, only
    /// shard I's file is read). The default cache `<out>.cache.jsonl` is then per shard; give
    /// each shard its own --cache too.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

/// `<out>.cache.jsonl`, beside the output.
fn default_cache_path(out: &Path) -> PathBuf {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    out.with_file_name(format!("{name}.cache.jsonl"))
}

/// The answer cache of a stage: `--cache` or `<out>.cache.jsonl`. The verifier needs none, and a
/// dry run opens it only when it already exists, so nothing is created.
pub fn stage_cache(oracle: &Oracle, cache: &Option<PathBuf>, out: &Path, dry_run: bool) -> Result<(PathBuf, Option<Cache>)> {
    let path = cache.clone().unwrap_or_else(|| default_cache_path(out));
    if matches!(oracle, Oracle::Verifier(_)) || (dry_run && !path.exists()) {
        return Ok((path, None));
    }
    let c = Cache::open(&path).map_err(|e| anyhow!("{e:#}"))?;
    Ok((path, Some(c)))
}

/// What a run cost, stored as `dno.accounting` metadata and printed at the end.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunAccounting {
    pub oracle: String,
    pub items: usize,
    pub judgments: usize,
    pub failed_judgments: usize,
    /// Oracle calls paid in this run (HTTP requests or command requests).
    pub calls: u64,
    pub http_attempts: u64,
    pub retries: u64,
    /// Calls that failed after all their retries.
    pub failed_calls: u64,
    pub parse_retries: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_hits: u64,
    /// Mean P(the response shown first wins) over pairwise judgments (0.5 = no position bias).
    pub first_position_win_rate: Option<f64>,
    pub wall_secs: f64,
}

impl RunAccounting {
    pub fn new(oracle: &Oracle, items: usize, acc: &Accounting) -> Self {
        RunAccounting {
            oracle: oracle.name(),
            items,
            calls: acc.calls,
            http_attempts: acc.http_attempts,
            retries: acc.retries,
            failed_calls: acc.failures,
            parse_retries: acc.parse_retries,
            prompt_tokens: acc.prompt_tokens,
            completion_tokens: acc.completion_tokens,
            cache_hits: acc.cache_hits,
            wall_secs: acc.wall_secs,
            ..Default::default()
        }
    }

    pub fn print(&self, what: &str) {
        eprintln!(
            "{what} accounting ({}): {} calls ({} cached answers reused), {} retries, {} failed calls, {} parse retries, tokens {} in / {} out, {:.1} s",
            self.oracle,
            self.calls,
            self.cache_hits,
            self.retries,
            self.failed_calls,
            self.parse_retries,
            self.prompt_tokens,
            self.completion_tokens,
            self.wall_secs
        );
        let fp = self.first_position_win_rate.map(|p| format!(", first-position win-rate {:.1}%", 100.0 * p)).unwrap_or_default();
        eprintln!(
            "  {} prompts/items, {} judgments, {} failed judgments{fp}",
            self.items, self.judgments, self.failed_judgments
        );
    }
}

/// Mean of the judgments' `p_first` (pairwise judge only).
#[derive(Default)]
pub struct FirstPosition {
    sum: f64,
    n: usize,
}

impl FirstPosition {
    pub fn add(&mut self, p: Option<f64>) {
        if let Some(p) = p {
            self.sum += p;
            self.n += 1;
        }
    }
    pub fn rate(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Run `oracle` over `items` on a tokio runtime with a progress bar (terminal) or periodic
/// progress lines (otherwise), handing each item's result to `sink` in input order.
pub fn drive(
    what: &str,
    oracle: &Oracle,
    items: impl IntoIterator<Item = Item>,
    n: usize,
    cache: Option<&Cache>,
    opts: &RunOptions,
    sink: impl FnMut(ItemResult) -> Result<()>,
) -> Result<Accounting> {
    let pb = super::progress(n as u64, what);
    let mut ticker = super::Ticker::new(10);
    let quiet = log::max_level() < log::LevelFilter::Warn;
    let progress = |p: &Progress| {
        pb.set_position(p.items_done as u64);
        pb.set_message(format!("{} calls, {} cached, {} failed", p.calls, p.cache_hits, p.failures));
        if pb.is_hidden() && !quiet && ticker.due() {
            eprintln!(
                "{what}: {}/{n} done, {} judgments, {} failed, {} calls, {} cached answers, {:.0} s",
                p.items_done, p.judgments, p.failures, p.calls, p.cache_hits, p.elapsed_secs
            );
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    let r = rt.block_on(dno_oracle::run_with_sink(oracle, items, cache, opts, progress, sink));
    pb.finish_and_clear();
    r
}

/// The error for a run with failed judgments (and no --allow-failures).
pub fn failures_error(failures: &[Failure], total: usize, cache: &Path) -> anyhow::Error {
    let f = &failures[0];
    let which = if f.sample_a == "*" { format!("prompt '{}'", f.prompt_id) } else { format!("prompt '{}' ({} vs {})", f.prompt_id, f.sample_a, f.sample_b) };
    anyhow!(
        "{} of {total} judgments failed (first: {which}: {}); no output written. Rerun the same command to retry only the failed ones (answers so far are cached in {}), or pass --allow-failures to keep the successful ones",
        failures.len(),
        f.error,
        cache.display()
    )
}

fn new_item(s: &SampleRow) -> Item {
    Item { prompt_id: s.prompt_id.clone(), prompt: judge_prompt(s), answer: None, constraints: None, candidates: Vec::new() }
}

/// The prompt the judge sees: the user turn, or the transcript of a conversation (`history` was
/// checked when the file was validated).
fn judge_prompt(s: &SampleRow) -> String {
    dno_data::judge_view(&s.prompt, s.history.as_deref()).unwrap_or_else(|_| s.prompt.clone())
}

/// Adds sample `s` to `item` (the item of the same prompt).
fn add_candidate(item: &mut Item, s: SampleRow, file: &Path) -> Result<()> {
    if item.prompt != judge_prompt(&s) {
        bail!("{}: sample '{}': column 'prompt' (or 'history') differs from an earlier sample of prompt '{}'", file.display(), s.sample_id, s.prompt_id);
    }
    let is_reference = s.is_reference();
    if item.answer.is_none() {
        item.answer = s.answer;
    }
    if item.constraints.is_none() {
        item.constraints = s.constraints;
    }
    item.candidates.push(Candidate { sample_id: s.sample_id, text: s.response, is_reference });
    Ok(())
}

/// One streaming pass over the samples: how many prompts, whether each prompt's samples are
/// contiguous (as `dno sample` writes them, shard by shard), the prompt texts are consistent,
/// and the first prompt without an `answer`. With `check_constraints` (`--verify constraints`),
/// every sample must carry valid constraints: the first that does not is an error naming it.
struct Scan {
    prompts: usize,
    contiguous: bool,
    missing_answer: Option<String>,
    /// Position of each prompt in the unsharded order (see `dno_data::shard`).
    positions: BTreeMap<String, u64>,
}

/// Is `s.constraints` present and valid? `last_ok` remembers the last valid text (all samples
/// of a prompt carry the same constraints, so each prompt's are parsed once).
fn check_sample_constraints(s: &SampleRow, file: &Path, last_ok: &mut Option<String>) -> Result<()> {
    let Some(c) = &s.constraints else {
        bail!(
            "{}: prompt '{}': column 'constraints' is null, but --verify constraints needs constraints for every prompt (import prompts with --constraints-field)",
            file.display(),
            s.prompt_id
        );
    };
    if last_ok.as_deref() != Some(c.as_str()) {
        dno_oracle::constraints::parse(c).map_err(|e| anyhow!("{}: prompt '{}': column 'constraints': {e:#}", file.display(), s.prompt_id))?;
        *last_ok = Some(c.clone());
    }
    Ok(())
}

fn scan_samples(reader: &DatasetReader, shard: Option<Shard>, check_constraints: bool) -> Result<Scan> {
    let file = &reader.files()[0];
    let mut order = PromptOrder::new(reader.shards());
    let mut scan = Scan { prompts: 0, contiguous: true, missing_answer: None, positions: BTreeMap::new() };
    // (prompt_id, prompt, has an answer) of the run of rows being read.
    let mut current: Option<(String, String, bool)> = None;
    let note_missing = |run: Option<(String, String, bool)>, scan: &mut Scan| {
        if let Some((id, _, false)) = run {
            scan.missing_answer.get_or_insert(id);
        }
    };
    // Positions need a second set of prompt ids only for a shard of a plain file (ranks among all prompts).
    let ranks_needed = shard.is_some() && reader.shards().is_none();
    let mut last_ok: Option<String> = None;
    for batch in reader.rows::<SampleRow>() {
        for s in batch? {
            let position = if ranks_needed || reader.shards().is_some() { order.note(&s.prompt_id) } else { scan.positions.len() as u64 };
            if shard.is_some_and(|sh| !sh.contains(&s.prompt_id)) {
                continue;
            }
            if check_constraints {
                check_sample_constraints(&s, file, &mut last_ok)?;
            }
            match current.as_mut() {
                Some((id, prompt, has_answer)) if *id == s.prompt_id => {
                    if *prompt != s.prompt {
                        bail!("{}: sample '{}': column 'prompt' differs from an earlier sample of prompt '{}'", file.display(), s.sample_id, s.prompt_id);
                    }
                    *has_answer |= s.answer.is_some();
                }
                _ => {
                    note_missing(current.take(), &mut scan);
                    match scan.positions.entry(s.prompt_id.clone()) {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(position);
                            scan.prompts += 1;
                        }
                        std::collections::btree_map::Entry::Occupied(_) => scan.contiguous = false,
                    }
                    current = Some((s.prompt_id, s.prompt, s.answer.is_some()));
                }
            }
        }
    }
    note_missing(current.take(), &mut scan);
    Ok(scan)
}

/// Group samples by prompt into oracle items, all in memory, in the unsharded order (used when a
/// prompt's samples are spread over the input, e.g. policy and teacher samples in two files, or
/// when the input is several shard files).
fn items_in_memory(reader: &DatasetReader, scan: &Scan) -> Result<Vec<Item>> {
    let file = &reader.files()[0];
    let mut order: Vec<Item> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for batch in reader.rows::<SampleRow>() {
        for s in batch? {
            if !scan.positions.contains_key(&s.prompt_id) {
                continue;
            }
            let i = *index.entry(s.prompt_id.clone()).or_insert_with(|| {
                order.push(new_item(&s));
                order.len() - 1
            });
            add_candidate(&mut order[i], s, file)?;
        }
    }
    order.sort_by_key(|it| scan.positions[&it.prompt_id]);
    Ok(order)
}

/// Items built lazily, one prompt at a time, from contiguous samples: memory stays flat however
/// many samples there are. A read error ends the stream and is left in `error`.
fn items_streamed<'a>(reader: &'a DatasetReader, shard: Option<Shard>, error: &'a RefCell<Option<anyhow::Error>>) -> impl Iterator<Item = Item> + 'a {
    let file = reader.files()[0].clone();
    let mut rows = reader
        .rows::<SampleRow>()
        .flat_map(|b| -> Box<dyn Iterator<Item = Result<SampleRow>>> {
            match b {
                Ok(v) => Box::new(v.into_iter().map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
        .filter(move |r| r.as_ref().map_or(true, |s| shard.is_none_or(|sh| sh.contains(&s.prompt_id))))
        .peekable();
    std::iter::from_fn(move || {
        let first = match rows.next()? {
            Ok(s) => s,
            Err(e) => {
                *error.borrow_mut() = Some(e);
                return None;
            }
        };
        let mut item = new_item(&first);
        let push = |item: &mut Item, s: SampleRow| match add_candidate(item, s, &file) {
            Ok(()) => true,
            Err(e) => {
                *error.borrow_mut() = Some(e);
                false
            }
        };
        if !push(&mut item, first) {
            return None;
        }
        while let Some(Ok(next)) = rows.peek() {
            if next.prompt_id != item.prompt_id {
                break;
            }
            let s = rows.next().expect("peeked").expect("peeked Ok");
            if !push(&mut item, s) {
                return None;
            }
        }
        Some(item)
    })
}

pub fn run(a: Args) -> Result<()> {
    let pairs: PairSpec = a.pairs.parse().map_err(|e: anyhow::Error| anyhow!("{e:#}"))?;
    // One writer per output and cache (a dry run writes nothing).
    let _lock = if a.dry_run { None } else { Some(dno_data::lock_output(&a.out)?) };
    if !a.dry_run {
        dno_data::check_output(&a.out, a.force)?;
    }
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let oracle = a.oracle.build(a.seed)?;
    let reader = DatasetReader::open_for_shard(Dataset::Samples, &a.samples, shard)?;
    reader.validate()?;
    let constraints_oracle = matches!(&oracle, Oracle::Verifier(v) if matches!(v.mode(), VerifyMode::Constraints));
    let scan = scan_samples(&reader, shard, constraints_oracle)?;
    if scan.prompts == 0 {
        match shard {
            Some(sh) => log::warn!("shard {sh}: none of the samples' prompts falls in this shard; writing an empty output"),
            None => bail!("{}: no samples", a.samples[0].display()),
        }
    }
    // Items are built one prompt at a time while the run pulls them (flat memory), unless a
    // prompt's samples are spread over the input, or the input is several shard files (read
    // back in the unsharded order); then they are grouped in memory first.
    let shard_files = reader.shards().is_some() && reader.files().len() > 1;
    let grouped = if scan.contiguous && !shard_files {
        None
    } else {
        log::info!("samples of some prompts are not contiguous or in several shard files; grouping {} prompts in memory", scan.prompts);
        Some(items_in_memory(&reader, &scan)?)
    };
    let missing_answer = match &grouped {
        Some(items) => items.iter().find(|it| it.answer.is_none()).map(|it| it.prompt_id.clone()),
        None => scan.missing_answer.clone(),
    };
    if let (Oracle::Verifier(_), Some(id), false) = (&oracle, &missing_answer, constraints_oracle) {
        bail!(
            "{}: prompt '{id}': column 'answer' is null, but the verifier needs an answer for every prompt (import prompts with --answer-field)",
            reader.files()[0].display(),
        );
    }
    let read_error: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let items: Box<dyn Iterator<Item = Item> + '_> = match grouped {
        Some(items) => Box::new(items.into_iter()),
        None => Box::new(items_streamed(&reader, shard, &read_error)),
    };
    let opts = a.oracle.run_options(pairs, a.seed);
    let (cache_path, cache) = stage_cache(&oracle, &a.cache, &a.out, a.dry_run)?;

    if a.dry_run {
        let e = dno_oracle::estimate(&oracle, items, cache.as_ref(), &opts);
        if let Some(e) = read_error.take() {
            return Err(e);
        }
        println!(
            "dry run ({}): {} prompts, {} pairs -> {} calls to make, {} already answered in {}; about {} prompt + {} completion tokens",
            oracle.name(),
            e.items,
            e.pairs,
            e.calls,
            e.cached_calls,
            cache_path.display(),
            e.prompt_tokens,
            e.completion_tokens
        );
        return Ok(());
    }

    let n_items = scan.prompts;
    let mut failures: Vec<Failure> = Vec::new();
    let mut first = FirstPosition::default();
    // Rows stream into the temp file beside the output; it is renamed into place only when the
    // run succeeds, so a killed or failed run leaves only the cache behind.
    let mut prov = Provenance::new("annotate", &a)?;
    prov.add_inputs(reader.files())?;
    let mut w = DatasetWriter::<PreferenceRow>::create(&a.out, &prov, a.force)?;
    let result = drive("annotate", &oracle, items, n_items, cache.as_ref(), &opts, |r| {
        failures.extend(r.failures);
        for j in r.judgments {
            first.add(j.p_first);
            w.write(PreferenceRow {
                prompt_id: j.prompt_id,
                sample_a: j.sample_a,
                sample_b: j.sample_b,
                p_a: j.p_a,
                judge: j.judge,
                p_ab: j.p_ab,
                p_ba: j.p_ba,
                score_a: j.score_a,
                score_b: j.score_b,
                raw: j.raw,
            })?;
        }
        Ok(())
    })
    .and_then(|acc| match read_error.take() {
        Some(e) => Err(e),
        None => Ok(acc),
    });
    let acc = match result {
        Ok(acc) => acc,
        Err(e) => {
            return Err(e.context(format!(
                "annotate stopped; no output written (answers so far are cached in {}: rerun to continue)",
                cache_path.display()
            )))
        }
    };
    let n_rows = w.rows_written() as usize;
    let mut report = RunAccounting::new(&oracle, n_items, &acc);
    report.judgments = n_rows;
    report.failed_judgments = failures.len();
    report.first_position_win_rate = first.rate();
    report.print("annotate");
    if !failures.is_empty() {
        if !a.allow_failures {
            return Err(failures_error(&failures, n_rows + failures.len(), &cache_path));
        }
        log::warn!("{} judgments failed and are left out (--allow-failures); first: {}", failures.len(), failures[0].error);
    }
    w.set_metadata("dno.accounting", serde_json::to_string(&report)?);
    if let Some(sh) = shard {
        w.set_metadata(META_SHARD, ShardMeta::new(sh, scan.positions).to_json());
    }
    let n = w.finish().with_context(|| format!("writing {}", a.out.display()))?;
    let of = shard.map(|sh| format!(" (shard {sh})")).unwrap_or_default();
    eprintln!("preferences: {n} written to {}{of}", a.out.display());
    Ok(())
}
