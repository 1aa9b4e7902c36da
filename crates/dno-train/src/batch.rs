//! Packing (prompt, response) sequences into one right-padded token matrix, and summing the
//! response tokens' log-probabilities per sequence.
//!
//! Efficiency choices (issue 6):
//! * Right padding with a causal model needs no attention mask: a real token never attends to a
//!   later (padding) position, so padding only wastes the padded positions' compute.
//! * Prompt tokens never enter the loss, and the LM head (the largest matmul for a small model,
//!   `[N, D] x [D, V]`) runs only on the hidden states that predict a response token: those rows
//!   are gathered from the flattened `[B*T, D]` hidden states before `lm_head`.
//! * log π(y_t) = logit[y_t] − logsumexp(logits) is computed from a gathered logit and a
//!   row-wise logsumexp (max-shifted), without materialising a `[N, V]` log-softmax; rows go
//!   through the head in chunks so the no-grad reference pass never holds more than one chunk.

use anyhow::{bail, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use dno_model::Llama;

/// Rows per LM-head chunk.
const HEAD_CHUNK_ROWS: usize = 512;

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

/// A right-padded batch of sequences and the positions whose logits are scored.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBatch {
    /// Number of sequences (rows).
    pub rows: usize,
    /// Padded length (longest sequence).
    pub width: usize,
    /// `[rows * width]` token ids, row-major, padded with `pad_id`.
    pub tokens: Vec<i64>,
    /// Flat index `row * width + p` of every hidden state that predicts a response token.
    pub positions: Vec<i64>,
    /// The response token predicted at each entry of `positions`.
    pub targets: Vec<i64>,
    /// The row each entry of `positions` belongs to.
    pub row_of: Vec<usize>,
    /// Real (unpadded) tokens over all rows.
    pub real_tokens: usize,
}

impl PackedBatch {
    /// Packs `(prompt, response)` pairs (each truncated by [`truncate`]).
    pub fn pack(seqs: &[(&[u32], &[u32])], max_len: usize, pad_id: u32) -> Result<Self> {
        if seqs.is_empty() {
            bail!("cannot pack an empty batch");
        }
        let mut kept = Vec::with_capacity(seqs.len());
        for (i, (p, r)) in seqs.iter().enumerate() {
            let (p, r) = truncate(p, r, max_len).map_err(|e| anyhow::anyhow!("sequence {i} of the batch: {e}"))?;
            kept.push((p, r));
        }
        let width = kept.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(0);
        let rows = kept.len();
        let mut tokens = vec![pad_id as i64; rows * width];
        let (mut positions, mut targets, mut row_of) = (Vec::new(), Vec::new(), Vec::new());
        let mut real_tokens = 0;
        for (row, (p, r)) in kept.iter().enumerate() {
            let base = row * width;
            for (j, &t) in p.iter().chain(r.iter()).enumerate() {
                tokens[base + j] = t as i64;
            }
            real_tokens += p.len() + r.len();
            for (k, &t) in r.iter().enumerate() {
                // Token at index p.len()+k is predicted by the hidden state one position earlier.
                positions.push((base + p.len() + k - 1) as i64);
                targets.push(t as i64);
                row_of.push(row);
            }
        }
        Ok(PackedBatch { rows, width, tokens, positions, targets, row_of, real_tokens })
    }

    /// Scored (response) tokens.
    pub fn scored_tokens(&self) -> usize {
        self.positions.len()
    }
}

/// Σ_t log π(y_t | x, y_<t) over each row's response tokens: a `[rows]` tensor on the model's
/// device (tracked when the model is on an autodiff device).
pub fn sequence_logps(model: &Llama, batch: &PackedBatch, device: &Device) -> Tensor<1> {
    let tokens = Tensor::<2, Int>::from_data(
        TensorData::new(batch.tokens.clone(), [batch.rows, batch.width]),
        device,
    );
    let hidden = model.forward_hidden(tokens);
    let d = hidden.dims()[2];
    let flat: Tensor<2> = hidden.reshape([batch.rows * batch.width, d]);
    let n = batch.positions.len();
    let mut token_logps = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + HEAD_CHUNK_ROWS).min(n);
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(batch.positions[start..end].to_vec(), [end - start]),
            device,
        );
        let tgt = Tensor::<2, Int>::from_data(
            TensorData::new(batch.targets[start..end].to_vec(), [end - start, 1]),
            device,
        );
        let logits: Tensor<2> = model.lm_head(flat.clone().select(0, idx));
        token_logps.push(gathered_log_softmax(logits, tgt));
        start = end;
    }
    let token_logps: Tensor<2> = Tensor::cat(token_logps, 0); // [N, 1]
    // Segment sum as a [rows, N] 0/1 matrix product: differentiable and tiny.
    let mut seg = vec![0f32; batch.rows * n];
    for (j, &row) in batch.row_of.iter().enumerate() {
        seg[row * n + j] = 1.0;
    }
    let seg = Tensor::<2>::from_data(TensorData::new(seg, [batch.rows, n]), device);
    seg.matmul(token_logps).reshape([batch.rows])
}

/// Reads a float tensor back to the host as f64 values.
pub fn to_host(t: Tensor<1>) -> Result<Vec<f64>> {
    let data = t.into_data();
    let v = data
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor back from the device: {e:?}"))?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// `log softmax(logits)[target]` per row: `[N, V]`, `[N, 1]` → `[N, 1]`. The max shift is a
/// constant (detached); it cancels exactly, so gradients are those of the true log-softmax.
pub fn gathered_log_softmax(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<2> {
    let max = logits.clone().detach().max_dim(1);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
    logits.gather(1, targets) - lse
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
        assert_eq!(pb.row_of, vec![0, 0, 0, 1]);
        assert_eq!(pb.real_tokens, 7);
        assert_eq!(pb.scored_tokens(), 4);
    }
}
