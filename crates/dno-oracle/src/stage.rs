//! The annotate stage over Parquet samples (`dno annotate`), and what `dno eval` shares with it:
//! the answer cache beside the output, the progress-reporting driver, run accounting and the
//! error for failed judgments.
//!
//! Candidates are grouped by prompt (in file order) into [`Item`]s for an [`Oracle`]. Every answer
//! is cached in `<out>.cache.jsonl` as soon as it arrives, so a rerun after a crash, a kill or
//! failed calls pays only for what is missing. Failed judgments are never turned into
//! preferences: by default any failure means no output and an error.

use crate::{Accounting, Cache, Candidate, Failure, Item, ItemResult, Oracle, Progress, RunOptions, VerifyMode};
use anyhow::{anyhow, bail, Context, Result};
use dno_data::{Dataset, DatasetReader, DatasetWriter, PreferenceRow, PromptOrder, Provenance, Reporter, SampleRow, Shard, ShardMeta, META_SHARD};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What `dno annotate` does (the oracle itself is built by the caller).
#[derive(Debug, Clone, Default)]
pub struct AnnotateOptions {
    /// Samples written by `dno sample` (files or shard directories).
    pub samples: Vec<PathBuf>,
    /// Output preferences Parquet file.
    pub out: PathBuf,
    /// Which pairs to judge, their seed, and the driver's limits.
    pub run: RunOptions,
    /// Answer cache (default: `<out>.cache.jsonl` beside the output).
    pub cache: Option<PathBuf>,
    /// Only estimate the cost (nothing is written).
    pub dry_run: bool,
    /// Write the successful judgments even when some failed.
    pub allow_failures: bool,
    /// Judge only this shard of the prompts.
    pub shard: Option<Shard>,
    /// Overwrite an existing output.
    pub force: bool,
}

/// How a stage run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A dry run: the cost estimate, one line for the user.
    DryRun(String),
    /// The output was written with this many rows.
    Written(u64),
}

/// `<out>.cache.jsonl`, beside the output.
pub fn default_cache_path(out: &Path) -> PathBuf {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    out.with_file_name(format!("{name}.cache.jsonl"))
}

/// The answer cache of a stage: `--cache` or `<out>.cache.jsonl`. The verifier needs none, and a
/// dry run opens it only when it already exists, so nothing is created.
pub fn stage_cache(oracle: &Oracle, cache: Option<&Path>, out: &Path, dry_run: bool) -> Result<(PathBuf, Option<Cache>)> {
    let path = cache.map(Path::to_path_buf).unwrap_or_else(|| default_cache_path(out));
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

    /// The two lines printed at the end of a run.
    pub fn lines(&self, what: &str) -> [String; 2] {
        let fp = self.first_position_win_rate.map(|p| format!(", first-position win-rate {:.1}%", 100.0 * p)).unwrap_or_default();
        [
            format!(
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
            ),
            format!("  {} prompts/items, {} judgments, {} failed judgments{fp}", self.items, self.judgments, self.failed_judgments),
        ]
    }

    /// Report [`RunAccounting::lines`].
    pub fn report(&self, what: &str, reporter: &mut dyn Reporter) {
        for l in self.lines(what) {
            reporter.note(&l);
        }
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

/// Run `oracle` over `items` on a tokio runtime, reporting progress to `reporter` and handing
/// each item's result to `sink` in input order.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    what: &str,
    oracle: &Oracle,
    items: impl IntoIterator<Item = Item>,
    n: usize,
    cache: Option<&Cache>,
    opts: &RunOptions,
    reporter: &mut dyn Reporter,
    sink: impl FnMut(ItemResult) -> Result<()>,
) -> Result<Accounting> {
    reporter.start(what, n as u64);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    let r = {
        let progress = |p: &Progress| {
            let status = format!(
                "{} judgments, {} failed, {} calls, {} cached answers, {:.0} s",
                p.judgments, p.failures, p.calls, p.cache_hits, p.elapsed_secs
            );
            reporter.progress(p.items_done as u64, &status);
        };
        rt.block_on(crate::run_with_sink(oracle, items, cache, opts, progress, sink))
    };
    reporter.finish();
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
        crate::constraints::parse(c).map_err(|e| anyhow!("{}: prompt '{}': column 'constraints': {e:#}", file.display(), s.prompt_id))?;
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

/// Run the annotate stage with `oracle`; `config` is recorded as the output's provenance
/// configuration.
pub fn annotate(a: &AnnotateOptions, oracle: &Oracle, config: &impl Serialize, reporter: &mut dyn Reporter) -> Result<Outcome> {
    // One writer per output and cache (a dry run writes nothing).
    let _lock = if a.dry_run { None } else { Some(dno_data::lock_output(&a.out)?) };
    if !a.dry_run {
        dno_data::check_output(&a.out, a.force)?;
    }
    let shard = a.shard;
    let reader = DatasetReader::open_for_shard(Dataset::Samples, &a.samples, shard)?;
    reader.validate()?;
    let constraints_oracle = matches!(oracle, Oracle::Verifier(v) if matches!(v.mode(), VerifyMode::Constraints));
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
    if let (Oracle::Verifier(_), Some(id), false) = (oracle, &missing_answer, constraints_oracle) {
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
    let opts = &a.run;
    let (cache_path, cache) = stage_cache(oracle, a.cache.as_deref(), &a.out, a.dry_run)?;

    if a.dry_run {
        let e = crate::estimate(oracle, items, cache.as_ref(), opts);
        if let Some(e) = read_error.take() {
            return Err(e);
        }
        return Ok(Outcome::DryRun(format!(
            "dry run ({}): {} prompts, {} pairs -> {} calls to make, {} already answered in {}; about {} prompt + {} completion tokens",
            oracle.name(),
            e.items,
            e.pairs,
            e.calls,
            e.cached_calls,
            cache_path.display(),
            e.prompt_tokens,
            e.completion_tokens
        )));
    }

    let n_items = scan.prompts;
    let mut failures: Vec<Failure> = Vec::new();
    let mut first = FirstPosition::default();
    // Rows stream into the temp file beside the output; it is renamed into place only when the
    // run succeeds, so a killed or failed run leaves only the cache behind.
    let mut prov = Provenance::new("annotate", config)?;
    prov.add_inputs(reader.files())?;
    let mut w = DatasetWriter::<PreferenceRow>::create(&a.out, &prov, a.force)?;
    let result = drive("annotate", oracle, items, n_items, cache.as_ref(), opts, reporter, |r| {
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
    let mut report = RunAccounting::new(oracle, n_items, &acc);
    report.judgments = n_rows;
    report.failed_judgments = failures.len();
    report.first_position_win_rate = first.rate();
    report.report("annotate", reporter);
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
    reporter.note(&format!("preferences: {n} written to {}{of}", a.out.display()));
    Ok(Outcome::Written(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verifier;
    use dno_data::Silent;
    use std::sync::Arc;

    fn sample(pid: &str, i: i32, response: &str, answer: &str) -> SampleRow {
        SampleRow {
            prompt_id: pid.into(),
            sample_id: format!("{pid}-{i}"),
            prompt: format!("q {pid}"),
            system: None,
            history: None,
            answer: Some(answer.into()),
            constraints: None,
            response: response.into(),
            source: "policy".into(),
            policy: "t".into(),
            sample_index: i,
            seed: 0,
            response_tokens: 1,
            finish_reason: "stop".into(),
            logprob: None,
            repetitive: false,
        }
    }

    #[test]
    fn cache_beside_the_output() {
        assert_eq!(default_cache_path(Path::new("run/iter-1/prefs.parquet")), PathBuf::from("run/iter-1/prefs.parquet.cache.jsonl"));
        let mut f = FirstPosition::default();
        assert_eq!(f.rate(), None);
        f.add(Some(1.0));
        f.add(None);
        f.add(Some(0.5));
        assert_eq!(f.rate(), Some(0.75));
    }

    #[test]
    fn failures_error_names_the_first_and_the_cache() {
        let f = Failure { prompt_id: "p".into(), sample_a: "a".into(), sample_b: "b".into(), error: "boom".into() };
        let e = failures_error(&[f], 10, Path::new("c.jsonl")).to_string();
        assert!(e.starts_with("1 of 10 judgments failed (first: prompt 'p' (a vs b): boom)") && e.contains("c.jsonl"), "{e}");
    }

    #[test]
    fn annotate_with_the_verifier_writes_every_pair_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (samples, out) = (dir.path().join("s.parquet"), dir.path().join("prefs.parquet"));
        let mut w = DatasetWriter::<SampleRow>::create(&samples, &Provenance::new("test", &()).unwrap(), false).unwrap();
        w.write_all(vec![sample("a", 0, "it is 4", "4"), sample("a", 1, "it is 5", "4"), sample("b", 0, "7", "7"), sample("b", 1, "so 7", "7")]).unwrap();
        w.finish().unwrap();
        let oracle = Oracle::Verifier(Arc::new(Verifier::new(VerifyMode::LastNumber)));
        let o = AnnotateOptions { samples: vec![samples], out: out.clone(), ..AnnotateOptions::default() };
        assert_eq!(annotate(&o, &oracle, &"cfg", &mut Silent).unwrap(), Outcome::Written(2));
        let rows = dno_data::read_validated::<PreferenceRow>(&[out.clone()]).unwrap().1;
        let got: Vec<(&str, &str, f64)> = rows.iter().map(|r| (r.sample_a.as_str(), r.sample_b.as_str(), r.p_a)).collect();
        assert_eq!(got, [("a-0", "a-1", 1.0), ("b-0", "b-1", 0.5)]);
        // A dry run only estimates.
        let dry = AnnotateOptions { dry_run: true, force: true, ..o };
        match annotate(&dry, &oracle, &"cfg", &mut Silent).unwrap() {
            Outcome::DryRun(line) => assert!(line.contains("2 prompts, 2 pairs"), "{line}"),
            other => panic!("{other:?}"),
        }
    }
}
