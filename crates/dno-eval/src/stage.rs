//! Stage 5, `dno eval`: a candidate policy against a fixed baseline.
//!
//! Each candidate response (the first policy sample of a prompt, or every policy sample with
//! `--all-samples`) is compared with the baseline response of the same prompt (the baseline
//! file's first policy sample, or with `--baseline-reference` the prompt's reference answer) by
//! the same oracles and cache as `dno annotate` (a pairwise judge asks both orders). The output
//! has one `EvalRow` per comparison and the `dno.eval_summary` metadata (a `dno_eval::EvalSummary`:
//! win-rate with prompt-clustered SE and bootstrap CI, length-controlled win-rate, mean lengths,
//! verifier accuracy, first-position win-rate) that `dno report` reads.
//!
//! Accuracy: when the samples carry an `answer`, both responses are checked with the verifier
//! of `--verify` (default `last-number`: the last number in the response equals the last number
//! in the answer, the usual GSM8K-style check), whatever oracle decides the preference.
//! Likewise, when the samples carry `constraints`, both responses are checked against them:
//! strict accuracy (all constraints met) and loose accuracy (mean fraction met) for candidate and
//! baseline, beside the win-rate.

use crate::{Comparison, EvalOptions, EvalSummary};
use anyhow::{anyhow, bail, Context, Result};
use dno_data::{read_validated, Dataset, DatasetReader, DatasetWriter, EvalRow, PromptOrder, PromptRow, Provenance, Reporter, SampleRow, Shard, ShardMeta, META_SHARD};
use dno_oracle::stage::{drive, failures_error, stage_cache, Outcome, RunAccounting};
use dno_oracle::{Candidate, Failure, Item, Judgment, Oracle, RunOptions, Verifier, VerifyMode};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What `dno eval` does (the judging oracle is built by the caller).
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Samples of the policy being evaluated (files or shard directories).
    pub candidate: Vec<PathBuf>,
    /// Samples of the fixed baseline policy; its first policy sample per prompt is the baseline.
    pub baseline: Vec<PathBuf>,
    /// Use the prompts' reference answers as the baseline (the candidate file's reference rows,
    /// or the `reference` column of `prompts`).
    pub baseline_reference: bool,
    pub prompts: Vec<PathBuf>,
    /// Output eval Parquet file.
    pub out: PathBuf,
    /// Compare every policy sample of a prompt (default: the first one, by sample_index).
    pub all_samples: bool,
    /// Answer cache (default: `<out>.cache.jsonl` beside the output).
    pub cache: Option<PathBuf>,
    /// Bootstrap, seed and CI level of the summary.
    pub stats: EvalOptions,
    /// The oracle driver's options (every comparison is one pair).
    pub run: RunOptions,
    /// Accuracy check of both sides, where the samples carry an answer (or constraints).
    pub verify: VerifyMode,
    /// Only estimate the cost (nothing is written).
    pub dry_run: bool,
    /// Summarise the successful comparisons even when some failed.
    pub allow_failures: bool,
    /// Evaluate only this shard (its output holds comparisons but no summary).
    pub shard: Option<Shard>,
    /// Overwrite an existing output.
    pub force: bool,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions {
            candidate: Vec::new(),
            baseline: Vec::new(),
            baseline_reference: false,
            prompts: Vec::new(),
            out: PathBuf::new(),
            all_samples: false,
            cache: None,
            stats: EvalOptions::default(),
            run: RunOptions::default(),
            verify: VerifyMode::default(),
            dry_run: false,
            allow_failures: false,
            shard: None,
            force: false,
        }
    }
}

/// Metadata key of an eval file's [`EvalSummary`] (what `dno report` reads).
pub const SUMMARY_KEY: &str = "dno.eval_summary";

/// Metadata key of the options the summary is computed with (so `dno merge` of eval shards
/// computes the same summary as an unsharded run).
pub const EVAL_OPTIONS_KEY: &str = "dno.eval_options";

/// The comparison an eval row stands for (what `dno_eval::summarize` reads).
pub fn comparison(r: &EvalRow) -> Comparison {
    Comparison {
        prompt_id: r.prompt_id.clone(),
        p_candidate: r.p_candidate,
        p_candidate_first: r.p_candidate_first,
        p_candidate_second: r.p_candidate_second,
        candidate_len: r.candidate_len as usize,
        baseline_len: r.baseline_len as usize,
        candidate_correct: r.candidate_correct,
        baseline_correct: r.baseline_correct,
        candidate_constraints: r.candidate_constraints,
        baseline_constraints: r.baseline_constraints,
    }
}

/// One response of either side.
#[derive(Clone)]
struct Resp {
    id: String,
    text: String,
}

/// One planned comparison.
struct Planned {
    prompt_id: String,
    prompt: String,
    answer: Option<String>,
    constraints: Option<String>,
    cand: Resp,
    base: Resp,
}

/// Policy samples grouped by prompt (first-appearance order), each group sorted by sample_index.
fn policy_by_prompt(samples: &[SampleRow]) -> (Vec<String>, HashMap<String, Vec<&SampleRow>>) {
    let mut order = Vec::new();
    let mut by: HashMap<String, Vec<&SampleRow>> = HashMap::new();
    for s in samples.iter().filter(|s| !s.is_reference()) {
        let e = by.entry(s.prompt_id.clone()).or_default();
        if e.is_empty() {
            order.push(s.prompt_id.clone());
        }
        e.push(s);
    }
    for v in by.values_mut() {
        v.sort_by_key(|s| s.sample_index);
    }
    (order, by)
}

/// prompt_id -> baseline response.
fn baselines(a: &StageOptions, cand_samples: &[SampleRow]) -> Result<(HashMap<String, (Resp, Option<String>)>, Vec<PathBuf>, String)> {
    let mut map = HashMap::new();
    if !a.baseline_reference {
        let (reader, rows) = read_validated::<SampleRow>(&a.baseline)?;
        let (_, by) = policy_by_prompt(&rows);
        for (pid, v) in by {
            let s = v[0];
            map.insert(pid, (Resp { id: s.sample_id.clone(), text: s.response.clone() }, s.answer.clone()));
        }
        if map.is_empty() {
            bail!("{}: no policy samples (source=policy) to use as the baseline", reader.files()[0].display());
        }
        return Ok((map, reader.files().to_vec(), format!("{} (first policy sample)", a.baseline[0].display())));
    }
    if !a.prompts.is_empty() {
        let (reader, rows) = read_validated::<PromptRow>(&a.prompts)?;
        for p in rows {
            if let Some(r) = p.reference {
                map.insert(p.prompt_id.clone(), (Resp { id: format!("reference:{}", p.prompt_id), text: r }, p.answer));
            }
        }
        if map.is_empty() {
            bail!("{}: column 'reference' is null in every row; --baseline-reference needs reference answers", reader.files()[0].display());
        }
        return Ok((map, reader.files().to_vec(), format!("{} (reference column)", a.prompts[0].display())));
    }
    for s in cand_samples.iter().filter(|s| s.is_reference()) {
        map.entry(s.prompt_id.clone()).or_insert_with(|| (Resp { id: s.sample_id.clone(), text: s.response.clone() }, s.answer.clone()));
    }
    if map.is_empty() {
        bail!(
            "{}: no reference rows (source=reference); sample with --include-reference or pass --prompts with a reference column",
            a.candidate[0].display()
        );
    }
    Ok((map, Vec::new(), "the candidate file's reference rows".to_string()))
}

/// The comparisons to judge, and (with `shard`) the position of each of their prompts in the
/// unsharded order.
fn plan(
    a: &StageOptions,
    shard: Option<Shard>,
    cand: &DatasetReader,
    cand_samples: &[SampleRow],
    base: &HashMap<String, (Resp, Option<String>)>,
) -> Result<(Vec<Planned>, BTreeMap<String, u64>)> {
    let (mut order, by) = policy_by_prompt(cand_samples);
    if order.is_empty() && shard.is_none() {
        bail!("{}: no policy samples (source=policy) to evaluate", cand.files()[0].display());
    }
    let mut positions = PromptOrder::new(cand.shards());
    let mut shard_positions = BTreeMap::new();
    if let Some(sh) = shard {
        order.retain(|pid| {
            let pos = positions.note(pid);
            sh.contains(pid) && shard_positions.insert(pid.clone(), pos).is_none()
        });
    }
    let mut planned = Vec::new();
    let mut no_baseline = 0usize;
    for pid in &order {
        let Some((b, b_answer)) = base.get(pid) else {
            no_baseline += 1;
            continue;
        };
        let group = &by[pid];
        let take = if a.all_samples { group.len() } else { 1 };
        for s in &group[..take] {
            planned.push(Planned {
                prompt_id: pid.clone(),
                prompt: dno_data::judge_view(&s.prompt, s.history.as_deref()).with_context(|| format!("sample '{}'", s.sample_id))?,
                answer: s.answer.clone().or_else(|| b_answer.clone()),
                constraints: s.constraints.clone(),
                cand: Resp { id: s.sample_id.clone(), text: s.response.clone() },
                base: b.clone(),
            });
        }
    }
    let cand_set: HashSet<&String> = order.iter().collect();
    let no_candidate = base.keys().filter(|k| !cand_set.contains(k) && shard.is_none_or(|sh| sh.contains(k))).count();
    if no_baseline > 0 {
        log::warn!("{no_baseline} of {} candidate prompts have no baseline response and are skipped", order.len());
    }
    if no_candidate > 0 {
        log::warn!("{no_candidate} baseline prompts have no candidate sample and are skipped");
    }
    if planned.is_empty() {
        match shard {
            Some(sh) => log::warn!("shard {sh}: no comparison falls in this shard; writing an empty output"),
            None => bail!("{}: no prompt in common between the candidate and the baseline", cand.files()[0].display()),
        }
    }
    Ok((planned, shard_positions))
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "-".into())
}

/// The lines printed after an eval (or a merge of eval shards).
pub fn summary_lines(s: &EvalSummary, out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!("eval: {} comparisons over {} prompts written to {}", s.n, s.n_prompts, out.display()));
    lines.push(format!(
        "  win-rate {:.1}% ± {:.1} (SE; {:.0}% CI {:.1}%..{:.1}%), length-controlled {:.1}%  [wins {} / ties {} / losses {}]",
        100.0 * s.win_rate,
        100.0 * s.win_rate_se,
        100.0 * s.ci_level,
        100.0 * s.ci_low,
        100.0 * s.ci_high,
        100.0 * s.lc_win_rate,
        s.wins,
        s.ties,
        s.losses
    ));
    lines.push(format!("  mean length (chars): candidate {:.0}, baseline {:.0}", s.mean_len_candidate, s.mean_len_baseline));
    if s.accuracy_candidate.is_some() || s.accuracy_baseline.is_some() {
        lines.push(format!("  accuracy: candidate {}, baseline {}", pct(s.accuracy_candidate), pct(s.accuracy_baseline)));
    }
    if s.constraints_strict_candidate.is_some() {
        lines.push(format!(
            "  constraints: strict accuracy (all met) candidate {}, baseline {}; loose (mean fraction met) candidate {}, baseline {}",
            pct(s.constraints_strict_candidate),
            pct(s.constraints_strict_baseline),
            pct(s.constraints_loose_candidate),
            pct(s.constraints_loose_baseline)
        ));
    }
    if let Some(p) = s.first_position_win_rate {
        lines.push(format!("  first-position win-rate {:.1}% (50% = no position bias)", 100.0 * p));
    }
    if let Some(w) = &s.lc_warning {
        lines.push(format!("  warning: {w}"));
    }
    for n in &s.notes {
        lines.push(format!("  note: {n}"));
    }
    lines
}

/// Run the eval stage: `oracle` judges each comparison (candidate first), `a.verify` checks
/// accuracy; `config` is recorded as the output's provenance configuration.
pub fn run(a: &StageOptions, oracle: &Oracle, config: &impl Serialize, reporter: &mut dyn Reporter) -> Result<Outcome> {
    // One writer per output (a dry run writes nothing).
    let _lock = if a.dry_run { None } else { Some(dno_data::lock_output(&a.out)?) };
    if !a.dry_run {
        dno_data::check_output(&a.out, a.force)?;
    }
    let opts_eval = &a.stats;
    if opts_eval.bootstrap_samples == 0 {
        bail!("--bootstrap-samples must be at least 1");
    }
    if !(opts_eval.ci_level > 0.0 && opts_eval.ci_level < 1.0) {
        bail!("--ci-level {} must lie strictly between 0 and 1", opts_eval.ci_level);
    }
    let check_answers = !matches!(a.verify, VerifyMode::Constraints);
    let verifier = Verifier::new(a.verify.clone());
    let shard = a.shard;
    let cand_reader = DatasetReader::open_for_shard(Dataset::Samples, &a.candidate, shard)?;
    cand_reader.validate()?;
    let cand_samples: Vec<SampleRow> = cand_reader.read_all()?;
    let (base, base_files, base_desc) = baselines(a, &cand_samples)?;
    let (planned, shard_positions) = plan(a, shard, &cand_reader, &cand_samples, &base)?;
    drop(cand_samples);
    // Constraints are parsed once per comparison, before anything is judged: a bad one is an
    // error naming its prompt.
    let mut parsed_constraints = Vec::with_capacity(planned.len());
    for p in &planned {
        parsed_constraints.push(match &p.constraints {
            Some(c) => Some(dno_oracle::constraints::parse(c).map_err(|e| {
                anyhow!("{}: prompt '{}': column 'constraints': {e:#}", cand_reader.files()[0].display(), p.prompt_id)
            })?),
            None if !check_answers => bail!(
                "{}: prompt '{}': column 'constraints' is null, but --verify constraints needs constraints for every prompt",
                cand_reader.files()[0].display(),
                p.prompt_id
            ),
            None => None,
        });
    }
    if let (Oracle::Verifier(_), true) = (oracle, check_answers) {
        if let Some(p) = planned.iter().find(|p| p.answer.is_none()) {
            bail!(
                "{}: prompt '{}': column 'answer' is null, but the verifier oracle needs an answer for every prompt",
                cand_reader.files()[0].display(),
                p.prompt_id
            );
        }
    }
    let items: Vec<Item> = planned
        .iter()
        .map(|p| Item {
            prompt_id: p.prompt_id.clone(),
            prompt: p.prompt.clone(),
            answer: p.answer.clone(),
            constraints: p.constraints.clone(),
            candidates: vec![
                Candidate { sample_id: p.cand.id.clone(), text: p.cand.text.clone(), is_reference: false },
                Candidate { sample_id: p.base.id.clone(), text: p.base.text.clone(), is_reference: a.baseline_reference },
            ],
        })
        .collect();
    let run_opts = &a.run;
    let (cache_path, cache) = stage_cache(oracle, a.cache.as_deref(), &a.out, a.dry_run)?;
    if a.dry_run {
        let e = dno_oracle::estimate(oracle, &items, cache.as_ref(), run_opts);
        return Ok(Outcome::DryRun(format!(
            "dry run ({}): {} comparisons -> {} calls to make, {} already answered in {}; about {} prompt + {} completion tokens",
            oracle.name(),
            e.pairs,
            e.calls,
            e.cached_calls,
            cache_path.display(),
            e.prompt_tokens,
            e.completion_tokens
        )));
    }
    reporter.note(&format!("eval: {} comparisons against {base_desc}", planned.len()));

    // Judge every comparison (item i = planned[i]; candidate is `a`, baseline is `b`).
    let mut judged: Vec<Option<Judgment>> = vec![None; planned.len()];
    let mut failures: Vec<Failure> = Vec::new();
    let n_items = items.len();
    let acc = drive("eval", oracle, items, n_items, cache.as_ref(), run_opts, reporter, |r| {
        failures.extend(r.failures);
        judged[r.index] = r.judgments.into_iter().next();
        Ok(())
    })
    .map_err(|e| e.context(format!("eval stopped; no output written (answers so far are cached in {}: rerun to continue)", cache_path.display())))?;
    let mut report = RunAccounting::new(oracle, n_items, &acc);
    report.judgments = judged.iter().filter(|j| j.is_some()).count();
    report.failed_judgments = n_items - report.judgments;
    if report.failed_judgments > 0 {
        if failures.is_empty() {
            failures.push(Failure {
                prompt_id: "?".into(),
                sample_a: "*".into(),
                sample_b: "*".into(),
                error: "the oracle returned no judgment".into(),
            });
        }
        if !a.allow_failures {
            report.report("eval", reporter);
            return Err(failures_error(&failures, n_items, &cache_path));
        }
        log::warn!("{} comparisons failed and are left out (--allow-failures); first: {}", report.failed_judgments, failures[0].error);
    }

    // Accuracy with the verifier, where the samples have an answer.
    let mut verify_errors = 0usize;
    let mut first_verify_error = String::new();
    let mut check = |text: &str, answer: Option<&str>| -> Option<bool> {
        let answer = answer.filter(|_| check_answers)?;
        match verifier.is_correct(text, answer) {
            Ok(b) => Some(b),
            Err(e) => {
                if verify_errors == 0 {
                    first_verify_error = format!("{e:#}");
                }
                verify_errors += 1;
                None
            }
        }
    };
    let mut rows = Vec::new();
    let met = |cs: &Option<Vec<dno_oracle::constraints::Constraint>>, text: &str| {
        cs.as_ref().map(|cs| dno_oracle::constraints::fraction(&dno_oracle::constraints::check_all(cs, text)))
    };
    for ((p, j), cs) in planned.iter().zip(&judged).zip(&parsed_constraints) {
        let Some(j) = j else { continue };
        let cand_correct = check(&p.cand.text, p.answer.as_deref());
        let base_correct = check(&p.base.text, p.answer.as_deref());
        let (cand_met, base_met) = (met(cs, &p.cand.text), met(cs, &p.base.text));
        let (cl, bl) = (p.cand.text.chars().count(), p.base.text.chars().count());
        rows.push(EvalRow {
            prompt_id: p.prompt_id.clone(),
            candidate_id: p.cand.id.clone(),
            baseline_id: p.base.id.clone(),
            p_candidate: j.p_a,
            p_candidate_first: j.p_ab,
            p_candidate_second: j.p_ba,
            candidate_len: cl as i64,
            baseline_len: bl as i64,
            candidate_correct: cand_correct,
            baseline_correct: base_correct,
            candidate_constraints: cand_met,
            baseline_constraints: base_met,
            judge: j.judge.clone(),
        });
    }
    if verify_errors > 0 {
        log::warn!("accuracy: {verify_errors} responses could not be checked (--verify {}): {first_verify_error}", a.verify);
    }
    let mut prov = Provenance::new("eval", config)?;
    prov.add_inputs(cand_reader.files())?;
    prov.add_inputs(&base_files)?;
    if let Some(sh) = shard {
        // A shard has no summary of its own: `dno merge` computes it over all shards, with these options.
        report.report("eval", reporter);
        let mut w = DatasetWriter::<EvalRow>::create(&a.out, &prov, a.force)?;
        w.write_all(rows)?;
        w.set_metadata(EVAL_OPTIONS_KEY, serde_json::to_string(opts_eval)?);
        w.set_metadata("dno.accounting", serde_json::to_string(&report)?);
        w.set_metadata(META_SHARD, ShardMeta::new(sh, shard_positions).to_json());
        let n = w.finish().with_context(|| format!("writing {}", a.out.display()))?;
        reporter.note(&format!("eval shard {sh}: {n} comparisons written to {}; `dno merge` of all shards gives the win-rate", a.out.display()));
        return Ok(Outcome::Written(n));
    }
    let comps: Vec<Comparison> = rows.iter().map(comparison).collect();
    let summary = crate::summarize(&comps, opts_eval).map_err(|e| anyhow!("eval summary: {e:#}"))?;
    report.first_position_win_rate = summary.first_position_win_rate;
    report.report("eval", reporter);

    let mut w = DatasetWriter::<EvalRow>::create(&a.out, &prov, a.force)?;
    w.write_all(rows)?;
    w.set_metadata(SUMMARY_KEY, serde_json::to_string(&summary)?);
    w.set_metadata(EVAL_OPTIONS_KEY, serde_json::to_string(opts_eval)?);
    w.set_metadata("dno.accounting", serde_json::to_string(&report)?);
    let n = w.finish().with_context(|| format!("writing {}", a.out.display()))?;
    for l in summary_lines(&summary, &a.out) {
        reporter.note(&l);
    }
    Ok(Outcome::Written(n))
}
