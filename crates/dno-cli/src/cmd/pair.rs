//! `dno pair`: preferences -> training pairs (stage 3).
//!
//! Per prompt: the preference matrix from the judged pairs (both orders merged), the win-rate
//! r_t(x, y) of every candidate (Alg. 1 line 3), then a pairing strategy from `dno_math::pairing`.

use anyhow::{anyhow, bail, Context, Result};
use dno_data::{read_validated, DatasetWriter, PairRow, PreferenceRow, Provenance, SampleRow};
use dno_math::pairing::{pair_prompt, Basis, Candidate, PairingConfig, PairingStrategy, PairingSummary};
use dno_math::{Judgment, PreferenceMatrix};
use serde::Serialize;
use std::collections::HashMap;
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
    #[arg(long, default_value_t = dno_math::rng::DEFAULT_SEED)]
    pub seed: u64,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

fn parse_replay(spec: &str) -> Result<(PathBuf, f64)> {
    let (path, frac) = spec.rsplit_once(':').ok_or_else(|| anyhow!("--replay '{spec}': expected PATH:FRACTION, e.g. iter-1/pairs.parquet:0.3"))?;
    let f: f64 = frac.parse().map_err(|_| anyhow!("--replay '{spec}': fraction '{frac}' is not a number"))?;
    if !(0.0..1.0).contains(&f) {
        bail!("--replay '{spec}': fraction must lie in [0, 1)");
    }
    Ok((PathBuf::from(path), f))
}

pub fn run(a: Args) -> Result<()> {
    let _lock = dno_data::lock_output(&a.out)?;
    dno_data::check_output(&a.out, a.force)?;
    let strategy: PairingStrategy = a.strategy.parse().map_err(|e| anyhow!("--strategy: {e}"))?;
    let basis: Basis = a.basis.parse().map_err(|e| anyhow!("--basis: {e}"))?;
    let cfg = PairingConfig {
        strategy,
        basis,
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
    };
    cfg.validate().map_err(|e| anyhow!("pairing settings: {e}"))?;
    let iteration = a.iteration.clone().unwrap_or_else(|| {
        a.out.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).unwrap_or("").to_string()
    });
    let replays: Vec<(PathBuf, f64)> = a.replay.iter().map(|s| parse_replay(s)).collect::<Result<_>>()?;

    // Validate every input before any work.
    let (samples_reader, samples) = read_validated::<SampleRow>(&a.samples)?;
    let (prefs_reader, prefs) = read_validated::<PreferenceRow>(&a.preferences)?;
    let mut history = Vec::new();
    for (p, _) in &replays {
        let mut rows = read_validated::<PairRow>(std::slice::from_ref(p))?.1;
        // A version-1 pairs file did not record how its responses ended.
        let mut unknown = 0;
        for r in &mut rows {
            for f in [&mut r.chosen_finish_reason, &mut r.rejected_finish_reason] {
                if f.is_none() {
                    *f = Some("unknown".to_string());
                    unknown += 1;
                }
            }
        }
        if unknown > 0 {
            log::warn!(
                "{}: a version-1 pairs file without finish reasons; its replayed responses get finish reason `unknown`, which dno train treats as ended",
                p.display()
            );
        }
        history.push(rows);
    }

    let mut by_id: HashMap<&str, &SampleRow> = HashMap::with_capacity(samples.len());
    let mut prompt_order: Vec<&str> = Vec::new();
    let mut by_prompt: HashMap<&str, Vec<&SampleRow>> = HashMap::new();
    for s in &samples {
        by_id.insert(&s.sample_id, s);
        let e = by_prompt.entry(&s.prompt_id).or_default();
        if e.is_empty() {
            prompt_order.push(&s.prompt_id);
        }
        e.push(s);
    }
    let mut judgments: HashMap<&str, Vec<Judgment>> = HashMap::new();
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for (i, p) in prefs.iter().enumerate() {
        for id in [&p.sample_a, &p.sample_b] {
            match by_id.get(id.as_str()) {
                Some(s) if s.prompt_id == p.prompt_id => {}
                Some(s) => bail!("preferences row {i}: sample '{id}' belongs to prompt '{}', not '{}'", s.prompt_id, p.prompt_id),
                None => bail!("preferences row {i}: sample '{id}' is not in the samples input ({})", a.samples[0].display()),
            }
        }
        judgments.entry(&p.prompt_id).or_default().push(Judgment { sample_a: p.sample_a.clone(), sample_b: p.sample_b.clone(), p_a: p.p_a });
        // Rubric scores rank candidates (App. C); a verifier's 0/1 correctness is not a rubric
        // score, and its preferences already carry the same information as win-rates.
        if !p.judge.starts_with("verifier") {
            if let Some(s) = p.score_a {
                scores.insert(&p.sample_a, s);
            }
            if let Some(s) = p.score_b {
                scores.insert(&p.sample_b, s);
            }
        }
    }

    let mut summary = PairingSummary::default();
    let mut current: Vec<PairRow> = Vec::new();
    for pid in &prompt_order {
        let cands = &by_prompt[pid];
        let ids: Vec<String> = cands.iter().map(|s| s.sample_id.clone()).collect();
        let js = judgments.get(pid).map(Vec::as_slice).unwrap_or(&[]);
        let matrix = PreferenceMatrix::from_judgments(&ids, js).map_err(|e| anyhow!("prompt '{pid}': {e}"))?;
        let wr: Vec<Option<f64>> = matrix.win_rates().into_iter().map(|w| w.win_rate).collect();
        let candidates: Vec<Candidate> = cands
            .iter()
            .map(|s| Candidate {
                id: s.sample_id.clone(),
                source_is_reference: s.is_reference(),
                repetitive: s.repetitive,
                score: scores.get(s.sample_id.as_str()).copied(),
            })
            .collect();
        let pairs = pair_prompt(pid, &candidates, Some(&wr), &cfg, &mut summary).map_err(|e| anyhow!("{e}"))?;
        let idx: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        for p in pairs {
            let (ci, ri) = (idx[p.chosen.as_str()], idx[p.rejected.as_str()]);
            let (c, r) = (cands[ci], cands[ri]);
            let t = p.targets(&cfg);
            current.push(PairRow {
                prompt_id: c.prompt_id.clone(),
                prompt: c.prompt.clone(),
                system: c.system.clone(),
                history: c.history.clone(),
                chosen: c.response.clone(),
                rejected: r.response.clone(),
                chosen_id: c.sample_id.clone(),
                rejected_id: r.sample_id.clone(),
                target: p.target,
                chosen_winrate: wr[ci].unwrap_or(t.p_win),
                rejected_winrate: wr[ri].unwrap_or(t.p_lose),
                weight: p.weight,
                chosen_score: scores.get(c.sample_id.as_str()).copied(),
                rejected_score: scores.get(r.sample_id.as_str()).copied(),
                chosen_source: c.source.clone(),
                rejected_source: r.source.clone(),
                chosen_finish_reason: Some(c.finish_reason.clone()),
                rejected_finish_reason: Some(r.finish_reason.clone()),
                strategy: strategy.as_str().to_string(),
                iteration: iteration.clone(),
            });
        }
    }
    if let Some(limit) = a.limit.filter(|&l| l < current.len()) {
        let mut rng = dno_math::SplitMix64::new(a.seed ^ 0x11_1717);
        let keep = rng.choose_indices(current.len(), limit);
        current = keep.into_iter().map(|i| current[i].clone()).collect();
    }
    let n_current = current.len();
    let fractions: Vec<f64> = replays.iter().map(|r| r.1).collect();
    let mixed = dno_math::pairing::mix_replay(&current, &history, &fractions, a.seed).map_err(|e| anyhow!("--replay: {e}"))?;
    let n_replayed = mixed.len() - n_current;

    let mut prov = Provenance::new("pair", &a)?;
    prov.add_inputs(samples_reader.files())?;
    prov.add_inputs(prefs_reader.files())?;
    let replay_files: Vec<PathBuf> = replays.iter().map(|r| r.0.clone()).collect();
    prov.add_inputs(&replay_files)?;
    let mut w = DatasetWriter::<PairRow>::create(&a.out, &prov, a.force)?;
    w.write_all(mixed)?;
    let report = serde_json::json!({"summary": summary, "replayed": n_replayed, "current": n_current});
    w.set_metadata("dno.pair_summary", report.to_string());
    let n = w.finish().with_context(|| format!("writing {}", a.out.display()))?;

    eprintln!(
        "pairs: {n} written to {} ({n_current} new, {n_replayed} replayed) from {} prompts ({} with pairs)",
        a.out.display(),
        summary.prompts,
        summary.prompts_with_pairs
    );
    eprintln!(
        "  kept by kind: teacher>student {}  student>teacher {}  student>student {}",
        summary.teacher_over_student, summary.student_over_teacher, summary.student_over_student
    );
    let d = &summary.dropped;
    eprintln!(
        "  dropped: {} of {} considered (unrated {}, tie {}, below --min-margin {}, positive below threshold {}, margin below rule {}, over cap {})",
        d.total(),
        summary.considered,
        d.unrated,
        d.tie,
        d.below_min_margin,
        d.positive_below_threshold,
        d.margin_below_rule,
        d.over_cap
    );
    if n == 0 {
        log::warn!("no pairs qualified; check the thresholds (--min-margin, --score-threshold) or the preferences");
    }
    Ok(())
}
