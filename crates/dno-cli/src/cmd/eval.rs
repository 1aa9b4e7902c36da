//! `dno eval`: a candidate policy against a fixed baseline (stage 5). The flags build a
//! `dno_eval::stage::StageOptions` and the oracle; the stage is `dno_eval::stage::run`.

use super::annotate::OracleArgs;
use anyhow::Result;
use dno_data::Shard;
use dno_eval::stage::StageOptions;
use dno_eval::EvalOptions;
use dno_oracle::stage::Outcome;
use dno_oracle::PairSpec;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Serialize)]
pub struct Args {
    /// Samples of the policy being evaluated (files or shard directories).
    #[arg(long, required = true, num_args = 1..)]
    pub candidate: Vec<PathBuf>,
    /// Samples of the fixed baseline policy; its first policy sample per prompt is the baseline.
    #[arg(long, num_args = 1.., required_unless_present = "baseline_reference", conflicts_with = "baseline_reference")]
    pub baseline: Vec<PathBuf>,
    /// Use the prompts' reference answers as the baseline: the `reference` rows
    /// (source=reference) of the candidate samples, or the `reference` column of --prompts.
    #[arg(long)]
    pub baseline_reference: bool,
    /// Prompts file whose `reference` column is the baseline (with --baseline-reference).
    #[arg(long, num_args = 1.., requires = "baseline_reference")]
    pub prompts: Vec<PathBuf>,
    /// Output eval Parquet file (`RUN/iter-<t>/eval.parquet` for `dno report RUN`).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Compare every policy sample of a prompt with the baseline (default: the first one, by sample_index).
    #[arg(long)]
    pub all_samples: bool,
    #[command(flatten)]
    pub oracle: OracleArgs,
    /// Answer cache (default: `<out>.cache.jsonl` beside the output).
    #[arg(long, value_name = "PATH")]
    pub cache: Option<PathBuf>,
    /// Seed of the bootstrap and of the score-mode candidate shuffle.
    #[arg(long, default_value_t = EvalOptions::default().seed)]
    pub seed: u64,
    /// Bootstrap replicates (resampling prompts) for the win-rate CI.
    #[arg(long, default_value_t = EvalOptions::default().bootstrap_samples)]
    pub bootstrap_samples: usize,
    /// Confidence level of the CI.
    #[arg(long, default_value_t = EvalOptions::default().ci_level)]
    pub ci_level: f64,
    /// Print how many calls and tokens the run would cost and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Summarise the successful comparisons even when some failed.
    #[arg(long)]
    pub allow_failures: bool,
    /// Evaluate only shard I of N (by the stable hash of prompt_id, as `dno sample --shard`).
    /// A shard output holds its comparisons but no summary: `dno merge` of all N shards writes
    /// the eval file with the summary, equal to an unsharded run's.
    #[arg(long, value_name = "I/N", conflicts_with = "report")]
    pub shard: Option<String>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
    /// Afterwards, run `dno report` over the run directory (the output's grandparent when it sits
    /// in `iter-<t>/`, else the output alone, with the report beside it).
    #[arg(long)]
    pub report: bool,
}

/// The `dno report` invocation for an eval output.
fn report_args(out: &Path) -> super::report::Args {
    let parent = out.parent().filter(|d| !d.as_os_str().is_empty());
    let in_iter_dir = parent.and_then(|d| d.file_name()).and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("iter"));
    match (in_iter_dir, parent.and_then(|d| d.parent())) {
        (true, Some(run)) => {
            let run = if run.as_os_str().is_empty() { PathBuf::from(".") } else { run.to_path_buf() };
            super::report::Args { inputs: vec![run], out: None }
        }
        _ => super::report::Args {
            inputs: vec![out.to_path_buf()],
            out: Some(parent.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")).join("report")),
        },
    }
}

pub fn run(mut a: Args) -> Result<()> {
    a.oracle.resolve_deprecated();
    let o = StageOptions {
        candidate: a.candidate.clone(),
        baseline: a.baseline.clone(),
        baseline_reference: a.baseline_reference,
        prompts: a.prompts.clone(),
        out: a.out.clone(),
        all_samples: a.all_samples,
        cache: a.cache.clone(),
        stats: EvalOptions { bootstrap_samples: a.bootstrap_samples, seed: a.seed, ci_level: a.ci_level, ..EvalOptions::default() },
        run: a.oracle.run_options(PairSpec::All, a.seed),
        verify: a.oracle.verify_mode()?,
        dry_run: a.dry_run,
        allow_failures: a.allow_failures,
        shard: a.shard.as_deref().map(Shard::parse).transpose()?,
        force: a.force,
    };
    let oracle = a.oracle.build(a.seed)?;
    match dno_eval::stage::run(&o, &oracle, &a, &mut super::Report::new(10))? {
        Outcome::DryRun(line) => println!("{line}"),
        Outcome::Written(_) if a.report && o.shard.is_none() => super::report::run(report_args(&a.out))?,
        Outcome::Written(_) => {}
    }
    Ok(())
}
