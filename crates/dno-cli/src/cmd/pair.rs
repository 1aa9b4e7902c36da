//! `dno pair`: preferences -> training pairs (stage 3); the stage is `dno_data::pair`.

use anyhow::{anyhow, Result};
use dno_data::pair::{parse_replay, PairOptions};
use dno_math::pairing::PairingConfig;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Serialize)]
pub struct Args {
    /// Preferences written by `dno annotate` (files or shard directories).
    #[arg(long, required = true, num_args = 1..)]
    pub preferences: Vec<PathBuf>,
    /// Samples the preferences refer to (files or shard directories).
    #[arg(long, required = true, num_args = 1..)]
    pub samples: Vec<PathBuf>,
    /// Output pairs Parquet file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// dno-prct (the paper's large-margin rule), max-min (best vs worst) or soft (Alg. 1 soft targets).
    #[arg(long, default_value_t = PairingConfig::default().strategy.to_string())]
    pub strategy: String,
    /// What ranks candidates: auto (scores when every candidate has one, else win-rates), score, win-rate.
    #[arg(long, default_value_t = PairingConfig::default().basis.to_string())]
    pub basis: String,
    /// dno-prct on scores: a positive must score at least this.
    #[arg(long, default_value_t = PairingConfig::default().score_positive_threshold)]
    pub score_threshold: f64,
    /// dno-prct on scores: margin over a student (policy) negative.
    #[arg(long, default_value_t = PairingConfig::default().score_margin_student)]
    pub score_margin: f64,
    /// dno-prct on scores: margin when the positive is the reference (teacher).
    #[arg(long, default_value_t = PairingConfig::default().score_margin_reference)]
    pub score_margin_reference: f64,
    /// Top of the score scale (the 6-point rubric).
    #[arg(long, default_value_t = PairingConfig::default().score_max)]
    pub score_max: f64,
    /// dno-prct on win-rates: a positive must have r_t at least this.
    #[arg(long, default_value_t = PairingConfig::default().winrate_positive_threshold)]
    pub winrate_threshold: f64,
    /// dno-prct on win-rates: margin over a student negative.
    #[arg(long, default_value_t = PairingConfig::default().winrate_margin_student)]
    pub winrate_margin: f64,
    /// dno-prct on win-rates: margin when the positive is the reference.
    #[arg(long, default_value_t = PairingConfig::default().winrate_margin_reference)]
    pub winrate_margin_reference: f64,
    /// Drop pairs whose margin is below this (any strategy).
    #[arg(long, default_value_t = PairingConfig::default().min_margin)]
    pub min_margin: f64,
    /// Keep at most this many pairs per prompt (largest margins first).
    #[arg(long)]
    pub max_pairs_per_prompt: Option<usize>,
    /// Keep at most N new pairs in total (a seeded, uniform choice), e.g. to match another run's data budget.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Mix in pairs of an earlier iteration: PATH:FRACTION (repeatable; first = t-1, then t-2, ...).
    #[arg(long, value_name = "PATH:FRACTION")]
    pub replay: Vec<String>,
    /// Label stored in the `iteration` column of the new pairs (default: the output's folder name).
    #[arg(long)]
    pub iteration: Option<String>,
    /// Seed for replay selection.
    #[arg(long, default_value_t = PairOptions::default().seed)]
    pub seed: u64,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    let o = PairOptions {
        preferences: a.preferences.clone(),
        samples: a.samples.clone(),
        out: a.out.clone(),
        pairing: PairingConfig {
            strategy: a.strategy.parse().map_err(|e| anyhow!("--strategy: {e}"))?,
            basis: a.basis.parse().map_err(|e| anyhow!("--basis: {e}"))?,
            score_max: a.score_max,
            score_positive_threshold: a.score_threshold,
            score_margin_student: a.score_margin,
            score_margin_reference: a.score_margin_reference,
            winrate_positive_threshold: a.winrate_threshold,
            winrate_margin_student: a.winrate_margin,
            winrate_margin_reference: a.winrate_margin_reference,
            min_margin: a.min_margin,
            max_pairs_per_prompt: a.max_pairs_per_prompt,
            ..PairingConfig::default()
        },
        limit: a.limit,
        replay: a.replay.iter().map(|s| parse_replay(s)).collect::<Result<_>>()?,
        iteration: a.iteration.clone(),
        seed: a.seed,
        force: a.force,
    };
    dno_data::pair::run(&o, &a, &mut super::Report::new(30)).map(|_| ())
}
