//! Layer-wise gradient checkpointing (`dno train --gradient-checkpointing`), the scheme of HF's
//! `gradient_checkpointing_enable()`: the forward pass keeps only each decoder layer's input, and
//! the backward pass recomputes one layer at a time.
//!
//! 1. Forward through the blocks without autodiff, keeping the input `x_l` `[B, T, D]` of every
//!    layer and the last block's output `x_L`.
//! 2. The final norm and the chunked head ([`crate::score::value_and_grad`]) on a leaf copy of
//!    `x_L`: the head's and the final norm's gradients, and g = dL/dx_L.
//! 3. For l = L−1 … 0: layer l again, under autodiff, on a leaf copy of `x_l`, with the surrogate
//!    Σ layer_l(x_l) ⊙ g (g a constant): its backward gives layer l's parameter gradients and
//!    dL/dx_l, the next g. The layer's graph is dropped before the next one is built.
//! 4. The embedding lookup with the surrogate Σ embed(tokens) ⊙ g.
//!
//! The surrogate's gradient with respect to the layer's output is g exactly (the backward of a
//! sum of products), so the gradients are those of one backward pass through the whole model, up
//! to floating-point summation order. What stays alive between layers is the L layer inputs
//! (L·B·T·D values) and the gradients so far, instead of every op's saved activations; the price
//! is a second forward pass through the blocks. burn's own checkpointing strategy (balanced)
//! keeps every matmul output, which on SmolLM2 is most of a layer's activations.

use anyhow::Result;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Int, Tensor};

use crate::model::{Llama, Rope};
use crate::score::{self, Scored};

/// [`score::value_and_grad`] over the model's forward from `tokens` with RoPE `rope` and additive
/// mask `mask` (as [`Llama::forward_hidden_with`]), recomputing each layer in the backward pass.
/// `model` is the trained model on an autodiff device; `tokens`, `rope` and `mask` are on it too.
/// Returns (loss `[1]`, sequence log-probs `[seqs]`, the parameters' gradients).
pub fn value_and_grad(
    model: &Llama,
    tokens: Tensor<2, Int>,
    rope: &Rope,
    mask: &Tensor<4>,
    s: Scored,
    chunk: usize,
    loss: impl FnOnce(Tensor<1>) -> Result<Tensor<1>>,
) -> Result<(Tensor<1>, Tensor<1>, GradientsParams)> {
    let (mask, window) = model.layer_masks(mask, rope);
    let mask_of = |sliding: bool| match (sliding, &window) {
        (true, Some(w)) => w,
        _ => &mask,
    };

    // 1. Forward without autodiff, keeping each layer's input.
    let plain = model.clone().valid();
    let (rope_plain, mask_plain, window_plain) = (rope.inner(), mask.clone().inner(), window.clone().map(|w| w.inner()));
    let mask_plain_of = |sliding: bool| match (sliding, &window_plain) {
        (true, Some(w)) => w,
        _ => &mask_plain,
    };
    let mut inputs = Vec::with_capacity(plain.layers.len());
    let mut x = plain.embed(tokens.clone().inner());
    for layer in &plain.layers {
        inputs.push(x.clone());
        x = layer.forward(x, rope_plain.table(layer.sliding), mask_plain_of(layer.sliding), None);
    }
    drop(plain);

    // 2. Final norm and head on a leaf copy of the last output.
    let leaf = Tensor::from_inner(x).require_grad();
    let hidden = model.final_norm(leaf.clone());
    let [b, t, d] = hidden.dims();
    let (l, seq, grads) = score::value_and_grad(model, hidden.reshape([b * t, d]), s, chunk, loss)?;
    let mut g = leaf.grad(&grads).expect("the head's loss depends on the last layer's output");
    let mut out = GradientsParams::from_grads(grads, model);

    // 3. Layers in reverse, one graph at a time.
    for (layer, x) in model.layers.iter().zip(inputs).rev() {
        let leaf = Tensor::from_inner(x).require_grad();
        let y = layer.forward(leaf.clone(), rope.table(layer.sliding), mask_of(layer.sliding), None);
        let grads = (y * Tensor::from_inner(g)).sum().backward();
        g = leaf.grad(&grads).expect("a layer's output depends on its input");
        add_gradients(&mut out, GradientsParams::from_grads(grads, layer), layer, false);
    }

    // 4. The embedding lookup (tied heads: added to the head's gradient of the same weight);
    //    nothing to do when the embeddings are frozen (LoRA).
    if model.embed_tokens.val().is_require_grad() {
        let grads = (model.embed(tokens) * Tensor::from_inner(g)).sum().backward();
        add_gradients(&mut out, GradientsParams::from_grads(grads, model), model, false);
    }
    Ok((l, seq, out))
}

/// Adds `new`'s gradients of `module`'s parameters into `sum`, parameter by parameter (burn's
/// `GradientsAccumulator`, with `widen` casting every gradient to f32 first). The trainer sums its
/// shards and micro-batches with it too.
pub fn add_gradients<M: Module>(sum: &mut GradientsParams, mut new: GradientsParams, module: &M, widen: bool) {
    struct Add<'a> {
        sum: &'a mut GradientsParams,
        new: &'a mut GradientsParams,
        widen: bool,
    }
    impl burn::module::ModuleVisitor for Add<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            let Some(g) = self.new.remove::<D>(p.id) else { return };
            let g = if self.widen && g.dtype() != DType::F32 { g.cast(DType::F32) } else { g };
            let total = match self.sum.remove::<D>(p.id) {
                Some(s) => s + g,
                None => g,
            };
            self.sum.register::<D>(p.id, total);
        }
    }
    module.visit(&mut Add { sum, new: &mut new, widen });
}
