//! The annotation driver: runs an [`Oracle`] over a stream of [`Item`]s.
//!
//! * Items are pulled lazily from the iterator and at most `max_items_in_flight` are held at
//!   once (being judged, or judged and waiting for an earlier item to finish), so memory stays flat
//!   whatever the input size; HTTP concurrency itself is bounded by the client's semaphore.
//! * Results come out in a deterministic order — input order of items, then the order of
//!   [`select_pairs`] — whatever order the calls complete in.
//! * Every answer is looked up in / written to the [`Cache`] first, so a rerun (also after SIGKILL)
//!   pays only for what is missing; failures are reported as [`Failure`]s and never cached.
//! * The run stops with an error when the oracle's client has stopped (too many consecutive HTTP
//!   failures) or after `max_consecutive_failures` failures in a row in output order.

use crate::cache::{hash_parts, Cache};
use crate::client::{Accounting, Stopped};
use crate::command::{CommandOracle, Request};
use crate::judge::{p_from_scores, Judge, JudgeMode, OrderVerdict, ScoreVerdict};
use crate::pairs::{select_pairs, PairSpec};
use crate::verifier::Verifier;
use crate::{Failure, Item, Judgment};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Any of the oracles (cheap to clone).
#[derive(Clone)]
pub enum Oracle {
    Judge(Arc<Judge>),
    Verifier(Arc<Verifier>),
    Command(Arc<CommandOracle>),
}

impl Oracle {
    pub fn name(&self) -> String {
        match self {
            Oracle::Judge(j) => j.name().to_string(),
            Oracle::Verifier(v) => v.name().to_string(),
            Oracle::Command(c) => c.name().to_string(),
        }
    }
}

/// Driver options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pairs: PairSpec,
    /// Seed for `random:N` pair sampling.
    pub seed: u64,
    /// Items held at once (in flight or waiting to be emitted in order).
    pub max_items_in_flight: usize,
    /// Keep the judge's raw text in each [`Judgment`].
    pub keep_raw: bool,
    /// Abort after this many failures in a row (output order); 0 = never.
    pub max_consecutive_failures: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { pairs: PairSpec::All, seed: dno_math::rng::DEFAULT_SEED, max_items_in_flight: 256, keep_raw: true, max_consecutive_failures: 50 }
    }
}

/// Per-candidate score: the judge's score (score mode) or correctness 1.0/0.0 (verifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    pub prompt_id: String,
    pub sample_id: String,
    pub score: f64,
}

/// Everything produced for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    /// Position of the item in the input stream.
    pub index: usize,
    pub prompt_id: String,
    pub judgments: Vec<Judgment>,
    pub failures: Vec<Failure>,
    /// Score mode and verifier: one entry per candidate, in candidate order.
    pub scores: Vec<CandidateScore>,
}

/// Progress snapshot passed to the callback after every item.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub items_done: usize,
    pub judgments: usize,
    pub failures: usize,
    /// Oracle calls paid in this run so far (HTTP requests or command requests).
    pub calls: u64,
    pub cache_hits: u64,
    pub elapsed_secs: f64,
}

/// Collected output of [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    pub judgments: Vec<Judgment>,
    pub failures: Vec<Failure>,
    pub scores: Vec<CandidateScore>,
    pub accounting: Accounting,
}

/// Dry-run estimate (see [`estimate`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub items: usize,
    pub pairs: usize,
    /// Calls a run would make (cached answers excluded).
    pub calls: usize,
    /// Calls already answered in the cache.
    pub cached_calls: usize,
    /// Approximate tokens (chars/4) of the prompts of `calls`.
    pub prompt_tokens: u64,
    /// Rough completion tokens for `calls` (pairwise ≈120 per call, score ≈140 per candidate).
    pub completion_tokens: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    cache_hits: AtomicU64,
}

/// Why one answer is missing.
enum CallErr {
    /// Abort the run (client stopped, cache unwritable).
    Fatal(String),
    /// Record a Failure.
    Failed(String),
}

fn classify(e: anyhow::Error) -> CallErr {
    if e.downcast_ref::<Stopped>().is_some() {
        CallErr::Fatal(format!("{e:#}"))
    } else {
        CallErr::Failed(format!("{e:#}"))
    }
}

fn pair_key(fp: &str, prompt: &str, first: &str, second: &str) -> String {
    hash_parts(&[fp, "pair", prompt, first, second])
}

fn score_key(fp: &str, item: &Item, order: &[usize]) -> String {
    let mut parts: Vec<&str> = vec![fp, "score", &item.prompt];
    parts.extend(order.iter().map(|&i| item.candidates[i].text.as_str()));
    hash_parts(&parts)
}

fn command_key(fp: &str, item: &Item, a: usize, b: usize) -> String {
    hash_parts(&[
        fp,
        "cmd",
        &item.prompt,
        &item.candidates[a].text,
        &item.candidates[b].text,
        item.answer.as_deref().unwrap_or("\u{0}none"),
    ])
}

fn cached<T: for<'de> Deserialize<'de>>(cache: Option<&Cache>, key: &str) -> Option<T> {
    cache.and_then(|c| c.get(key)).and_then(|v| serde_json::from_value(v).ok())
}

fn store<T: Serialize>(cache: Option<&Cache>, key: &str, v: &T) -> std::result::Result<(), CallErr> {
    if let Some(c) = cache {
        let value = serde_json::to_value(v).map_err(|e| CallErr::Fatal(format!("serialising a cache entry: {e}")))?;
        c.put(key, &value).map_err(|e| CallErr::Fatal(format!("{e:#}")))?;
    }
    Ok(())
}

fn failure(item: &Item, a: &str, b: &str, error: String) -> Failure {
    Failure { prompt_id: item.prompt_id.clone(), sample_a: a.to_string(), sample_b: b.to_string(), error }
}

/// Runs `oracle` over `items` and collects everything. See [`run_with_sink`].
pub async fn run<I>(
    oracle: &Oracle,
    items: I,
    cache: Option<&Cache>,
    opts: &RunOptions,
    progress: impl FnMut(&Progress),
) -> Result<RunOutput>
where
    I: IntoIterator<Item = Item>,
{
    let mut out = RunOutput::default();
    let acc = run_with_sink(oracle, items, cache, opts, progress, |r| {
        out.judgments.extend(r.judgments);
        out.failures.extend(r.failures);
        out.scores.extend(r.scores);
        Ok(())
    })
    .await?;
    out.accounting = acc;
    Ok(out)
}

/// Runs `oracle` over `items`, handing each [`ItemResult`] to `sink` in input order as soon as it
/// and all earlier items are done (write them out incrementally to keep memory flat).
/// Returns the run's accounting. Needs a multi-thread or current-thread tokio runtime.
pub async fn run_with_sink<I>(
    oracle: &Oracle,
    items: I,
    cache: Option<&Cache>,
    opts: &RunOptions,
    mut progress: impl FnMut(&Progress),
    mut sink: impl FnMut(ItemResult) -> Result<()>,
) -> Result<Accounting>
where
    I: IntoIterator<Item = Item>,
{
    let start = Instant::now();
    let client_before = match oracle {
        Oracle::Judge(j) => Some(j.client().accounting()),
        _ => None,
    };
    let counters = Arc::new(Counters::default());
    let window = opts.max_items_in_flight.max(1);
    let mut items = items.into_iter().enumerate();
    let mut exhausted = false;
    let mut next_idx = 0usize;
    let mut next_emit = 0usize;
    let mut tasks: JoinSet<(usize, std::result::Result<ItemResult, String>)> = JoinSet::new();
    let mut done: BTreeMap<usize, ItemResult> = BTreeMap::new();
    let mut prog = Progress::default();
    let mut consecutive = 0usize;
    let calls_now = |counters: &Counters| match (oracle, &client_before) {
        (Oracle::Judge(j), Some(b)) => j.client().accounting().calls - b.calls,
        _ => counters.calls.load(Ordering::Relaxed),
    };

    let result: Result<()> = async {
        loop {
            while !exhausted && next_idx - next_emit < window {
                match items.next() {
                    Some((i, item)) => {
                        let (o, c, opts, counters) = (oracle.clone(), cache.cloned(), opts.clone(), counters.clone());
                        tasks.spawn(async move { (i, process_item(i, &o, item, c.as_ref(), &opts, &counters).await) });
                        next_idx += 1;
                    }
                    None => exhausted = true,
                }
            }
            if exhausted && next_emit == next_idx {
                return Ok(());
            }
            let joined = tasks.join_next().await.context("annotate: task set unexpectedly empty")?;
            let (i, r) = joined.map_err(|e| anyhow!("annotate: an item task failed: {e}"))?;
            // A fatal error ends the run at once (answers so far are in the cache).
            let r = r.map_err(|e| anyhow!(e))?;
            done.insert(i, r);
            while let Some(r) = done.remove(&next_emit) {
                prog.items_done += 1;
                prog.judgments += r.judgments.len();
                prog.failures += r.failures.len();
                if r.failures.is_empty() {
                    if !r.judgments.is_empty() {
                        consecutive = 0;
                    }
                } else {
                    consecutive = if r.judgments.is_empty() { consecutive + r.failures.len() } else { r.failures.len() };
                }
                let last_err = r.failures.last().map(|f| f.error.clone());
                sink(r)?;
                next_emit += 1;
                prog.calls = calls_now(&counters);
                prog.cache_hits = counters.cache_hits.load(Ordering::Relaxed);
                prog.elapsed_secs = start.elapsed().as_secs_f64();
                progress(&prog);
                if opts.max_consecutive_failures > 0 && consecutive >= opts.max_consecutive_failures {
                    bail!(
                        "stopping: {consecutive} consecutive oracle failures; last error: {}",
                        last_err.unwrap_or_default()
                    );
                }
            }
        }
    }
    .await;
    tasks.abort_all();
    if let Some(c) = cache {
        c.sync()?;
    }
    result?;
    let mut acc = match (oracle, &client_before) {
        (Oracle::Judge(j), Some(b)) => j.client().accounting().delta(b),
        _ => Accounting { calls: counters.calls.load(Ordering::Relaxed), ..Default::default() },
    };
    acc.cache_hits = counters.cache_hits.load(Ordering::Relaxed);
    acc.wall_secs = start.elapsed().as_secs_f64();
    Ok(acc)
}

/// Judges one item. `Err` only for run-fatal conditions.
async fn process_item(
    index: usize,
    oracle: &Oracle,
    item: Item,
    cache: Option<&Cache>,
    opts: &RunOptions,
    counters: &Arc<Counters>,
) -> std::result::Result<ItemResult, String> {
    let pairs = select_pairs(&item, &opts.pairs, opts.seed);
    let mut res = ItemResult {
        index,
        prompt_id: item.prompt_id.clone(),
        judgments: Vec::new(),
        failures: Vec::new(),
        scores: Vec::new(),
    };
    match oracle {
        Oracle::Verifier(v) => match v.scores(&item) {
            Ok(sc) => {
                res.judgments = v.judge_item(&item, &pairs).map_err(|e| format!("{e:#}"))?;
                res.scores = scores_of(&item, sc.iter().map(|(s, _)| *s));
            }
            Err(e) => res.failures.push(failure(&item, "*", "*", format!("{e:#}"))),
        },
        Oracle::Judge(j) if j.mode() == JudgeMode::Pairwise => pairwise(j, item, cache, opts, counters, &pairs, &mut res).await?,
        Oracle::Judge(j) => score(j, item, cache, opts, counters, &pairs, &mut res).await?,
        Oracle::Command(c) => command(c, item, cache, counters, &pairs, &mut res).await?,
    }
    Ok(res)
}

fn scores_of(item: &Item, s: impl Iterator<Item = f64>) -> Vec<CandidateScore> {
    item.candidates
        .iter()
        .zip(s)
        .map(|(c, score)| CandidateScore { prompt_id: item.prompt_id.clone(), sample_id: c.sample_id.clone(), score })
        .collect()
}

async fn pairwise(
    judge: &Arc<Judge>,
    item: Item,
    cache: Option<&Cache>,
    opts: &RunOptions,
    counters: &Arc<Counters>,
    pairs: &[(usize, usize)],
    res: &mut ItemResult,
) -> std::result::Result<(), String> {
    let fp = judge.fingerprint().to_string();
    let item = Arc::new(item);
    // Unique (first, second) orders needed by the selected pairs.
    let mut answers: HashMap<String, std::result::Result<(OrderVerdict, bool), String>> = HashMap::new();
    let mut tasks = JoinSet::new();
    for &(a, b) in pairs {
        for (f, s) in [(a, b), (b, a)] {
            let key = pair_key(&fp, &item.prompt, &item.candidates[f].text, &item.candidates[s].text);
            if answers.contains_key(&key) {
                continue;
            }
            if let Some(v) = cached::<OrderVerdict>(cache, &key) {
                counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                answers.insert(key, Ok((v, true)));
                continue;
            }
            answers.insert(key.clone(), Err("pending".into()));
            let (judge, item, cache, counters) = (judge.clone(), item.clone(), cache.cloned(), counters.clone());
            tasks.spawn(async move {
                counters.calls.fetch_add(1, Ordering::Relaxed);
                let r = match judge.judge_order(&item, &item.candidates[f].text, &item.candidates[s].text).await {
                    Ok(v) => store(cache.as_ref(), &key, &v).map(|_| v),
                    Err(e) => Err(classify(e)),
                };
                (key, r)
            });
        }
    }
    while let Some(j) = tasks.join_next().await {
        let (key, r) = j.map_err(|e| format!("judge task failed: {e}"))?;
        match r {
            Ok(v) => {
                answers.insert(key, Ok((v, false)));
            }
            Err(CallErr::Fatal(m)) => return Err(m),
            Err(CallErr::Failed(m)) => {
                answers.insert(key, Err(m));
            }
        }
    }
    for &(a, b) in pairs {
        let (ca, cb) = (&item.candidates[a], &item.candidates[b]);
        let ab = &answers[&pair_key(&fp, &item.prompt, &ca.text, &cb.text)];
        let ba = &answers[&pair_key(&fp, &item.prompt, &cb.text, &ca.text)];
        match (ab, ba) {
            (Ok((vab, cab)), Ok((vba, cba))) => {
                let p_ab = vab.p_first;
                let p_ba = 1.0 - vba.p_first;
                res.judgments.push(Judgment {
                    prompt_id: item.prompt_id.clone(),
                    sample_a: ca.sample_id.clone(),
                    sample_b: cb.sample_id.clone(),
                    p_a: 0.5 * (p_ab + p_ba),
                    judge: judge.name().to_string(),
                    p_ab: Some(p_ab),
                    p_ba: Some(p_ba),
                    p_first: Some(0.5 * (vab.p_first + vba.p_first)),
                    score_a: None,
                    score_b: None,
                    raw: opts.keep_raw.then(|| format!("[{} shown first]\n{}\n[{} shown first]\n{}", ca.sample_id, vab.raw, cb.sample_id, vba.raw)),
                    cached: *cab && *cba,
                });
            }
            (x, y) => {
                let mut errs = Vec::new();
                if let Err(e) = x {
                    errs.push(format!("{} shown first: {e}", ca.sample_id));
                }
                if let Err(e) = y {
                    errs.push(format!("{} shown first: {e}", cb.sample_id));
                }
                res.failures.push(failure(&item, &ca.sample_id, &cb.sample_id, errs.join("; ")));
            }
        }
    }
    Ok(())
}

async fn score(
    judge: &Arc<Judge>,
    item: Item,
    cache: Option<&Cache>,
    opts: &RunOptions,
    counters: &Arc<Counters>,
    pairs: &[(usize, usize)],
    res: &mut ItemResult,
) -> std::result::Result<(), String> {
    if item.candidates.is_empty() {
        return Ok(());
    }
    let order = judge.score_order(&item);
    let key = score_key(judge.fingerprint(), &item, &order);
    let (verdict, was_cached) = match cached::<ScoreVerdict>(cache, &key).filter(|v| v.scores.len() == order.len()) {
        Some(v) => {
            counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            (v, true)
        }
        None => {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            match judge.score_item(&item, &order).await {
                Ok(v) => {
                    if let Err(CallErr::Fatal(m)) = store(cache, &key, &v) {
                        return Err(m);
                    }
                    (v, false)
                }
                Err(e) => match classify(e) {
                    CallErr::Fatal(m) => return Err(m),
                    CallErr::Failed(m) => {
                        res.failures.push(failure(&item, "*", "*", m));
                        return Ok(());
                    }
                },
            }
        }
    };
    let mut by_candidate = vec![0.0; order.len()];
    for (pos, &ci) in order.iter().enumerate() {
        by_candidate[ci] = verdict.scores[pos];
    }
    res.scores = scores_of(&item, by_candidate.iter().copied());
    for &(a, b) in pairs {
        let (sa, sb) = (by_candidate[a], by_candidate[b]);
        res.judgments.push(Judgment {
            prompt_id: item.prompt_id.clone(),
            sample_a: item.candidates[a].sample_id.clone(),
            sample_b: item.candidates[b].sample_id.clone(),
            p_a: p_from_scores(sa, sb),
            judge: judge.name().to_string(),
            p_ab: None,
            p_ba: None,
            p_first: None,
            score_a: Some(sa),
            score_b: Some(sb),
            raw: opts.keep_raw.then(|| verdict.raw.clone()),
            cached: was_cached,
        });
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct CommandAnswer {
    p_a: f64,
}

async fn command(
    oracle: &Arc<CommandOracle>,
    item: Item,
    cache: Option<&Cache>,
    counters: &Arc<Counters>,
    pairs: &[(usize, usize)],
    res: &mut ItemResult,
) -> std::result::Result<(), String> {
    let fp = oracle.fingerprint().to_string();
    let mut answers: Vec<Option<std::result::Result<(f64, bool), String>>> = vec![None; pairs.len()];
    let mut tasks = JoinSet::new();
    for (pi, &(a, b)) in pairs.iter().enumerate() {
        let key = command_key(&fp, &item, a, b);
        if let Some(v) = cached::<CommandAnswer>(cache, &key) {
            counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            answers[pi] = Some(Ok((v.p_a, true)));
            continue;
        }
        let req = Request {
            prompt_id: item.prompt_id.clone(),
            prompt: item.prompt.clone(),
            sample_a: item.candidates[a].sample_id.clone(),
            response_a: item.candidates[a].text.clone(),
            sample_b: item.candidates[b].sample_id.clone(),
            response_b: item.candidates[b].text.clone(),
            answer: item.answer.clone(),
        };
        let (oracle, cache, counters) = (oracle.clone(), cache.cloned(), counters.clone());
        tasks.spawn(async move {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            let r = match oracle.ask(req).await {
                Ok(p) => store(cache.as_ref(), &key, &CommandAnswer { p_a: p }).map(|_| p),
                Err(e) => Err(CallErr::Failed(format!("{e:#}"))),
            };
            (pi, r)
        });
    }
    while let Some(j) = tasks.join_next().await {
        let (pi, r) = j.map_err(|e| format!("command task failed: {e}"))?;
        answers[pi] = Some(match r {
            Ok(p) => Ok((p, false)),
            Err(CallErr::Fatal(m)) => return Err(m),
            Err(CallErr::Failed(m)) => Err(m),
        });
    }
    for (pi, &(a, b)) in pairs.iter().enumerate() {
        let (ca, cb) = (&item.candidates[a], &item.candidates[b]);
        match answers[pi].take() {
            Some(Ok((p, was_cached))) => res.judgments.push(Judgment {
                prompt_id: item.prompt_id.clone(),
                sample_a: ca.sample_id.clone(),
                sample_b: cb.sample_id.clone(),
                p_a: p,
                judge: oracle.name().to_string(),
                p_ab: None,
                p_ba: None,
                p_first: None,
                score_a: None,
                score_b: None,
                raw: None,
                cached: was_cached,
            }),
            Some(Err(e)) => res.failures.push(failure(&item, &ca.sample_id, &cb.sample_id, e)),
            None => res.failures.push(failure(&item, &ca.sample_id, &cb.sample_id, "no answer".into())),
        }
    }
    Ok(())
}

/// [`run`] for synchronous callers: builds a multi-thread tokio runtime and blocks on it.
pub fn run_blocking<I>(
    oracle: &Oracle,
    items: I,
    cache: Option<&Cache>,
    opts: &RunOptions,
    progress: impl FnMut(&Progress),
) -> Result<RunOutput>
where
    I: IntoIterator<Item = Item>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("annotate: starting the tokio runtime")?;
    rt.block_on(run(oracle, items, cache, opts, progress))
}

/// Dry run: how many calls and roughly how many tokens a run would cost, without calling anything.
/// Cached answers (when `cache` is given) are counted separately.
pub fn estimate<I>(oracle: &Oracle, items: I, cache: Option<&Cache>, opts: &RunOptions) -> Estimate
where
    I: IntoIterator,
    I::Item: Borrow<Item>,
{
    let mut e = Estimate::default();
    for it in items {
        let item = it.borrow();
        let pairs = select_pairs(item, &opts.pairs, opts.seed);
        e.items += 1;
        e.pairs += pairs.len();
        match oracle {
            Oracle::Verifier(_) => {}
            Oracle::Command(c) => {
                for &(a, b) in &pairs {
                    if cache.is_some_and(|ca| ca.contains(&command_key(c.fingerprint(), item, a, b))) {
                        e.cached_calls += 1;
                    } else {
                        e.calls += 1;
                    }
                }
            }
            Oracle::Judge(j) if j.mode() == JudgeMode::Pairwise => {
                let mut seen = std::collections::HashSet::new();
                for &(a, b) in &pairs {
                    for (f, s) in [(a, b), (b, a)] {
                        let (tf, ts) = (&item.candidates[f].text, &item.candidates[s].text);
                        let key = pair_key(j.fingerprint(), &item.prompt, tf, ts);
                        if !seen.insert(key.clone()) {
                            continue;
                        }
                        if cache.is_some_and(|c| c.contains(&key)) {
                            e.cached_calls += 1;
                        } else {
                            e.calls += 1;
                            e.prompt_tokens += (j.render_pairwise(item, tf, ts).len() / 4) as u64;
                            e.completion_tokens += 120;
                        }
                    }
                }
            }
            Oracle::Judge(j) => {
                if item.candidates.is_empty() {
                    continue;
                }
                let order = j.score_order(item);
                if cache.is_some_and(|c| c.contains(&score_key(j.fingerprint(), item, &order))) {
                    e.cached_calls += 1;
                } else {
                    e.calls += 1;
                    e.prompt_tokens += (j.render_score(item, &order).len() / 4) as u64;
                    e.completion_tokens += 10 + 140 * order.len() as u64;
                }
            }
        }
    }
    e
}
