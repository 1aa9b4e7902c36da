//! Sequence scoring (sum over response tokens of log p(token | prompt, earlier response tokens))
//! and the chunked output head that scoring and training share.
//!
//! The head `[N, D] x [D, V]` is by far the largest activation of a small model: SmolLM2-135M has
//! V = 49152, so 24 pairs of 120 tokens make a 2880 x 49152 f32 logit matrix (566 MB), and an
//! autodiff graph over a log-softmax keeps several of them for the backward pass. Here the head
//! never exists at full size, neither forward nor backward:
//!
//! * [`sequence_logps`] runs the head [`HEAD_CHUNK`] scored positions at a time, off the autodiff
//!   graph, and keeps only each position's log-probability.
//! * [`value_and_grad`] gets the gradient of a loss of the sequence log-probs in two steps: the
//!   loss is differentiated w.r.t. the sequence log-probs (a leaf `[seqs]`), which gives every
//!   scored position its upstream gradient g; then [`sequence_logps_backward`] recomputes the
//!   head per chunk and forms dL/dlogits = g·(onehot(target) − softmax) there, from which
//!   dL/dh = (dL/dlogits)·Wᵀ and dL/dW = hᵀ·(dL/dlogits) are accumulated chunk by chunk. A
//!   surrogate Σ h⊙(dL/dh) + Σ W⊙(dL/dW), built from these constants, carries them into burn's
//!   backward pass through the rest of the model. Peak head memory is a few `[HEAD_CHUNK, V]`
//!   blocks plus one `[D, V]` accumulator (the size of the head's own gradient); the price is
//!   one extra head matmul (four instead of three).

use anyhow::{bail, Result};
use burn::tensor::{DType, Gradients, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::model::{like, to_vec_f32, Llama};
use crate::LoadedModel;

/// Scored positions per chunk of the output head: a chunk's logits are `HEAD_CHUNK x V` floats
/// (48 MiB for a 49152-token vocabulary).
pub const HEAD_CHUNK: usize = 256;

/// The hidden states a batch scores: entry j is the flat row `positions[j]` of the `[rows*width,
/// D]` hidden states, predicting token `targets[j]`, summed into sequence `seq_of[j] < seqs`.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub positions: &'a [i64],
    pub targets: &'a [i64],
    pub seq_of: &'a [usize],
    pub seqs: usize,
}

impl Scored<'_> {
    fn len(&self) -> usize {
        self.positions.len()
    }
}

/// The output projection as `[D, V]` (a view of the tied embeddings or the `lm_head` weight) in
/// the hidden states' dtype `dtype`, and its bias in f32, off the autodiff graph. The head never
/// carries a LoRA adapter (adapters go on the layers' projections only, see `lora::LORA_TARGETS`).
fn head_matrix(model: &Llama, dtype: DType) -> (Tensor<2>, Option<Tensor<1>>) {
    match &model.lm_head {
        Some(l) => {
            debug_assert!(l.lora.is_none(), "the output head has no LoRA adapter");
            (like(l.weight.val().inner(), dtype), l.bias.as_ref().map(|b| like(b.val().inner(), DType::F32)))
        }
        None => (like(model.embed_tokens.val().inner(), dtype).transpose(), None),
    }
}

/// One chunk of the head: `h` `[n, D]` -> (logits − rowmax `[n, V]`, log Σ exp(logits − rowmax)
/// `[n, 1]`), both f32. The matmul runs in the hidden states' dtype (bf16 under mixed precision,
/// as autocast does); the logits are widened to f32 before the log-softmax, so log-probs, the
/// loss and the reference log-probs are f32 whatever the model's dtype.
///
/// The exponentials are summed in blocks of 256 first: a plain f32 sum over ~50k vocabulary terms
/// accumulates a systematic rounding bias (~1e-4 per token); this keeps scores within ~1e-5 per
/// token of the sampler's f64 log-probabilities.
fn shifted_logits(h: Tensor<2>, w: &Tensor<2>, bias: &Option<Tensor<1>>, kernel: bool) -> (Tensor<2>, Tensor<2>) {
    const BLOCK: usize = 256;
    let logits = if kernel { crate::bf16_linear::matmul(h, w.clone()) } else { h.matmul(w.clone()) };
    let mut logits = like(logits, DType::F32);
    if let Some(b) = bias {
        logits = logits + b.clone().unsqueeze::<2>();
    }
    let [n, v] = logits.dims();
    let max = logits.clone().max_dim(1);
    let shifted = logits - max;
    let blocks = v.div_ceil(BLOCK);
    let mut e = shifted.clone().exp();
    if blocks * BLOCK > v {
        e = Tensor::cat(vec![e, Tensor::zeros([n, blocks * BLOCK - v], &shifted.device())], 1);
    }
    let sum: Tensor<3> = e.reshape([n, blocks, BLOCK]).sum_dim(2);
    (shifted, sum.reshape([n, blocks]).sum_dim(1).log())
}

/// Whether the head's products run on dno's bf16 kernel ([`crate::bf16_linear`]): a bf16
/// model on the CPU (mixed precision). The hidden states, f32 under [`Llama::autocast`], are
/// then rounded to bf16 as autocast rounds a linear layer's input, the bf16 head weights are
/// used as they are, and the logits come out in f32. Otherwise the head is burn's matmul in the
/// hidden states' dtype.
fn head_on_kernel(model: &Llama, device: &burn::tensor::Device) -> bool {
    model.weight_dtype() == DType::BF16 && crate::bf16_linear::applies(device)
}

fn ints(v: Vec<i64>, device: &burn::tensor::Device) -> Tensor<1, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// `(indices [n], targets [n, 1])` of chunk `start..end`, on `device`.
fn chunk_ids(s: Scored, start: usize, end: usize, device: &burn::tensor::Device) -> (Tensor<1, Int>, Tensor<2, Int>) {
    let idx = ints(s.positions[start..end].to_vec(), device);
    let tgt = Tensor::from_data(TensorData::new(s.targets[start..end].to_vec(), [end - start, 1]), device);
    (idx, tgt)
}

/// log p(target) of every scored position, `[N]`, computed `chunk` positions at a time from the
/// flat hidden states `[M, D]`. Off the autodiff graph (the result is a plain tensor on the
/// hidden states' inner device).
pub fn token_logps(model: &Llama, hidden: &Tensor<2>, s: Scored, chunk: usize) -> Tensor<1> {
    let h = hidden.clone().inner();
    let device = h.device();
    let kernel = head_on_kernel(model, &device);
    let (w, bias) = head_matrix(model, if kernel { DType::BF16 } else { h.dtype() });
    let n = s.len();
    let mut out = Vec::with_capacity(n.div_ceil(chunk.max(1)));
    let mut start = 0;
    while start < n {
        let end = (start + chunk.max(1)).min(n);
        let (idx, tgt) = chunk_ids(s, start, end, &device);
        let (shifted, logsum) = shifted_logits(h.clone().select(0, idx), &w, &bias, kernel);
        out.push(shifted.gather(1, tgt) - logsum);
        start = end;
    }
    if out.is_empty() {
        return Tensor::zeros([0], &device);
    }
    Tensor::cat(out, 0).reshape([n])
}

/// Σ of [`token_logps`] per sequence, `[seqs]`, off the autodiff graph.
pub fn sequence_logps(model: &Llama, hidden: &Tensor<2>, s: Scored, chunk: usize) -> Tensor<1> {
    let lp = token_logps(model, hidden, s, chunk);
    let device = lp.device();
    if s.len() == 0 {
        return Tensor::zeros([s.seqs], &device);
    }
    let owner = ints(s.seq_of.iter().map(|&q| q as i64).collect(), &device);
    Tensor::zeros([s.seqs], &device).select_assign(0, owner, lp, IndexingUpdateOp::Add)
}

/// A scalar whose gradient (by burn's `backward`) w.r.t. the tracked `hidden` `[M, D]` and the
/// head weight is that of Σ_q `grad_seqs[q]`·(sequence q's log-prob): the head's backward pass,
/// recomputed `chunk` positions at a time (see the module docs). Its value is meaningless.
/// `grad_seqs` `[seqs]` is a plain (non-autodiff) tensor.
pub fn sequence_logps_backward(
    model: &Llama,
    hidden: Tensor<2>,
    s: Scored,
    grad_seqs: Tensor<1>,
    chunk: usize,
) -> Tensor<1> {
    let h = hidden.clone().inner();
    let device = h.device();
    let hdt = h.dtype();
    let kernel = head_on_kernel(model, &device);
    let (w, bias) = head_matrix(model, if kernel { DType::BF16 } else { hdt });
    let v = w.dims()[1];
    let owner = ints(s.seq_of.iter().map(|&q| q as i64).collect(), &device);
    let g_tok = grad_seqs.inner().select(0, owner); // [N]
    let head_param = match &model.lm_head {
        Some(l) => l.weight.val(),
        None => model.embed_tokens.val(),
    };
    let head_trained = head_param.is_require_grad();
    // dL/dW `[D, V]`, accumulated in f32 from the first chunk on (`None` until then).
    let mut grad_w: Option<Tensor<2>> = None;
    let mut grad_b = (head_trained && bias.is_some()).then(|| Tensor::<1>::zeros([v], &device));
    let n = s.len();
    let mut grad_h = Vec::with_capacity(n.div_ceil(chunk.max(1)));
    let mut start = 0;
    while start < n {
        let end = (start + chunk.max(1)).min(n);
        let (idx, tgt) = chunk_ids(s, start, end, &device);
        let h_c = h.clone().select(0, idx);
        let (shifted, logsum) = shifted_logits(h_c.clone(), &w, &bias, kernel);
        let g: Tensor<2> = g_tok.clone().narrow(0, start, end - start).reshape([end - start, 1]);
        // dL/dlogits = g·(onehot(target) − softmax(logits)).
        let probs = (shifted - logsum).exp();
        let grad_logits = (probs * g.clone()).neg().scatter(1, tgt, g, IndexingUpdateOp::Add);
        // dL/dh in the hidden states' dtype; dL/dW accumulated in f32. On the kernel both
        // products round dL/dlogits to bf16 and sum in f32 (as autocast's backward does).
        if kernel {
            grad_h.push(like(crate::bf16_linear::matmul(grad_logits.clone(), w.clone().transpose()), hdt));
        } else {
            grad_h.push(like(grad_logits.clone(), hdt).matmul(w.clone().transpose()));
        }
        if head_trained {
            let part = like(h_c, DType::F32).transpose();
            let part = if kernel { crate::bf16_linear::matmul(part, grad_logits.clone()) } else { part.matmul(grad_logits.clone()) };
            grad_w = Some(match grad_w.take() {
                Some(gw) => gw + part,
                None => part,
            });
        }
        if let Some(gb) = grad_b.take() {
            grad_b = Some(gb + grad_logits.sum_dim(0).reshape([v]));
        }
        start = end;
    }
    let tracked_device = hidden.device();
    let mut surrogate = Tensor::<1>::zeros([1], &tracked_device);
    if n > 0 {
        let idx = ints(s.positions.to_vec(), &tracked_device);
        let grad_h: Tensor<2> = Tensor::cat(grad_h, 0);
        surrogate = surrogate + like((hidden.select(0, idx) * grad_h).sum(), DType::F32);
    }
    // Each term is multiplied in its parameter's dtype and the scalar widened to f32 (burn's
    // binary ops need operands of one dtype).
    if let Some(gw) = grad_w {
        let pdt = head_param.dtype();
        surrogate = surrogate
            + like(
                match &model.lm_head {
                    Some(_) => (head_param * like(gw, pdt)).sum(),
                    None => (head_param * like(gw.transpose(), pdt)).sum(),
                },
                DType::F32,
            );
    }
    if let (Some(gb), Some(Some(b))) = (grad_b, model.lm_head.as_ref().map(|l| l.bias.as_ref())) {
        let b = b.val();
        let pdt = b.dtype();
        surrogate = surrogate + like((b * like(gb, pdt)).sum(), DType::F32);
    }
    surrogate
}

/// A loss of the sequence log-probs, its value and its gradients, with the head chunked (see the
/// module docs): `hidden` `[M, D]` are the tracked final-normed hidden states, `loss` maps the
/// sequence log-probs `[seqs]` (a leaf on `hidden`'s autodiff device) to a scalar `[1]`. Returns
/// (loss `[1]`, sequence log-probs `[seqs]`, both plain tensors, and the gradients of the
/// model's parameters).
pub fn value_and_grad(
    model: &Llama,
    hidden: Tensor<2>,
    s: Scored,
    chunk: usize,
    loss: impl FnOnce(Tensor<1>) -> Result<Tensor<1>>,
) -> Result<(Tensor<1>, Tensor<1>, Gradients)> {
    let seq = sequence_logps(model, &hidden, s, chunk);
    let leaf = Tensor::<1>::from_data(seq.to_data(), &hidden.device()).require_grad();
    let l = loss(leaf.clone())?;
    let outer = l.backward();
    let grad_seqs = match leaf.grad(&outer) {
        Some(g) => g,
        None => Tensor::zeros([s.seqs], &seq.device()),
    };
    let grads = sequence_logps_backward(model, hidden, s, grad_seqs, chunk).backward();
    Ok((l.inner(), seq, grads))
}

/// One batch of `(prompt, response)` pairs as a right-padded token matrix and its scored
/// positions (each response token is predicted by the hidden state one position earlier).
struct ScoreBatch {
    rows: usize,
    width: usize,
    ids: Vec<i64>,
    positions: Vec<i64>,
    targets: Vec<i64>,
    seq_of: Vec<usize>,
}

impl ScoreBatch {
    fn new(model: &Llama, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Self> {
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
        let rows = pairs.len();
        let width = pairs.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(0);
        let mut b = ScoreBatch { rows, width, ids: vec![0; rows * width], positions: vec![], targets: vec![], seq_of: vec![] };
        for (i, (p, r)) in pairs.iter().enumerate() {
            for (t, &tok) in p.iter().chain(r).enumerate() {
                b.ids[i * width + t] = tok as i64;
            }
            for (j, &tok) in r.iter().enumerate() {
                b.positions.push((i * width + p.len() - 1 + j) as i64);
                b.targets.push(tok as i64);
                b.seq_of.push(i);
            }
        }
        Ok(b)
    }

    fn scored(&self) -> Scored<'_> {
        Scored { positions: &self.positions, targets: &self.targets, seq_of: &self.seq_of, seqs: self.rows }
    }

    /// Flat final-normed hidden states `[rows * width, D]` (tracked on an autodiff device).
    fn hidden(&self, model: &Llama) -> Tensor<2> {
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(self.ids.clone(), [self.rows, self.width]), &model.device());
        let hidden = model.forward_hidden(tokens);
        let d = hidden.dims()[2];
        hidden.reshape([self.rows * self.width, d])
    }
}

/// Per-pair sums `[B]` of response log-probabilities for one batch, a plain tensor. Sequences are
/// right-padded; padding sits after every real token, so the causal mask alone keeps it out.
pub fn score_tensor(model: &Llama, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Tensor<1>> {
    let b = ScoreBatch::new(model, pairs)?;
    Ok(sequence_logps(model, &b.hidden(model), b.scored(), HEAD_CHUNK))
}

/// [`value_and_grad`] over one batch of `(prompt, response)` pairs: `loss` maps the per-pair sums
/// `[B]` to a scalar. On an autodiff device.
pub fn score_value_and_grad(
    model: &Llama,
    pairs: &[(Vec<u32>, Vec<u32>)],
    loss: impl FnOnce(Tensor<1>) -> Result<Tensor<1>>,
) -> Result<(Tensor<1>, Tensor<1>, Gradients)> {
    let b = ScoreBatch::new(model, pairs)?;
    value_and_grad(model, b.hidden(model), b.scored(), HEAD_CHUNK, loss)
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
