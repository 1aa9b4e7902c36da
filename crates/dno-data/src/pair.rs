//! Stage 3, `dno pair`: preferences + samples -> training pairs.
//!
//! Per prompt: the preference matrix from the judged pairs (both orders merged), the win-rate
//! r_t(x, y) of every candidate (Alg. 1 line 3), then a pairing strategy of
//! `dno_math::pairing` (the pure maths); this module reads and writes the datasets around it,
//! caps the total (`limit`) and mixes in replayed pairs of earlier iterations.

use crate::{read_validated, DatasetWriter, PairRow, PreferenceRow, Provenance, Reporter, SampleRow};
use anyhow::{anyhow, bail, Context, Result};
use dno_math::pairing::{pair_prompt, Candidate, PairingConfig, PairingSummary};
use dno_math::{Judgment, PreferenceMatrix};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What `dno pair` does.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Preferences written by `dno annotate` (files or shard directories).
    pub preferences: Vec<PathBuf>,
    /// Samples the preferences refer to (files or shard directories).
    pub samples: Vec<PathBuf>,
    /// Output pairs Parquet file.
    pub out: PathBuf,
    /// Strategy, ranking basis, thresholds and margins.
    pub pairing: PairingConfig,
    /// Keep at most this many new pairs in total (a seeded, uniform choice).
    pub limit: Option<usize>,
    /// Pairs of earlier iterations mixed in: (file, fraction), first = t-1, then t-2, ...
    pub replay: Vec<(PathBuf, f64)>,
    /// Label stored in the `iteration` column (default: the output's folder name).
    pub iteration: Option<String>,
    /// Seed of the `limit` choice and of replay selection.
    pub seed: u64,
    /// Overwrite an existing output.
    pub force: bool,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            preferences: Vec::new(),
            samples: Vec::new(),
            out: PathBuf::new(),
            pairing: PairingConfig::default(),
            limit: None,
            replay: Vec::new(),
            iteration: None,
            seed: dno_math::rng::DEFAULT_SEED,
            force: false,
        }
    }
}

/// What a pairing run wrote.
#[derive(Debug, Clone)]
pub struct PairReport {
    pub written: usize,
    pub current: usize,
    pub replayed: usize,
    pub summary: PairingSummary,
}

/// `--replay PATH:FRACTION`.
pub fn parse_replay(spec: &str) -> Result<(PathBuf, f64)> {
    let (path, frac) = spec.rsplit_once(':').ok_or_else(|| anyhow!("--replay '{spec}': expected PATH:FRACTION, e.g. iter-1/pairs.parquet:0.3"))?;
    let f: f64 = frac.parse().map_err(|_| anyhow!("--replay '{spec}': fraction '{frac}' is not a number"))?;
    if !(0.0..1.0).contains(&f) {
        bail!("--replay '{spec}': fraction must lie in [0, 1)");
    }
    Ok((PathBuf::from(path), f))
}

/// The replayed pairs of one earlier iteration. A version-1 pairs file did not record how its
/// responses ended: they get finish reason `unknown`, which `dno train` treats as ended.
fn read_replay(p: &Path) -> Result<Vec<PairRow>> {
    let mut rows = read_validated::<PairRow>(std::slice::from_ref(&p.to_path_buf()))?.1;
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
    Ok(rows)
}

/// Run the pairing stage; `config` is recorded as the output's provenance configuration.
pub fn run(o: &PairOptions, config: &impl Serialize, reporter: &mut dyn Reporter) -> Result<PairReport> {
    let _lock = crate::lock_output(&o.out)?;
    crate::check_output(&o.out, o.force)?;
    let cfg = &o.pairing;
    cfg.validate().map_err(|e| anyhow!("pairing settings: {e}"))?;
    let iteration = o.iteration.clone().unwrap_or_else(|| {
        o.out.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).unwrap_or("").to_string()
    });

    // Validate every input before any work.
    let (samples_reader, samples) = read_validated::<SampleRow>(&o.samples)?;
    let (prefs_reader, prefs) = read_validated::<PreferenceRow>(&o.preferences)?;
    let history: Vec<Vec<PairRow>> = o.replay.iter().map(|(p, _)| read_replay(p)).collect::<Result<_>>()?;

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
                None => bail!("preferences row {i}: sample '{id}' is not in the samples input ({})", o.samples[0].display()),
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
        let pairs = pair_prompt(pid, &candidates, Some(&wr), cfg, &mut summary).map_err(|e| anyhow!("{e}"))?;
        let idx: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        for p in pairs {
            let (ci, ri) = (idx[p.chosen.as_str()], idx[p.rejected.as_str()]);
            let (c, r) = (cands[ci], cands[ri]);
            let t = p.targets(cfg);
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
                strategy: cfg.strategy.as_str().to_string(),
                iteration: iteration.clone(),
            });
        }
    }
    if let Some(limit) = o.limit.filter(|&l| l < current.len()) {
        let mut rng = dno_math::SplitMix64::new(o.seed ^ 0x11_1717);
        let keep = rng.choose_indices(current.len(), limit);
        current = keep.into_iter().map(|i| current[i].clone()).collect();
    }
    let n_current = current.len();
    let fractions: Vec<f64> = o.replay.iter().map(|r| r.1).collect();
    let mixed = dno_math::pairing::mix_replay(&current, &history, &fractions, o.seed).map_err(|e| anyhow!("--replay: {e}"))?;
    let n_replayed = mixed.len() - n_current;

    let mut prov = Provenance::new("pair", config)?;
    prov.add_inputs(samples_reader.files())?;
    prov.add_inputs(prefs_reader.files())?;
    let replay_files: Vec<PathBuf> = o.replay.iter().map(|r| r.0.clone()).collect();
    prov.add_inputs(&replay_files)?;
    let mut w = DatasetWriter::<PairRow>::create(&o.out, &prov, o.force)?;
    w.write_all(mixed)?;
    let report = serde_json::json!({"summary": summary, "replayed": n_replayed, "current": n_current});
    w.set_metadata("dno.pair_summary", report.to_string());
    let n = w.finish().with_context(|| format!("writing {}", o.out.display()))?;

    reporter.note(&format!(
        "pairs: {n} written to {} ({n_current} new, {n_replayed} replayed) from {} prompts ({} with pairs)",
        o.out.display(),
        summary.prompts,
        summary.prompts_with_pairs
    ));
    reporter.note(&format!(
        "  kept by kind: teacher>student {}  student>teacher {}  student>student {}",
        summary.teacher_over_student, summary.student_over_teacher, summary.student_over_student
    ));
    let d = &summary.dropped;
    reporter.note(&format!(
        "  dropped: {} of {} considered (unrated {}, tie {}, below --min-margin {}, positive below threshold {}, margin below rule {}, over cap {})",
        d.total(),
        summary.considered,
        d.unrated,
        d.tie,
        d.below_min_margin,
        d.positive_below_threshold,
        d.margin_below_rule,
        d.over_cap
    ));
    if n == 0 {
        log::warn!("no pairs qualified; check the thresholds (--min-margin, --score-threshold) or the preferences");
    }
    Ok(PairReport { written: n as usize, current: n_current, replayed: n_replayed, summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Silent;

    fn sample(pid: &str, i: i32, text: &str) -> SampleRow {
        SampleRow {
            prompt_id: pid.into(),
            sample_id: format!("{pid}-{i}"),
            prompt: format!("q {pid}"),
            system: None,
            history: None,
            answer: None,
            constraints: None,
            response: text.into(),
            source: "policy".into(),
            policy: "t".into(),
            sample_index: i,
            seed: 0,
            response_tokens: 1,
            finish_reason: if i == 2 { "length" } else { "stop" }.into(),
            logprob: None,
            repetitive: false,
        }
    }

    fn pref(pid: &str, a: i32, b: i32, p_a: f64) -> PreferenceRow {
        PreferenceRow {
            prompt_id: pid.into(),
            sample_a: format!("{pid}-{a}"),
            sample_b: format!("{pid}-{b}"),
            p_a,
            judge: "test".into(),
            p_ab: None,
            p_ba: None,
            score_a: None,
            score_b: None,
            raw: None,
        }
    }

    fn write<T: crate::Row>(path: &Path, rows: Vec<T>) {
        let mut w = DatasetWriter::<T>::create(path, &Provenance::new("test", &()).unwrap(), false).unwrap();
        w.write_all(rows).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn max_min_pairs_best_against_worst_with_finish_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let (samples, prefs, out) = (dir.path().join("s.parquet"), dir.path().join("p.parquet"), dir.path().join("iter-3").join("pairs.parquet"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        write(&samples, vec![sample("a", 0, "good"), sample("a", 1, "mid"), sample("a", 2, "bad")]);
        // 0 beats 1 and 2, 1 beats 2: win-rates 1, 0.5, 0.
        write(&prefs, vec![pref("a", 0, 1, 1.0), pref("a", 0, 2, 1.0), pref("a", 1, 2, 1.0)]);
        let o = PairOptions {
            preferences: vec![prefs],
            samples: vec![samples],
            out: out.clone(),
            pairing: PairingConfig { strategy: "max-min".parse().unwrap(), ..PairingConfig::default() },
            ..PairOptions::default()
        };
        let r = run(&o, &"cfg", &mut Silent).unwrap();
        assert_eq!((r.written, r.current, r.replayed), (1, 1, 0));
        let rows = read_validated::<PairRow>(&[out]).unwrap().1;
        assert_eq!(rows.len(), 1);
        let p = &rows[0];
        assert_eq!((p.chosen.as_str(), p.rejected.as_str()), ("good", "bad"));
        assert_eq!((p.chosen_finish_reason.as_deref(), p.rejected_finish_reason.as_deref()), (Some("stop"), Some("length")));
        assert_eq!((p.chosen_winrate, p.rejected_winrate), (1.0, 0.0));
        assert_eq!(p.iteration, "iter-3", "the output's folder names the iteration");
        assert_eq!(p.strategy, "max-min");
    }

    #[test]
    fn a_preference_for_an_unknown_sample_is_an_error_naming_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let (samples, prefs, out) = (dir.path().join("s.parquet"), dir.path().join("p.parquet"), dir.path().join("pairs.parquet"));
        write(&samples, vec![sample("a", 0, "x"), sample("a", 1, "y")]);
        write(&prefs, vec![pref("a", 0, 1, 1.0), pref("a", 0, 7, 1.0)]);
        let o = PairOptions { preferences: vec![prefs], samples: vec![samples], out: out.clone(), ..PairOptions::default() };
        let e = format!("{:#}", run(&o, &"cfg", &mut Silent).unwrap_err());
        assert!(e.contains("preferences row 1") && e.contains("'a-7'"), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn replay_spec() {
        assert_eq!(parse_replay("a/b.parquet:0.25").unwrap(), (PathBuf::from("a/b.parquet"), 0.25));
        assert_eq!(parse_replay("c:/x.parquet:0.5").unwrap().0, PathBuf::from("c:/x.parquet"));
        assert!(parse_replay("a.parquet").is_err());
        assert!(parse_replay("a.parquet:x").is_err());
        assert!(parse_replay("a.parquet:1").is_err());
    }
}
