//! Packing (prompt, response) sequences into one right-padded token matrix, and summing the
//! response tokens' log-probabilities per sequence.
//!
//! Efficiency choices (issue 6):
//! * Right padding with a causal model needs no padding mask: a real token never attends to a
//!   later (padding) position, so padding only wastes the padded positions' compute.
//! * Prompt tokens never enter the loss, and the LM head (the largest matmul for a small model,
//!   `[N, D] x [D, V]`) runs only on the hidden states that predict a response token: those rows
//!   are gathered from the flattened `[B*T, D]` hidden states before `lm_head`.
//! * The head runs on chunks of scored positions, forward and backward, so the `[N, V]` logits
//!   never exist at full size ([`dno_model::score`], the one implementation that scoring shares).
//! * A preference pair is one row, prompt ++ chosen ++ rejected, with RoPE positions and an
//!   attention mask that make the rejected response continue the prompt directly
//!   ([`PackedBatch::pack_pairs`]): the prompt's tokens go through the model once per pair, not
//!   once per response (with 40-token prompts and 80-token responses, 1/6 fewer tokens). Pairs
//!   whose responses are long next to the prompt stay two rows, where the longer row's attention
//!   would cost more than the prompt saves.

use anyhow::{bail, Result};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_model::model::{causal_mask, Rope};
use dno_model::score::{self, Scored, HEAD_CHUNK};
use dno_model::Llama;


/// `prompt ++ response`, truncated to `max_len` tokens: the prompt is cut from the left first
/// (its end is what the response continues), then the response from the right. At least one
/// prompt token is kept, because the first response token is predicted from the position before
/// it. Returns `(prompt_kept, response_kept)`.
pub fn truncate<'a>(prompt: &'a [u32], response: &'a [u32], max_len: usize) -> Result<(&'a [u32], &'a [u32])> {
    if prompt.is_empty() {
        bail!("empty prompt: the first response token needs at least one prompt token before it");
    }
    if response.is_empty() {
        bail!("empty response: nothing to score");
    }
    if max_len < 2 {
        bail!("max_len {max_len} leaves no room for one prompt and one response token");
    }
    let response = &response[..response.len().min(max_len - 1)];
    let keep_prompt = prompt.len().min(max_len - response.len());
    Ok((&prompt[prompt.len() - keep_prompt..], response))
}

/// A right-padded batch of rows and the positions whose logits are scored. A row holds one
/// sequence (prompt ++ response) or, for a preference pair, the shared prompt followed by both
/// responses (prompt ++ chosen ++ rejected): the rejected tokens take the positions right after
/// the prompt and attend to the prompt and to themselves only, so each response is scored as in
/// its own row with that prompt, while the prompt goes through the model once instead of twice.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBatch {
    /// Number of rows.
    pub rows: usize,
    /// Padded length (longest row).
    pub width: usize,
    /// `[rows * width]` token ids, row-major, padded with `pad_id`.
    pub tokens: Vec<i64>,
    /// Number of scored sequences (the length of [`sequence_logps`]' output).
    pub seqs: usize,
    /// Flat index `row * width + p` of every hidden state that predicts a response token.
    pub positions: Vec<i64>,
    /// The response token predicted at each entry of `positions`.
    pub targets: Vec<i64>,
    /// The sequence each entry of `positions` belongs to.
    pub seq_of: Vec<usize>,
    /// Per row: (prompt, first response, second response) lengths; the second is 0 for a
    /// single-sequence row.
    pub segments: Vec<(usize, usize, usize)>,
    /// Real (unpadded) tokens over all rows.
    pub real_tokens: usize,
}

impl PackedBatch {
    /// Packs `(prompt, response)` sequences, one per row (each truncated by [`truncate`]);
    /// sequence `i` is row `i`.
    pub fn pack(seqs: &[(&[u32], &[u32])], max_len: usize, pad_id: u32) -> Result<Self> {
        if seqs.is_empty() {
            bail!("cannot pack an empty batch");
        }
        let mut kept = Vec::with_capacity(seqs.len());
        for (i, (p, r)) in seqs.iter().enumerate() {
            let (p, r) = truncate(p, r, max_len).map_err(|e| anyhow::anyhow!("sequence {i} of the batch: {e}"))?;
            kept.push((p, r, &[][..], i, 0));
        }
        Ok(Self::build(&kept, seqs.len(), pad_id))
    }

    /// Packs preference pairs `(prompt, chosen, rejected)`. Sequence `i` is pair `i`'s chosen
    /// response; the rejected responses follow, in order, as sequences `n + k` for the k-th pair
    /// that has one (`n` = number of pairs). Each response is truncated against the prompt by
    /// [`truncate`].
    ///
    /// A pair shares one row (prompt ++ chosen ++ rejected) when that saves work: the prompt's
    /// `p` tokens then go through every matmul once instead of twice, but the row's attention
    /// grows by `2·c·r − p²` query-key products (c, r = response lengths; the full square of
    /// scores is computed and masked). Per layer a token costs ~2·(matmul parameters) FLOPs and a
    /// query-key product ~4·(heads × head_dim), so the pair shares when
    /// `2·c·r − p² ≤ p · share_limit` with `share_limit` from [`share_limit`] (`usize::MAX`: always,
    /// 0: only when attention does not grow). Otherwise the pair is two rows, as in [`Self::pack`].
    /// When truncation keeps different prompt lengths for the two responses, a shared row scores
    /// both after the shorter prompt (a suffix of the longer); a packed row is at most
    /// 2·`max_len` − 1 wide.
    pub fn pack_pairs(
        pairs: &[(&[u32], &[u32], Option<&[u32]>)],
        max_len: usize,
        pad_id: u32,
        share_limit: usize,
    ) -> Result<Self> {
        if pairs.is_empty() {
            bail!("cannot pack an empty batch");
        }
        let n = pairs.len();
        let mut kept = Vec::with_capacity(n);
        let mut next_rejected = n;
        for (i, (p, c, r)) in pairs.iter().enumerate() {
            let err = |which: &str, e: anyhow::Error| anyhow::anyhow!("pair {i} of the batch, {which} response: {e}");
            let (pc, c) = truncate(p, c, max_len).map_err(|e| err("chosen", e))?;
            match r {
                None => kept.push((pc, c, &[][..], i, 0)),
                Some(r) => {
                    let (pr, r) = truncate(p, r, max_len).map_err(|e| err("rejected", e))?;
                    let shared = if pc.len() <= pr.len() { pc } else { pr };
                    let (ps, cl, rl) = (shared.len() as u128, c.len() as u128, r.len() as u128);
                    if 2 * cl * rl <= ps * ps + ps * share_limit as u128 {
                        kept.push((shared, c, r, i, next_rejected));
                    } else {
                        kept.push((pc, c, &[][..], i, 0));
                        kept.push((pr, r, &[][..], next_rejected, 0));
                    }
                    next_rejected += 1;
                }
            }
        }
        Ok(Self::build(&kept, next_rejected, pad_id))
    }

    /// Rows of (prompt, first, second, first's sequence, second's sequence).
    #[allow(clippy::type_complexity)]
    fn build(kept: &[(&[u32], &[u32], &[u32], usize, usize)], seqs: usize, pad_id: u32) -> Self {
        let width = kept.iter().map(|(p, a, b, _, _)| p.len() + a.len() + b.len()).max().unwrap_or(0);
        let rows = kept.len();
        let mut tokens = vec![pad_id as i64; rows * width];
        let (mut positions, mut targets, mut seq_of, mut segments) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut real_tokens = 0;
        for (row, &(p, a, b, seq_a, seq_b)) in kept.iter().enumerate() {
            let base = row * width;
            for (j, &t) in p.iter().chain(a).chain(b).enumerate() {
                tokens[base + j] = t as i64;
            }
            real_tokens += p.len() + a.len() + b.len();
            segments.push((p.len(), a.len(), b.len()));
            // Token k of the first response sits at p.len()+k and is predicted by the hidden
            // state one position earlier; the second response's first token is predicted by the
            // last prompt token, its later tokens by their own predecessors.
            for (k, &t) in a.iter().enumerate() {
                positions.push((base + p.len() + k - 1) as i64);
                targets.push(t as i64);
                seq_of.push(seq_a);
            }
            for (k, &t) in b.iter().enumerate() {
                let from = if k == 0 { p.len() - 1 } else { p.len() + a.len() + k - 1 };
                positions.push((base + from) as i64);
                targets.push(t as i64);
                seq_of.push(seq_b);
            }
        }
        PackedBatch { rows, width, tokens, seqs, positions, targets, seq_of, segments, real_tokens }
    }

    /// The scored positions, for the output head ([`score::sequence_logps`]).
    pub fn scored(&self) -> Scored<'_> {
        Scored { positions: &self.positions, targets: &self.targets, seq_of: &self.seq_of, seqs: self.seqs }
    }

    /// Scored (response) tokens.
    pub fn scored_tokens(&self) -> usize {
        self.positions.len()
    }

    /// Whether any row holds two responses (and so needs [`Self::rope_positions`] and
    /// [`Self::attention_mask`] instead of plain causal ones).
    pub fn has_shared_prompts(&self) -> bool {
        self.segments.iter().any(|s| s.2 > 0)
    }

    /// RoPE position of every slot, per row: the second response continues from the end of the
    /// prompt, as if the first were not there.
    pub fn rope_positions(&self) -> Vec<Vec<usize>> {
        self.segments
            .iter()
            .map(|&(p, a, _)| (0..self.width).map(|j| if j >= p + a { j - a } else { j }).collect())
            .collect()
    }

    /// Additive attention mask `[rows, 1, width, width]` (0 visible, `MASKED` hidden), built on
    /// `device` from each row's prompt and first-response lengths by comparing position ranges:
    /// causal, except that the second response does not see the first. Padding follows the last
    /// real token, so no real token sees it. Only `2·rows` integers cross from the host.
    pub fn attention_mask(&self, device: &Device) -> Tensor<4> {
        let (r, w) = (self.rows, self.width);
        let shape = [r, w, w];
        let iota = || Tensor::<1, Int>::arange(0..w as i64, device);
        let query = iota().reshape([1, w, 1]).expand(shape);
        let key = iota().reshape([1, 1, w]).expand(shape);
        let per_row = |f: fn(&(usize, usize, usize)) -> usize| {
            let v: Vec<i64> = self.segments.iter().map(|s| f(s) as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(v, [r]), device).reshape([r, 1, 1]).expand(shape)
        };
        let (first, second) = (per_row(|s| s.0), per_row(|s| s.0 + s.1)); // first/second response start
        let future = key.clone().greater(query.clone());
        let across = query
            .greater_equal(second.clone())
            .bool_and(key.clone().greater_equal(first))
            .bool_and(key.lower(second));
        Tensor::<3>::zeros(shape, device)
            .mask_fill(future.bool_or(across), dno_model::model::MASKED)
            .reshape([r, 1, w, w])
    }
}

/// The `share_limit` of [`PackedBatch::pack_pairs`] for `model`: a layer's matmul parameters over
/// 2·(heads × head_dim), i.e. how many query-key products cost as much as one token's matmuls.
/// SmolLM2-135M: 3.54M / 1152 = 3072.
pub fn share_limit(model: &Llama) -> usize {
    let Some(layer) = model.layers.first() else { return 0 };
    let a = &layer.self_attn;
    let m = &layer.mlp;
    let params: usize = [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj]
        .iter()
        .map(|l| l.weight.dims().iter().product::<usize>())
        .sum();
    params / (2 * a.n_heads * a.head_dim).max(1)
}

/// The final-normed hidden states of `batch`, flattened to `[rows * width, D]` (tracked when the
/// model is on an autodiff device).
pub fn forward_hidden(model: &Llama, batch: &PackedBatch, device: &Device) -> Tensor<2> {
    let (tokens, rope, mask) = model_inputs(model, batch, device);
    let hidden = model.forward_hidden_with(tokens, &rope, &mask);
    let d = hidden.dims()[2];
    hidden.reshape([batch.rows * batch.width, d])
}

/// The token matrix, RoPE tables and additive attention mask of `batch` on `device`: per-row
/// positions and the pair-row mask when prompts are shared, else positions 0.. and a causal mask.
fn model_inputs(model: &Llama, batch: &PackedBatch, device: &Device) -> (Tensor<2, Int>, Rope, Tensor<4>) {
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(batch.tokens.clone(), [batch.rows, batch.width]), device);
    if batch.has_shared_prompts() {
        (tokens, model.rope(&batch.rope_positions(), device), batch.attention_mask(device))
    } else {
        let t = batch.width;
        (tokens, model.rope(&[(0..t).collect()], device), causal_mask(t, device))
    }
}

/// Σ_t log π(y_t | x, y_<t) over each sequence's response tokens, `[seqs]`, with the output head
/// run chunk by chunk ([`score::sequence_logps`]); no gradients (a plain tensor).
pub fn sequence_logps(model: &Llama, batch: &PackedBatch, device: &Device) -> Tensor<1> {
    score::sequence_logps(model, &forward_hidden(model, batch, device), batch.scored(), HEAD_CHUNK)
}

/// `loss` of the sequence log-probs (a leaf `[seqs]` on the autodiff `device`), its value, the
/// sequence log-probs (both plain tensors) and the gradients of the model's parameters, with the
/// output head chunked in the backward pass too ([`score::value_and_grad`]): the full
/// `[positions, vocab]` logits never exist. With `recompute`, each decoder layer is recomputed in
/// the backward pass instead of keeping its activations ([`dno_model::recompute`]).
pub fn value_and_grad(
    model: &Llama,
    batch: &PackedBatch,
    device: &Device,
    recompute: bool,
    loss: impl FnOnce(Tensor<1>) -> Result<Tensor<1>>,
) -> Result<(Tensor<1>, Tensor<1>, GradientsParams)> {
    if recompute {
        let (tokens, rope, mask) = model_inputs(model, batch, device);
        return dno_model::recompute::value_and_grad(model, tokens, &rope, &mask, batch.scored(), HEAD_CHUNK, loss);
    }
    let (l, seq, grads) = score::value_and_grad(model, forward_hidden(model, batch, device), batch.scored(), HEAD_CHUNK, loss)?;
    Ok((l, seq, GradientsParams::from_grads(grads, model)))
}

/// Reads a float tensor back to the host as f64 values.
pub fn to_host(t: Tensor<1>) -> Result<Vec<f64>> {
    let data = t.into_data();
    let v = data
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor back from the device: {e:?}"))?;
    Ok(v.into_iter().map(f64::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_prompt_end_and_response_start() {
        let p = [1, 2, 3, 4, 5];
        let r = [6, 7, 8];
        assert_eq!(truncate(&p, &r, 100).unwrap(), (&p[..], &r[..]));
        assert_eq!(truncate(&p, &r, 5).unwrap(), (&p[3..], &r[..]));
        assert_eq!(truncate(&p, &r, 3).unwrap(), (&p[4..], &r[..2]));
        assert!(truncate(&[], &r, 10).is_err());
        assert!(truncate(&p, &[], 10).is_err());
    }

    #[test]
    fn pack_pads_right_and_scores_only_response_positions() {
        let a: (&[u32], &[u32]) = (&[10, 11], &[12, 13, 14]);
        let b: (&[u32], &[u32]) = (&[20], &[21]);
        let pb = PackedBatch::pack(&[a, b], 64, 0).unwrap();
        assert_eq!((pb.rows, pb.width), (2, 5));
        assert_eq!(pb.tokens, vec![10, 11, 12, 13, 14, 20, 21, 0, 0, 0]);
        assert_eq!(pb.positions, vec![1, 2, 3, 5]);
        assert_eq!(pb.targets, vec![12, 13, 14, 21]);
        assert_eq!(pb.seq_of, vec![0, 0, 0, 1]);
        assert_eq!(pb.seqs, 2);
        assert!(!pb.has_shared_prompts());
        assert_eq!(pb.real_tokens, 7);
        assert_eq!(pb.scored_tokens(), 4);
    }

    /// The device-built mask equals the rule written out per element, over rows with and
    /// without a second response and with padding.
    #[test]
    fn device_mask_matches_the_rule_per_element() {
        let pairs = [
            (&[1u32, 2, 3][..], &[4u32, 5][..], Some(&[6u32, 7, 8][..])),
            (&[9u32][..], &[10u32][..], None),
            (&[11u32, 12][..], &[13u32][..], Some(&[14u32][..])),
        ];
        let pb = PackedBatch::pack_pairs(&pairs, 64, 0, usize::MAX).unwrap();
        let w = pb.width;
        let m = pb.attention_mask(&Device::flex()).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(m.len(), pb.rows * w * w);
        for (row, &(p, a, _)) in pb.segments.iter().enumerate() {
            for i in 0..w {
                for j in 0..w {
                    let hidden = j > i || (i >= p + a && (p..p + a).contains(&j));
                    let want = if hidden { dno_model::model::MASKED } else { 0.0 };
                    assert_eq!(m[(row * w + i) * w + j], want, "row {row} query {i} key {j}");
                }
            }
        }
    }

    #[test]
    fn pack_pairs_shares_the_prompt() {
        let p: &[u32] = &[10, 11];
        let pairs = [(p, &[12u32, 13][..], Some(&[14u32][..])), (&[20u32][..], &[21u32][..], None)];
        let pb = PackedBatch::pack_pairs(&pairs, 64, 0, usize::MAX).unwrap();
        assert_eq!((pb.rows, pb.width, pb.seqs), (2, 5, 3));
        assert_eq!(pb.tokens, vec![10, 11, 12, 13, 14, 20, 21, 0, 0, 0]);
        // chosen 12 <- pos 1, 13 <- pos 2; rejected 14 <- pos 1 (last prompt token); pair 1.
        assert_eq!(pb.positions, vec![1, 2, 1, 5]);
        assert_eq!(pb.targets, vec![12, 13, 14, 21]);
        assert_eq!(pb.seq_of, vec![0, 0, 2, 1]);
        assert_eq!(pb.real_tokens, 7);
        assert!(pb.has_shared_prompts());
        assert_eq!(pb.rope_positions()[0], vec![0, 1, 2, 3, 2]);
        let m = pb.attention_mask(&Device::flex()).into_data().try_to_vec::<f32>().unwrap();
        let visible = |row: usize, i: usize| -> Vec<usize> { (0..5).filter(|&j| m[(row * 5 + i) * 5 + j] == 0.0).collect() };
        assert_eq!(visible(0, 3), vec![0, 1, 2, 3]);
        assert_eq!(visible(0, 4), vec![0, 1, 4]);
        assert_eq!(visible(1, 1), vec![0, 1]);
        // Different kept prompt lengths: both responses follow the shorter prompt suffix.
        let long: &[u32] = &[1, 2, 3, 4, 5];
        let pb = PackedBatch::pack_pairs(&[(long, &[6u32, 7, 8][..], Some(&[9u32][..]))], 6, 0, usize::MAX).unwrap();
        assert_eq!(pb.segments, vec![(3, 3, 1)]);
        assert_eq!(pb.tokens, vec![3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(pb.positions, vec![2, 3, 4, 2]);
        // Long responses next to a short prompt: sharing would cost more attention (2·3·3 − 1 > 1·5).
        let pb = PackedBatch::pack_pairs(&[(&[1u32][..], &[2u32, 3, 4][..], Some(&[5u32, 6, 7][..]))], 64, 0, 5).unwrap();
        assert_eq!((pb.rows, pb.seqs), (2, 2));
        assert!(!pb.has_shared_prompts());
        assert_eq!(pb.tokens, vec![1, 2, 3, 4, 1, 5, 6, 7]);
        assert_eq!(pb.seq_of, vec![0, 0, 0, 1, 1, 1]);
        // With a budget of 17 query-key products per prompt token it shares (18 <= 1 + 17).
        let pb = PackedBatch::pack_pairs(&[(&[1u32][..], &[2u32, 3, 4][..], Some(&[5u32, 6, 7][..]))], 64, 0, 17).unwrap();
        assert_eq!((pb.rows, pb.seqs), (1, 2));
    }
}
