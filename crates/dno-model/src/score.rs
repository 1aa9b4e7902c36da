//! Sequence scoring: sum over response tokens of log p(token | prompt, earlier response tokens).

use anyhow::{bail, Result};
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{to_vec_f32, Llama};
use crate::LoadedModel;

/// Differentiable per-pair sums `[B]` of response log-probabilities for one batch, on the
/// model's device (an autodiff device gives gradients). Sequences are right-padded; padding sits
/// after every real token, so the causal mask alone keeps it out, and only response positions
/// go through the output projection.
pub fn score_tensor(model: &Llama, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Tensor<1>> {
    let device = model.device();
    let vocab = model.vocab_size();
    if pairs.is_empty() {
        bail!("score: empty batch");
    }
    for (i, (p, r)) in pairs.iter().enumerate() {
        if p.is_empty() {
            bail!("score: pair {i} has an empty prompt");
        }
        if let Some(&t) = p.iter().chain(r).find(|&&t| t as usize >= vocab) {
            bail!("score: pair {i} has token id {t} outside the vocabulary ({vocab})");
        }
    }
    let b = pairs.len();
    let lmax = pairs.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(0);
    let mut ids = vec![0i64; b * lmax];
    let mut sel = Vec::new(); // flat positions whose hidden state predicts a response token
    let mut targets = Vec::new();
    let mut owner = Vec::new(); // pair index of each selected position
    for (i, (p, r)) in pairs.iter().enumerate() {
        for (t, &tok) in p.iter().chain(r).enumerate() {
            ids[i * lmax + t] = tok as i64;
        }
        for (j, &tok) in r.iter().enumerate() {
            sel.push((i * lmax + p.len() - 1 + j) as i64);
            targets.push(tok as i64);
            owner.push(i);
        }
    }
    if sel.is_empty() {
        return Ok(Tensor::zeros([b], &device));
    }
    let n = sel.len();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, lmax]), &device);
    let hidden = model.forward_hidden(tokens);
    let d = hidden.dims()[2];
    let hidden = hidden.reshape([b * lmax, d]);
    let sel = Tensor::<1, Int>::from_data(TensorData::new(sel, [n]), &device);
    let logits = model.lm_head(hidden.select(0, sel));
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let lp = token_logprobs(logits, targets); // [n, 1]
    let mut m = vec![0f32; b * n];
    for (j, &i) in owner.iter().enumerate() {
        m[i * n + j] = 1.0;
    }
    let m = Tensor::<2>::from_data(TensorData::new(m, [b, n]), &device);
    Ok(m.matmul(lp).reshape([b]))
}

/// `log p(target)` for each row of `logits` `[N, V]` given `targets` `[N, 1]`, as `[N, 1]`.
///
/// Written out instead of `log_softmax`: a plain f32 sum over ~50k vocabulary terms accumulates a
/// systematic rounding bias (~1e-4 per token), so the exponentials are summed in blocks of 256
/// first. This keeps scores within ~1e-5 per token of the sampler's f64 log-probabilities.
pub fn token_logprobs(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<2> {
    const BLOCK: usize = 256;
    let [n, v] = logits.dims();
    let device = logits.device();
    let max = logits.clone().max_dim(1).detach();
    let shifted = logits - max;
    let picked = shifted.clone().gather(1, targets);
    let blocks = v.div_ceil(BLOCK);
    let mut e = shifted.exp();
    if blocks * BLOCK > v {
        e = Tensor::cat(vec![e, Tensor::zeros([n, blocks * BLOCK - v], &device)], 1);
    }
    let sum: Tensor<3> = e.reshape([n, blocks, BLOCK]).sum_dim(2);
    let lse = sum.reshape([n, blocks]).sum_dim(1).log();
    picked - lse
}

/// Sum of log p(response | prompt) for every (prompt, response) pair, `batch_size` pairs at a
/// time (pairs of similar length are batched together).
pub fn score(lm: &LoadedModel, pairs: &[(Vec<u32>, Vec<u32>)], batch_size: usize) -> Result<Vec<f64>> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| pairs[i].0.len() + pairs[i].1.len());
    let mut out = vec![0f64; pairs.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<(Vec<u32>, Vec<u32>)> = chunk.iter().map(|&i| pairs[i].clone()).collect();
        let sums = to_vec_f32(score_tensor(&lm.model, &batch)?)?;
        for (&i, s) in chunk.iter().zip(sums) {
            out[i] = s as f64;
        }
    }
    Ok(out)
}
