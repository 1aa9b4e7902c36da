//! `dno annotate`: samples -> preferences (stage 2). The oracle flags (shared with `dno eval`)
//! build a `dno_oracle::Oracle`: an LLM judge over any OpenAI-compatible server (pairwise, both
//! orders averaged; or the paper's batched 6-point score annotation, App. C), a verifier against
//! the samples' `answer`, or an external command speaking the JSONL protocol of
//! `dno-oracle/PROTOCOL.md`. The stage itself is `dno_oracle::stage::annotate`.

use anyhow::{anyhow, bail, Result};
use dno_data::Shard;
use dno_oracle::stage::{AnnotateOptions, Outcome};
use dno_oracle::{Client, ClientConfig, CommandConfig, CommandOracle, Judge, JudgeConfig, JudgeMode, Oracle, PairSpec, RunOptions, Verifier, VerifyMode};
use serde::Serialize;
use std::path::PathBuf;
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
    #[arg(long, default_value_t = VerifyMode::default().to_string())]
    pub verify: String,
    /// Command oracle: the command line, run with `sh -c`.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Command oracle: requests per batch sent to the program.
    #[arg(long, default_value_t = CommandConfig::shell("x").batch_size)]
    pub command_batch: usize,
    /// Old spelling of --command-batch (deprecated: `--batch-size` is the training batch of `dno train`).
    #[arg(long = "batch-size", hide = true, conflicts_with = "command_batch", value_name = "N")]
    #[serde(skip)]
    pub batch_size_deprecated: Option<usize>,
    /// Command oracle: keep one process alive across batches.
    #[arg(long)]
    pub persistent: bool,
}

impl OracleArgs {
    /// Resolve deprecated spellings into the current flags, with a warning.
    pub fn resolve_deprecated(&mut self) {
        if let Some(n) = self.batch_size_deprecated.take() {
            log::warn!("--batch-size is deprecated for the command oracle; use --command-batch (--batch-size is the training batch of dno train)");
            self.command_batch = n;
        }
    }

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
                cfg.batch_size = self.command_batch;
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
    /// Which pairs of a prompt's candidates to compare: all, vs-reference or random:N.
    #[arg(long, value_name = "SPEC", default_value_t = RunOptions::default().pairs.to_string())]
    pub compare: String,
    /// Old spelling of --compare (deprecated: `--pairs` names a pairs file, as in `dno train`).
    #[arg(long = "pairs", hide = true, conflicts_with = "compare", value_name = "SPEC")]
    #[serde(skip)]
    pub pairs_deprecated: Option<String>,
    /// Answer cache (default: `<out>.cache.jsonl` beside the output). Delete it to ask again.
    #[arg(long, value_name = "PATH")]
    pub cache: Option<PathBuf>,
    /// Seed for `--compare random:N` and the score-mode candidate shuffle.
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

pub fn run(mut a: Args) -> Result<()> {
    a.oracle.resolve_deprecated();
    if let Some(p) = a.pairs_deprecated.take() {
        log::warn!("dno annotate --pairs is deprecated; use --compare (--pairs names a pairs file, as in dno train)");
        a.compare = p;
    }
    let pairs: PairSpec = a.compare.parse().map_err(|e: anyhow::Error| anyhow!("{e:#}"))?;
    let o = AnnotateOptions {
        samples: a.samples.clone(),
        out: a.out.clone(),
        run: a.oracle.run_options(pairs, a.seed),
        cache: a.cache.clone(),
        dry_run: a.dry_run,
        allow_failures: a.allow_failures,
        shard: a.shard.as_deref().map(Shard::parse).transpose()?,
        force: a.force,
    };
    let oracle = a.oracle.build(a.seed)?;
    match dno_oracle::stage::annotate(&o, &oracle, &a, &mut super::Report::new(10))? {
        Outcome::DryRun(line) => println!("{line}"),
        Outcome::Written(_) => {}
    }
    Ok(())
}
