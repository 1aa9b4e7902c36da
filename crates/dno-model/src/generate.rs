//! Batched sampling with a KV cache.
//!
//! Each prompt is prefilled once on its own (no padding); its cache is then left-padded to the
//! longest prompt of the chunk and copied to its K sample rows. Every sample row owns an RNG
//! seeded from the caller's u64, so which tokens a sample draws does not depend on the other rows
//! (up to floating-point differences from batched matmuls).
//!
//! `token_logprobs[i]` is log p(token_i | prefix) under the model's *untempered* distribution
//! (temperature 1, no top-k/top-p/min-p truncation), so their sum equals [`crate::score::score`]
//! of the same (prompt, response) pair.
//!
//! Truncation order: temperature, then top-k, then top-p, then min-p; temperature 0 is greedy.

use anyhow::{bail, Result};
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::model::{to_vec_f32, KvCache};
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
    let lse = logits.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln() as f32 + max;
    logits[idx] - lse
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

/// Draws one token id from `logits` under `p`.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> usize {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    let inv_t = 1.0 / p.temperature;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    // Unnormalised probabilities at the sampling temperature.
    let mut cand: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i, ((x - max) * inv_t).exp()))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    let desc = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, desc);
        cand.truncate(p.top_k);
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
    let mut u = rng.next_f64() * total;
    for c in &cand {
        u -= c.1 as f64;
        if u < 0.0 {
            return c.0;
        }
    }
    cand.last().map(|c| c.0).unwrap_or_else(|| argmax(logits))
}

struct Row {
    req: usize,
    sample: usize,
    prompt_len: usize,
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
}

/// Samples `seeds.len()` completions for every request. `progress(n)` is called as `n` more
/// samples finish. Returns one `Vec<Generation>` per request, in request order.
pub fn generate(
    lm: &LoadedModel,
    reqs: &[GenRequest],
    params: &SamplingParams,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<Generation>>> {
    let vocab = lm.model.vocab_size();
    for (i, r) in reqs.iter().enumerate() {
        if r.prompt.is_empty() {
            bail!("request {i}: empty prompt");
        }
        if let Some(&t) = r.prompt.iter().find(|&&t| t as usize >= vocab) {
            bail!("request {i}: token id {t} outside the vocabulary ({vocab})");
        }
    }
    let mut out: Vec<Vec<Option<Generation>>> = reqs.iter().map(|r| vec![None; r.seeds.len()]).collect();
    if params.max_new_tokens == 0 {
        let empty = Generation { tokens: vec![], text: String::new(), token_logprobs: vec![], finish_reason: FinishReason::Length };
        progress(reqs.iter().map(|r| r.seeds.len()).sum());
        return Ok(reqs.iter().map(|r| vec![empty.clone(); r.seeds.len()]).collect());
    }
    // Similar lengths together: less padding.
    let mut order: Vec<usize> = (0..reqs.len()).filter(|&i| !reqs[i].seeds.is_empty()).collect();
    order.sort_by_key(|&i| reqs[i].prompt.len());
    let max_rows = params.max_batch.max(1);
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        let mut rows = 0;
        while end < order.len() && (end == start || rows + reqs[order[end]].seeds.len() <= max_rows) {
            rows += reqs[order[end]].seeds.len();
            end += 1;
        }
        let chunk = &order[start..end];
        for row in generate_chunk(lm, reqs, chunk, params, &mut progress)? {
            out[row.req][row.sample] = Some(Generation {
                tokens: row.tokens,
                text: row.text,
                token_logprobs: row.logprobs,
                finish_reason: row.finish.unwrap_or(FinishReason::Length),
            });
        }
        start = end;
    }
    Ok(out
        .into_iter()
        .map(|v| v.into_iter().map(|g| g.expect("every sample row is generated")).collect())
        .collect())
}

fn generate_chunk(
    lm: &LoadedModel,
    reqs: &[GenRequest],
    chunk: &[usize],
    p: &SamplingParams,
    progress: &mut impl FnMut(usize),
) -> Result<Vec<Row>> {
    let model = &lm.model;
    let device = model.device();
    let n_layers = model.layers.len();
    let p_max = chunk.iter().map(|&i| reqs[i].prompt.len()).max().unwrap_or(0);

    // 1. Prefill each prompt once; pad its cache on the left and copy it to its K rows.
    let mut per_layer: Vec<(Vec<Tensor<4>>, Vec<Tensor<4>>)> = vec![(vec![], vec![]); n_layers];
    let mut rows: Vec<Row> = Vec::new();
    let mut first_logits: Vec<Vec<f32>> = Vec::new();
    for &ri in chunk {
        let req = &reqs[ri];
        let plen = req.prompt.len();
        let ids: Vec<i64> = req.prompt.iter().map(|&t| t as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, plen]), &device);
        let mut cache = KvCache::new(n_layers);
        let hidden = model.forward_cached(tokens, &[0], &[0], &mut cache);
        let last = hidden.narrow(1, plen - 1, 1);
        let logits = to_vec_f32(model.lm_head(last))?;
        let k = req.seeds.len();
        let pad = p_max - plen;
        for (l, slot) in cache.layers.into_iter().enumerate() {
            let (kc, vc) = slot.expect("prefill fills every layer");
            // Left padding up to the longest prompt, then room for every new token on the right,
            // so decoding writes in place and never reallocates.
            let padded = |t: Tensor<4>| {
                let [b, h, _, d] = t.dims();
                let dt = t.dtype();
                let mut parts = vec![t.narrow(2, 0, plen)];
                if pad > 0 {
                    parts.insert(0, Tensor::zeros([b, h, pad, d], (&device, dt)));
                }
                parts.push(Tensor::zeros([b, h, p.max_new_tokens, d], (&device, dt)));
                let t = Tensor::cat(parts, 2);
                if k > 1 { t.repeat_dim(0, k) } else { t }
            };
            per_layer[l].0.push(padded(kc));
            per_layer[l].1.push(padded(vc));
        }
        for (s, &seed) in req.seeds.iter().enumerate() {
            rows.push(Row {
                req: ri,
                sample: s,
                prompt_len: plen,
                left_pad: pad,
                rng: Rng::new(seed),
                tokens: vec![],
                logprobs: vec![],
                text: String::new(),
                finish: None,
            });
            first_logits.push(logits.clone());
        }
    }
    let mut cache = KvCache {
        layers: per_layer.into_iter().map(|(k, v)| Some((Tensor::cat(k, 0), Tensor::cat(v, 0)))).collect(),
        len: p_max,
    };

    // 2. First token of every row from its prompt's logits.
    let mut finished: Vec<Row> = Vec::new();
    for (row, logits) in rows.iter_mut().zip(&first_logits) {
        let tok = sample_token(logits, p, &mut row.rng);
        let lp = logprob_of(logits, tok);
        row.push(lm, p, tok as u32, lp)?;
    }
    drop(first_logits);

    // 3. Decode until every row is finished.
    loop {
        // Drop finished rows from the batch.
        if rows.iter().any(|r| r.finish.is_some()) {
            let keep: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].finish.is_none()).collect();
            let mut done = 0;
            let mut kept = Vec::with_capacity(keep.len());
            for r in rows.drain(..) {
                if r.finish.is_some() {
                    done += 1;
                    finished.push(r);
                } else {
                    kept.push(r);
                }
            }
            rows = kept;
            progress(done);
            if rows.is_empty() {
                break;
            }
            cache.select_rows(&keep, &device);
        }
        let b = rows.len();
        let ids: Vec<i64> = rows.iter().map(|r| *r.tokens.last().unwrap_or(&0) as i64).collect();
        let start: Vec<usize> = rows.iter().map(|r| r.prompt_len + r.tokens.len() - 1).collect();
        let pads: Vec<usize> = rows.iter().map(|r| r.left_pad).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &device);
        let hidden = model.forward_cached(tokens, &start, &pads, &mut cache);
        let logits = to_vec_f32(model.lm_head(hidden))?;
        let v = logits.len() / b;
        // Rows sample independently (each has its own RNG), so this runs on all cores.
        let picked: Vec<(usize, f32)> = rows
            .par_iter_mut()
            .zip(logits.par_chunks(v))
            .map(|(row, l)| {
                let tok = sample_token(l, p, &mut row.rng);
                (tok, logprob_of(l, tok))
            })
            .collect();
        for (row, (tok, lp)) in rows.iter_mut().zip(picked) {
            row.push(lm, p, tok as u32, lp)?;
        }
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

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
