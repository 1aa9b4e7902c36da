//! Batched sampling with a KV cache and continuous batching.
//!
//! Prompts are prefilled in batches (right-padded), each once for all of its K samples. Up to
//! `max_batch` sample rows decode together; when one finishes, the next waiting sample takes its
//! slot in the same step, so the batch stays full until the last prompts (see [`decode`]). Every
//! sample row owns an RNG seeded from the caller's u64, so which tokens a sample draws does not
//! depend on the other rows (up to floating-point differences from batched matmuls).
//!
//! `token_logprobs[i]` is log p(token_i | prefix) under the model's *untempered* distribution
//! (temperature 1, no top-k/top-p/min-p truncation), so their sum equals [`crate::score::score`]
//! of the same (prompt, response) pair.
//!
//! Truncation order: temperature, then top-k, then top-p, then min-p; temperature 0 is greedy.

use std::collections::{HashMap, VecDeque};

use anyhow::{bail, Result};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::model::{like, to_vec_f32, KvCache};
use crate::LoadedModel;

/// Prompt tokens plus one seed per sample (K = `seeds.len()`).
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub seeds: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 0.0 = off.
    pub min_p: f32,
    pub max_new_tokens: usize,
    /// Generation stops once the decoded text contains one of these (text is cut before it).
    pub stop: Vec<String>,
    /// Upper bound on rows decoded together (prompts are never split across batches).
    pub max_batch: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.95,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 512,
            stop: vec![],
            max_batch: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS id was sampled (it is the last entry of `tokens`).
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// A stop string appeared in the text.
    StopString,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Sampled ids, including a final EOS id when `finish_reason == Stop`.
    pub tokens: Vec<u32>,
    /// Decoded text without special tokens, cut before a matched stop string.
    pub text: String,
    /// log p(token) at temperature 1, one per entry of `tokens`.
    pub token_logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// The sampling generator: dno-math's SplitMix64, one per sample row.
pub use dno_math::SplitMix64 as Rng;

/// log-softmax value of `logits[idx]`.
pub fn logprob_of(logits: &[f32], idx: usize) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut w = Vec::new();
    exp_weights(logits, max, 1.0, &mut w);
    let lse = w.iter().map(|&x| x as f64).sum::<f64>().ln() as f32 + max;
    logits[idx] - lse
}

/// `out[i] = exp((logits[i] − max) · inv_t)`, every exponent ≤ 0, with [`exp_nonpositive`] over
/// the whole row at once: the compiler vectorises the loop (AVX-512 where the CPU has it, picked at
/// run time), where libm's `expf` is a scalar call per element. The sampler needs these weights
/// for all 49k-262k vocabulary entries of every row at every step.
pub fn exp_weights(logits: &[f32], max: f32, inv_t: f32, out: &mut Vec<f32>) {
    out.clear();
    out.resize(logits.len(), 0.0);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { exp_weights_avx512(logits, max, inv_t, out) };
        return;
    }
    exp_weights_plain(logits, max, inv_t, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_weights_avx512(logits: &[f32], max: f32, inv_t: f32, out: &mut [f32]) {
    exp_weights_plain(logits, max, inv_t, out)
}

#[inline(always)]
fn exp_weights_plain(logits: &[f32], max: f32, inv_t: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = exp_nonpositive((x - max) * inv_t);
    }
}

/// e^x for x ≤ 0 (NaN-free inputs), relative error below 3e-7 (2 ulp): x = n·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite, ln2 split in two), e^r by its degree-7 Taylor polynomial (remainder
/// < 2e-8 relative), times 2^n built in the exponent bits; 0 below −87 (where f32 would go
/// subnormal: a weight under 1e-38 of the largest never changes a draw). Branch-free so that a
/// loop over it vectorises.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 to 16 bits: n·LN2_HI is exact for |n| < 2^8
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer (ties to even)
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let y = p * scale;
    if x <= -87.0 {
        0.0
    } else {
        y
    }
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

/// Draws one token id from `logits` under `p` (one draw from `rng` unless greedy).
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> usize {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    sample_token_at(logits, p, rng.next_f64())
}

/// [`sample_token`] with its uniform draw `u` ∈ [0, 1) given: the candidates (after truncation,
/// in descending order of probability whenever top-k or top-p truncates, else in id order) are
/// walked until their cumulative weight passes `u` × their total.
pub fn sample_token_at(logits: &[f32], p: &SamplingParams, u: f64) -> usize {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    let inv_t = 1.0 / p.temperature;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    // Unnormalised probabilities at the sampling temperature.
    let mut w = Vec::new();
    exp_weights(logits, max, inv_t, &mut w);
    let mut cand: Vec<(usize, f32)> = w.into_iter().enumerate().filter(|&(_, w)| w > 0.0).collect();
    let desc = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, desc);
        cand.truncate(p.top_k);
    }
    // Walked in descending order whenever a truncation applies (top-p below sorts its own head).
    if p.top_k > 0 && p.top_p >= 1.0 {
        cand.sort_by(desc);
    }
    if p.top_p < 1.0 {
        let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
        // Sort only the head when it already holds top_p of the mass.
        let mut head = 256.min(cand.len());
        loop {
            if head < cand.len() {
                cand.select_nth_unstable_by(head - 1, desc);
            }
            cand[..head].sort_by(desc);
            let mut acc = 0.0f64;
            let mut keep = None;
            for (i, c) in cand[..head].iter().enumerate() {
                acc += c.1 as f64;
                if acc >= p.top_p as f64 * total {
                    keep = Some(i + 1);
                    break;
                }
            }
            match keep {
                Some(k) => {
                    cand.truncate(k);
                    break;
                }
                None if head == cand.len() => break,
                None => head = (head * 4).min(cand.len()),
            }
        }
    }
    if p.min_p > 0.0 {
        let pmax = cand.iter().map(|c| c.1).fold(0.0f32, f32::max);
        cand.retain(|c| c.1 >= p.min_p * pmax);
    }
    let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
    let mut u = u * total;
    for c in &cand {
        u -= c.1 as f64;
        if u < 0.0 {
            return c.0;
        }
    }
    cand.last().map(|c| c.0).unwrap_or_else(|| argmax(logits))
}

/// Candidates per row the device sampler ranks when top-p truncates without top-k: the top-p
/// set of almost every step lies inside them; a row whose set does not is drawn on the host.
const DEVICE_HEAD: usize = 256;

/// One token per row of `logits` `[B, V]`, drawn on the logits' device under `p` with the
/// same rule as [`sample_token_at`] (`uniforms[r]` is row r's draw; unused when greedy): the
/// device ranks the head by top-k (burn's one-pass reduction on CubeCL backends), applies
/// top-k, top-p and min-p there and picks each row's token, so one `[B, 3]` read (token id,
/// its untempered log-prob, a flag) comes back per step instead of `B × V` logits. A flagged
/// row (its top-p set reaches past the [`DEVICE_HEAD`] most likely tokens) reads its own logits
/// back and is drawn by [`sample_token_at`]. The draw sums in f32 where the host sums in f64,
/// so a draw within ~1e-6 of a candidate boundary can pick its neighbour.
pub fn sample_on_device(logits: Tensor<2>, p: &SamplingParams, uniforms: &[f64]) -> Result<Vec<(usize, f32)>> {
    let [b, v] = logits.dims();
    let device = logits.device();
    let x = like(logits, DType::F32);
    let (m, argmax) = x.clone().max_dim_with_indices(1);
    let lse = m.clone() + (x.clone() - m.clone()).exp().sum_dim(1).log();
    let read = |t: Tensor<2>, cols: usize| -> Result<Vec<Vec<f32>>> { Ok(to_vec_f32(t)?.chunks(cols).map(<[f32]>::to_vec).collect()) };
    if p.temperature <= 0.0 {
        let out = read(Tensor::cat(vec![argmax.float(), m - lse], 1), 2)?;
        return Ok(out.iter().map(|r| (r[0] as usize, r[1])).collect());
    }
    let inv_t = 1.0 / p.temperature;
    let u: Vec<f32> = uniforms.iter().map(|&u| u as f32).collect();
    let u = Tensor::<1>::from_data(TensorData::new(u, [b]), (&device, DType::F32)).reshape([b, 1]);
    // Candidates in the order the host walks them: descending when top-k or top-p truncates.
    let ranked = p.top_k > 0 || p.top_p < 1.0;
    let (cand, ids) = if ranked {
        let h = if p.top_k > 0 { p.top_k } else { DEVICE_HEAD }.min(v);
        let (vals, ids) = x.clone().topk_with_indices(h, 1);
        (vals, Some(ids))
    } else {
        (x.clone(), None)
    };
    let c = cand.dims()[1];
    let w = (cand.clone() - m.clone()).mul_scalar(inv_t).exp();
    let mut keep = w.clone().greater_elem(0.0);
    let mut short = Tensor::<2>::zeros([b, 1], (&device, DType::F32));
    if p.top_p < 1.0 {
        // top-p's total: the top-k set's mass, or the whole vocabulary's.
        let total = if p.top_k > 0 { w.clone().sum_dim(1) } else { (x.clone() - m).mul_scalar(inv_t).exp().sum_dim(1) };
        let bound = total.mul_scalar(p.top_p);
        let cum = w.clone().cumsum(1);
        // Kept while the mass before a candidate is below the bound (the host's prefix rule).
        keep = keep.bool_and((cum.clone() - w.clone()).lower(bound.clone().expand([b, c])));
        if p.top_k == 0 && c < v {
            short = cum.narrow(1, c - 1, 1).lower(bound).float();
        }
    }
    if p.min_p > 0.0 {
        // The most likely candidate has weight 1 (its logit is the max).
        keep = keep.bool_and(w.clone().greater_equal_elem(p.min_p));
    }
    let kept = w * keep.clone().float();
    let total = kept.clone().sum_dim(1);
    let before = kept.cumsum(1).lower_equal((u * total).expand([b, c])).int().sum_dim(1);
    // The kept candidates are a prefix when ranked; past the last one (rounding), take the last.
    let last = if ranked {
        keep.int().sum_dim(1).sub_scalar(1)
    } else {
        (Tensor::<1, Int>::arange(0..c as i64, &device).reshape([1, c]).expand([b, c]) * keep.int()).max_dim(1)
    };
    let pos = before.clone().mask_where(before.greater(last.clone()), last);
    let token = match ids {
        Some(ids) => ids.gather(1, pos.clone()),
        None => pos.clone(),
    };
    let lp = cand.gather(1, pos) - lse;
    let out = read(Tensor::cat(vec![token.float(), lp, short], 1), 3)?;
    let mut picked: Vec<(usize, f32)> = out.iter().map(|r| (r[0] as usize, r[1])).collect();
    for (r, row) in out.iter().enumerate() {
        if row[2] > 0.5 {
            let l = to_vec_f32(x.clone().narrow(0, r, 1))?;
            let tok = sample_token_at(&l, p, uniforms[r]);
            picked[r] = (tok, logprob_of(&l, tok));
        }
    }
    Ok(picked)
}

/// Whether decode steps draw on the device ([`sample_on_device`]): on GPU backends. On the CPU
/// the logits are already in host memory, and the host sampler's partial selection is faster
/// than burn-flex's top-k, which sorts the whole vocabulary.
fn samples_on_device(device: &Device) -> bool {
    device.clone().inner() != Device::flex()
}

struct Row {
    req: usize,
    sample: usize,
    prompt_len: usize,
    /// Cache slots before this row's first prompt token (masked).
    left_pad: usize,
    rng: Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    text: String,
    finish: Option<FinishReason>,
}

impl Row {
    /// Appends a sampled token and decides whether the row is finished.
    fn push(&mut self, lm: &LoadedModel, p: &SamplingParams, tok: u32, lp: f32) -> Result<()> {
        self.tokens.push(tok);
        self.logprobs.push(lp);
        if lm.tokenizer.eos_ids.contains(&tok) {
            self.finish = Some(FinishReason::Stop);
        } else if !p.stop.is_empty() {
            let text = lm.tokenizer.decode(&self.tokens, true)?;
            if let Some(cut) = p.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                self.text = text[..cut].to_string();
                self.finish = Some(FinishReason::StopString);
                return Ok(());
            }
        }
        if self.finish.is_none() && self.tokens.len() >= p.max_new_tokens {
            self.finish = Some(FinishReason::Length);
        }
        if self.finish.is_some() && self.finish != Some(FinishReason::StopString) {
            self.text = lm.tokenizer.decode(&self.tokens, true)?;
        }
        Ok(())
    }

    fn into_generation(self) -> Generation {
        Generation {
            tokens: self.tokens,
            text: self.text,
            token_logprobs: self.logprobs,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        }
    }
}

/// Samples `seeds.len()` completions for every request. `progress(n)` is called as `n` more
/// samples finish. Returns one `Vec<Generation>` per request, in request order.
pub fn generate(
    lm: &LoadedModel,
    reqs: &[GenRequest],
    params: &SamplingParams,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<Generation>>> {
    let mut out: Vec<Vec<Generation>> = vec![Vec::new(); reqs.len()];
    generate_each(lm, reqs, params, |i, gens| {
        progress(gens.len());
        out[i] = gens;
        Ok(())
    })?;
    Ok(out)
}

/// Like [`generate`], but streams: `on_done(i, gens)` is called once per request `i`, as soon as
/// all of its samples have finished (requests finish in no fixed order). An error from `on_done`
/// stops generation and is returned.
pub fn generate_each(
    lm: &LoadedModel,
    reqs: &[GenRequest],
    params: &SamplingParams,
    mut on_done: impl FnMut(usize, Vec<Generation>) -> Result<()>,
) -> Result<()> {
    let vocab = lm.model.vocab_size();
    for (i, r) in reqs.iter().enumerate() {
        if r.prompt.is_empty() {
            bail!("request {i}: empty prompt");
        }
        if let Some(&t) = r.prompt.iter().find(|&&t| t as usize >= vocab) {
            bail!("request {i}: token id {t} outside the vocabulary ({vocab})");
        }
    }
    if params.max_new_tokens == 0 {
        let empty = Generation { tokens: vec![], text: String::new(), token_logprobs: vec![], finish_reason: FinishReason::Length };
        for (i, r) in reqs.iter().enumerate() {
            on_done(i, vec![empty.clone(); r.seeds.len()])?;
        }
        return Ok(());
    }
    for i in (0..reqs.len()).filter(|&i| reqs[i].seeds.is_empty()) {
        on_done(i, vec![])?;
    }
    let mut pending: Vec<Vec<Option<Generation>>> = reqs.iter().map(|r| vec![None; r.seeds.len()]).collect();
    let mut left: Vec<usize> = reqs.iter().map(|r| r.seeds.len()).collect();
    decode(lm, reqs, params, &mut |row: Row| {
        let (i, s) = (row.req, row.sample);
        pending[i][s] = Some(row.into_generation());
        left[i] -= 1;
        if left[i] == 0 {
            let gens = std::mem::take(&mut pending[i]).into_iter().map(|g| g.expect("every sample of a finished request")).collect();
            on_done(i, gens)?;
        }
        Ok(())
    })
}

/// A prompt prefilled once for all of its sample rows: its keys and values per layer
/// (`[1, n_kv_heads, prompt_len, head_dim]`) and the logits of its last position. Dropped when the
/// last of its rows has entered the batch.
struct Prefilled {
    kv: Vec<(Tensor<4>, Tensor<4>)>,
    logits: Vec<f32>,
    waiting: usize,
}

/// Prompts prefilled together: right-padded to the longest, so every prompt sits at positions
/// `0..len` of its row and the causal mask alone keeps the padding out of sight.
fn prefill(lm: &LoadedModel, prompts: &[&[u32]]) -> Result<Vec<(Vec<(Tensor<4>, Tensor<4>)>, Vec<f32>)>> {
    let model = &lm.model;
    let device = model.device();
    let n = prompts.len();
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut ids = vec![0i64; n * width];
    for (i, p) in prompts.iter().enumerate() {
        for (j, &t) in p.iter().enumerate() {
            ids[i * width + j] = t as i64;
        }
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, width]), &device);
    let mut cache = KvCache::new(model.layers.len());
    let hidden = model.forward_cached(tokens, &vec![0; n], &vec![0; n], &mut cache);
    let d = hidden.dims()[2];
    let last: Vec<i64> = prompts.iter().enumerate().map(|(i, p)| (i * width + p.len() - 1) as i64).collect();
    let last = Tensor::<1, Int>::from_data(TensorData::new(last, [n]), &device);
    let logits = to_vec_f32(model.lm_head(hidden.reshape([n * width, d]).select(0, last)))?;
    let v = logits.len() / n;
    let layers: Vec<(Tensor<4>, Tensor<4>)> = cache.layers.into_iter().map(|s| s.expect("prefill fills every layer")).collect();
    Ok(prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let kv = layers.iter().map(|(k, vv)| (k.clone().narrow(0, i, 1).narrow(2, 0, p.len()), vv.clone().narrow(0, i, 1).narrow(2, 0, p.len()))).collect();
            (kv, logits[i * v..(i + 1) * v].to_vec())
        })
        .collect())
}

/// Prompts prefilled in one forward pass at most, and their padded tokens at most.
const PREFILL_PROMPTS: usize = 16;
const PREFILL_TOKENS: usize = 8192;

/// The decode loop with continuous batching. The batch is a set of `max_batch` slots sharing one
/// KV cache; all rows write their next key at the same cache position `len`, and row `r` keeps
/// its sequence in slots `left_pad[r]..len` (slot distance is position distance, so RoPE and the
/// sliding window need nothing else). When a row finishes, its slot goes to the next waiting
/// sample at once: that sample's prompt (prefilled once, in batches, for all its samples) is
/// written into slots `len - prompt_len..len`, and everything before is masked. When `len` reaches
/// the cache's capacity, the slots no row needs any more are cut off the front (one copy per
/// `capacity - longest row` steps). Only when no sample is waiting does the batch shrink.
/// Each finished row goes to `on_row`.
fn decode(lm: &LoadedModel, reqs: &[GenRequest], p: &SamplingParams, on_row: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
    let model = &lm.model;
    let device = model.device();
    let on_device = samples_on_device(&device);
    let mut queue: VecDeque<(usize, usize)> = reqs.iter().enumerate().flat_map(|(i, r)| (0..r.seeds.len()).map(move |s| (i, s))).collect();
    let Some(p_max) = reqs.iter().filter(|r| !r.seeds.is_empty()).map(|r| r.prompt.len()).max() else {
        return Ok(());
    };
    // The most cache slots a row ever needs, and room to run that many more before a compaction.
    let span = p_max + p.max_new_tokens;
    let capacity = span + (span / 4).max(16);
    let n_slots = p.max_batch.max(1).min(queue.len());
    let mut slots: Vec<Option<Row>> = (0..n_slots).map(|_| None).collect();
    let mut prefilled: HashMap<usize, Prefilled> = HashMap::new();
    // Every prompt fits before position `len`, which never drops below the longest prompt.
    let mut cache = KvCache { layers: vec![None; model.layers.len()], len: p_max };
    loop {
        // 1. Waiting samples take the free slots.
        loop {
            let free: Vec<usize> = (0..slots.len()).filter(|&s| slots[s].is_none()).collect();
            if free.is_empty() || queue.is_empty() {
                break;
            }
            let take: Vec<(usize, usize)> = queue.drain(..free.len().min(queue.len())).collect();
            let mut need: Vec<usize> = take.iter().map(|&(r, _)| r).filter(|r| !prefilled.contains_key(r)).collect();
            need.dedup();
            let mut start = 0;
            while start < need.len() {
                let mut end = start + 1;
                let mut width = reqs[need[start]].prompt.len();
                while end < need.len() && end - start < PREFILL_PROMPTS && (end - start + 1) * width.max(reqs[need[end]].prompt.len()) <= PREFILL_TOKENS {
                    width = width.max(reqs[need[end]].prompt.len());
                    end += 1;
                }
                let group: Vec<&[u32]> = need[start..end].iter().map(|&r| reqs[r].prompt.as_slice()).collect();
                for (&r, (kv, logits)) in need[start..end].iter().zip(prefill(lm, &group)?) {
                    prefilled.insert(r, Prefilled { kv, logits, waiting: reqs[r].seeds.len() });
                }
                start = end;
            }
            for (&(r, s), &slot) in take.iter().zip(&free) {
                let plen = reqs[r].prompt.len();
                let pf = prefilled.get_mut(&r).expect("prefilled above");
                let at = cache.len - plen;
                for (layer, (k, v)) in cache.layers.iter_mut().zip(&pf.kv) {
                    let (kb, vb) = layer.take().unwrap_or_else(|| {
                        let [_, h, _, d] = k.dims();
                        let z = || Tensor::zeros([n_slots, h, capacity, d], (&device, k.dtype()));
                        (z(), z())
                    });
                    let [_, h, _, d] = k.dims();
                    let range = [slot..slot + 1, 0..h, at..cache.len, 0..d];
                    *layer = Some((kb.slice_assign(range.clone(), k.clone()), vb.slice_assign(range, v.clone())));
                }
                let mut row = Row {
                    req: r,
                    sample: s,
                    prompt_len: plen,
                    left_pad: at,
                    rng: Rng::new(reqs[r].seeds[s]),
                    tokens: vec![],
                    logprobs: vec![],
                    text: String::new(),
                    finish: None,
                };
                let tok = sample_token(&pf.logits, p, &mut row.rng);
                let lp = logprob_of(&pf.logits, tok);
                row.push(lm, p, tok as u32, lp)?;
                pf.waiting -= 1;
                if pf.waiting == 0 {
                    prefilled.remove(&r);
                }
                if row.finish.is_some() {
                    on_row(row)?;
                } else {
                    slots[slot] = Some(row);
                }
            }
        }
        // 2. Nothing waits: the batch shrinks to its live rows.
        if slots.iter().any(|s| s.is_none()) {
            let keep: Vec<usize> = (0..slots.len()).filter(|&s| slots[s].is_some()).collect();
            if keep.is_empty() {
                return Ok(());
            }
            cache.select_rows(&keep, &device);
            slots = slots.into_iter().filter(|s| s.is_some()).collect();
        }
        // 3. A full cache drops the front slots no live row needs (and no prompt: `len` stays >= p_max).
        if cache.len == capacity {
            let min_pad = slots.iter().flatten().map(|r| r.left_pad).min().unwrap_or(0);
            let cut = min_pad.min(cache.len - p_max);
            debug_assert!(cut > 0, "a live row never needs more than {span} slots");
            for layer in cache.layers.iter_mut() {
                if let Some((kb, vb)) = layer.take() {
                    let shift = |t: Tensor<4>| {
                        let [b, h, _, d] = t.dims();
                        let dt = t.dtype();
                        Tensor::cat(vec![t.narrow(2, cut, capacity - cut), Tensor::zeros([b, h, cut, d], (&device, dt))], 2)
                    };
                    *layer = Some((shift(kb), shift(vb)));
                }
            }
            cache.len -= cut;
            for r in slots.iter_mut().flatten() {
                r.left_pad -= cut;
            }
        }
        // 4. One token for every row.
        let rows: Vec<&mut Row> = slots.iter_mut().map(|s| s.as_mut().expect("every slot is live")).collect();
        let b = rows.len();
        let ids: Vec<i64> = rows.iter().map(|r| *r.tokens.last().unwrap_or(&0) as i64).collect();
        let start: Vec<usize> = rows.iter().map(|r| r.prompt_len + r.tokens.len() - 1).collect();
        let pads: Vec<usize> = rows.iter().map(|r| r.left_pad).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &device);
        let hidden = model.forward_cached(tokens, &start, &pads, &mut cache);
        let logits = model.lm_head(hidden);
        let picked: Vec<(usize, f32)> = if on_device {
            let uniforms: Vec<f64> = rows.into_iter().map(|r| if p.temperature > 0.0 { r.rng.next_f64() } else { 0.0 }).collect();
            let v = logits.dims()[2];
            sample_on_device(logits.reshape([b, v]), p, &uniforms)?
        } else {
            let logits = to_vec_f32(logits)?;
            let v = logits.len() / b;
            // Rows sample independently (each has its own RNG), so this runs on all cores.
            rows.into_par_iter()
                .zip(logits.par_chunks(v))
                .map(|(row, l)| {
                    let tok = sample_token(l, p, &mut row.rng);
                    (tok, logprob_of(l, tok))
                })
                .collect()
        };
        for (slot, (tok, lp)) in slots.iter_mut().zip(picked) {
            let row = slot.as_mut().expect("every slot is live");
            row.push(lm, p, tok as u32, lp)?;
            if row.finish.is_some() {
                on_row(slot.take().expect("live"))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised exponential against f64's, over [−90, 0] (relative error, and 0 only
    /// below −87), through the runtime-dispatched row function and the scalar one.
    #[test]
    fn fast_exp_is_accurate() {
        let xs: Vec<f32> = (0..=900_000).map(|i| -(i as f32) / 10_000.0).collect();
        let mut w = Vec::new();
        exp_weights(&xs, 0.0, 1.0, &mut w);
        let mut worst = 0f64;
        for (&x, &y) in xs.iter().zip(&w) {
            assert_eq!(y, exp_nonpositive(x), "dispatched and scalar differ at {x}");
            if x > -87.0 {
                let want = (x as f64).exp();
                worst = worst.max(((y as f64) - want).abs() / want);
            } else {
                assert_eq!(y, 0.0, "{x}");
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        // Temperature scaling goes through the same path.
        exp_weights(&[1.0, 0.3], 1.0, 1.0 / 0.7, &mut w);
        assert!((w[1] as f64 - (-0.7f64 / 0.7).exp()).abs() < 1e-7, "{}", w[1]);
    }

    /// The device sampler (run here on the CPU backend) picks what the host sampler picks from
    /// the same uniforms, for every truncation and for rows that fall back to the host.
    #[test]
    fn device_sampler_draws_what_the_host_draws() {
        let (b, v) = (12, 1000);
        let mut rng = Rng::new(7);
        // Peaked rows (a few dominant ids) and flat rows (top-p reaches past DEVICE_HEAD).
        let logits: Vec<f32> = (0..b * v)
            .map(|i| {
                let (r, j) = (i / v, i % v);
                let noise = rng.next_f64() as f32;
                if r % 3 == 2 { noise * 0.1 } else { noise * 4.0 + if j % 97 == r { 6.0 } else { 0.0 } }
            })
            .collect();
        let device = Device::flex();
        let t = Tensor::<2>::from_data(TensorData::new(logits.clone(), [b, v]), &device);
        let base = SamplingParams { temperature: 1.0, top_p: 1.0, ..Default::default() };
        let cases = [
            SamplingParams { temperature: 0.0, ..base.clone() },
            base.clone(),
            SamplingParams { temperature: 0.7, top_p: 0.95, ..base.clone() },
            SamplingParams { top_k: 20, ..base.clone() },
            SamplingParams { temperature: 0.8, top_p: 0.9, top_k: 50, ..base.clone() },
            SamplingParams { top_p: 0.99, min_p: 0.05, ..base.clone() },
            SamplingParams { min_p: 0.2, ..base.clone() },
        ];
        // A flat row's top-p set at T = 0.7 reaches past DEVICE_HEAD, so it is drawn by the fallback.
        let mut w: Vec<f64> = logits[2 * v..3 * v].iter().map(|&x| ((x / 0.7) as f64).exp()).collect();
        w.sort_by(|a, b| b.total_cmp(a));
        let total: f64 = w.iter().sum();
        let head: f64 = w[..DEVICE_HEAD].iter().sum();
        assert!(head < 0.95 * total, "the flat row must need more than DEVICE_HEAD candidates");
        for p in &cases {
            for _ in 0..20 {
                let u: Vec<f64> = (0..b).map(|_| rng.next_f64()).collect();
                let dev = sample_on_device(t.clone(), p, &u).unwrap();
                for (r, &(tok, lp)) in dev.iter().enumerate() {
                    let row = &logits[r * v..(r + 1) * v];
                    let want = sample_token_at(row, p, u[r]);
                    assert_eq!(tok, want, "{p:?} row {r} u {}", u[r]);
                    assert!((lp - logprob_of(row, tok)).abs() < 1e-4, "{p:?} row {r}: log-prob {lp}");
                }
            }
        }
    }

    #[test]
    fn sampler_truncations() {
        let logits = vec![0.0f32, 3.0, 2.9, -1.0, 1.0];
        let mut rng = Rng::new(1);
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        assert_eq!(sample_token(&logits, &greedy, &mut rng), 1);
        // Temperature 1, no truncation; each case below adds one.
        let plain = SamplingParams { temperature: 1.0, top_p: 1.0, ..Default::default() };
        let top2 = SamplingParams { top_k: 2, ..plain.clone() };
        for _ in 0..200 {
            let t = sample_token(&logits, &top2, &mut rng);
            assert!(t == 1 || t == 2);
        }
        // top_p tiny keeps only the most likely token
        let top_p = SamplingParams { top_p: 0.01, ..plain.clone() };
        for _ in 0..50 {
            assert_eq!(sample_token(&logits, &top_p, &mut rng), 1);
        }
        // min_p 0.5 keeps tokens with p >= 0.5 * pmax: ids 1, 2
        let min_p = SamplingParams { min_p: 0.5, ..plain.clone() };
        for _ in 0..200 {
            let t = sample_token(&logits, &min_p, &mut rng);
            assert!(t == 1 || t == 2);
        }
        // all tokens reachable at temperature 1
        let mut seen = [false; 5];
        for _ in 0..5000 {
            seen[sample_token(&logits, &plain, &mut rng)] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let lp: f32 = (0..5).map(|i| logprob_of(&logits, i).exp()).sum();
        assert!((lp - 1.0).abs() < 1e-5);
    }
}
