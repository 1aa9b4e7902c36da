//! A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3, Gemma 3): RMSNorm, GQA attention with
//! rotate-half RoPE, a gated MLP, optional tied embeddings, optional LoRA adapters. The families
//! are switches on this one network (see [`crate::config::Family`]):
//! q/k/v biases (Qwen2), per-head q/k RMSNorm before RoPE (Qwen3, Gemma 3), sliding-window layers
//! (Mistral, Gemma 3, Qwen with `use_sliding_window`), and for Gemma 3 `(1 + w)` norms, extra norms
//! on the attention and MLP outputs, GeLU-tanh, scaled embeddings and a second RoPE table for
//! the sliding layers.
//!
//! Linear weights are stored transposed relative to PyTorch, as `[in, out]`, so a projection is a
//! plain `x.matmul(w)`. Loaders transpose on load and the exporter transposes back.

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::bf16mm::PackedBf16;
use crate::device::is_plain_cpu;
use crate::config::{Activation, LlamaConfig};
use std::sync::Arc;
use crate::dtype::Dtype;

/// Low-rank adapter: `y += scale * (x @ a) @ b` with `a: [in, r]`, `b: [r, out]`.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
    pub scale: f64,
}

/// A dense projection with an optional bias and an optional LoRA adapter.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]` (transposed relative to PyTorch's `[out, in]`).
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub lora: Option<LoraAdapter>,
    /// The weight packed for the CPU's bf16 kernel ([`crate::bf16mm`]), set only by
    /// [`Llama::for_cpu_decoding`] on models that are not trained afterwards.
    #[module(skip)]
    pub packed: Option<Arc<PackedBf16>>,
}

impl Linear {
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Linear { weight: Param::from_tensor(weight), bias: bias.map(Param::from_tensor), lora: None, packed: None }
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows: usize = dims[..D - 1].iter().product();
        if let Some(packed) = self.packed.as_ref().filter(|_| is_plain_cpu(&x.device())) {
            let mut y = packed_matmul(x.reshape([rows, d_in]), packed);
            if let Some(b) = &self.bias {
                y = y.clone() + like(b.val(), y.dtype()).unsqueeze::<2>();
            }
            let mut out = dims;
            out[D - 1] = self.out_features();
            return y.reshape(out);
        }
        let dt = self.weight.val().dtype();
        let x2: Tensor<2> = like(x.reshape([rows, d_in]), dt);
        let mut y = match &self.lora {
            Some(l) => {
                let delta = x2.clone().matmul(like(l.a.val(), dt)).matmul(like(l.b.val(), dt)).mul_scalar(l.scale);
                x2.matmul(like(self.weight.val(), dt)) + delta
            }
            // bf16 weights on the CPU: dno's kernel, forward and backward (crate::bf16_linear).
            None if dt == DType::BF16 => crate::bf16_linear::matmul(x2, self.weight.val()),
            None => x2.matmul(like(self.weight.val(), dt)),
        };
        if let Some(b) = &self.bias {
            y = y + like(b.val(), dt).unsqueeze::<2>();
        }
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }
}

/// `x [rows, K] × W` with the CPU's bf16 kernel, in `x`'s dtype (x is read back to the host and
/// the product written to a new tensor on x's device: host memory, for burn-flex). Callers use it
/// only on the plain CPU device: a model forked onto an autodiff device keeps its packed copy,
/// which would compute without a gradient, so there the Param path runs.
fn packed_matmul(x: Tensor<2>, w: &PackedBf16) -> Tensor<2> {
    let [rows, _] = x.dims();
    let (device, dtype) = (x.device(), x.dtype());
    let y = crate::bf16mm::matmul(&host_f32(x), rows, w);
    like(Tensor::<2>::from_data(TensorData::new(y, [rows, w.n()]), &device), dtype)
}

/// The values of `x` as f32 in host memory (for dno's CPU kernels; no copy beyond burn's read-back).
fn host_f32<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    like(x, DType::F32).into_data().try_into_vec::<f32>().expect("an f32 tensor reads back as f32")
}

/// `t` in `dtype` (a no-op when it already is). Parameters follow their input's dtype, so weights
/// kept wider than the compute dtype (LoRA's f32 adapters on a bf16 base) compute in
/// [`Llama::compute_dtype`]: the cast is an autodiff op, and its backward hands the parameter a
/// gradient in its own dtype.
pub fn like<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// RMSNorm over the last axis: `x / rms(x) * (offset + weight)`; `offset` is 1 for Gemma
/// (whose checkpoints store the scale as an offset from 1), else 0.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
    pub offset: f64,
}

impl RmsNorm {
    /// Normalises in f32 whatever `x`'s dtype and returns `x`'s dtype, as transformers does:
    /// Gemma's `1 + weight` scales in f32 before the cast back, the other families' `weight`
    /// after it, in the wider of the weight's and `x`'s dtypes (PyTorch's type promotion: exact
    /// for the f32 weights of [`Llama::autocast`], bf16 × bf16 in a plain bf16 model).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dt = x.dtype();
        let x = like(x, DType::F32);
        let inv = x.clone().square().mean_dim(D - 1).add_scalar(self.eps).sqrt().recip();
        let normed = x * inv;
        let w = self.weight.val();
        if self.offset != 0.0 {
            return like(normed * like(w, DType::F32).add_scalar(self.offset).unsqueeze::<D>(), dt);
        }
        let wide = if w.dtype() == DType::F32 { DType::F32 } else { dt };
        like(like(like(normed, dt), wide) * like(w, wide).unsqueeze::<D>(), dt)
    }

    fn widen(self) -> Self {
        RmsNorm { weight: self.weight.map(|w| like(w, DType::F32)), ..self }
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Per-head RMSNorm over `head_dim` on queries / keys, before RoPE (Qwen3, Gemma 3).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Score scale, `head_dim^-0.5` (Gemma 3: `query_pre_attn_scalar^-0.5`).
    pub scale: f64,
    /// `[q | k | v]` packed as one projection for the CPU's bf16 kernel, set only by
    /// [`Llama::for_cpu_decoding`] (the three `packed` are then unset).
    #[module(skip)]
    pub packed_qkv: Option<Arc<PackedBf16>>,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    #[module(skip)]
    pub act: Activation,
    /// `[gate | up]` packed as one projection, set only by [`Llama::for_cpu_decoding`] for SiLU
    /// MLPs: the gated product is then computed on the host between the two kernel calls.
    #[module(skip)]
    pub packed_gate_up: Option<Arc<PackedBf16>>,
}

/// `gelu_pytorch_tanh`: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(c);
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if let (Some(gate_up), Some(down)) = (self.packed_gate_up.as_ref().filter(|_| is_plain_cpu(&x.device())), self.down_proj.packed.as_ref()) {
            return silu_mlp_on_host(x, gate_up, down);
        }
        let gate = self.gate_proj.forward(x.clone());
        let up = self.up_proj.forward(x);
        let h = match self.act {
            // Fused forward and backward on the CPU (crate::silu_gate).
            Activation::Silu => crate::silu_gate::silu_gate(gate, up),
            Activation::GeluTanh => gelu_tanh(gate) * up,
        };
        self.down_proj.forward(h)
    }
}

/// `down(silu(gate(x)) · up(x))` on the CPU's bf16 kernel, the gated product in f32 on the host:
/// one read of `x` and one tensor written, where burn's ops would make five passes.
fn silu_mlp_on_host(x: Tensor<3>, gate_up: &PackedBf16, down: &PackedBf16) -> Tensor<3> {
    use rayon::prelude::*;
    let [b, t, _] = x.dims();
    let (device, dtype) = (x.device(), x.dtype());
    let y = crate::bf16mm::matmul(&host_f32(x), b * t, gate_up);
    let inter = gate_up.n() / 2;
    let mut h = vec![0f32; b * t * inter];
    h.par_chunks_mut(inter).zip(y.par_chunks(2 * inter)).for_each(|(h, y)| {
        let (gate, up) = y.split_at(inter);
        for ((h, &g), &u) in h.iter_mut().zip(gate).zip(up) {
            *h = g * crate::silu_gate::sigmoid(g) * u;
        }
    });
    let out = crate::bf16mm::matmul(&h, b * t, down);
    like(Tensor::<3>::from_data(TensorData::new(out, [b, t, down.n()]), &device), dtype)
}

/// A pre-norm transformer block. HF names of the norms differ by family (see
/// [`block_norm_names`]); Gemma 3 also norms each sublayer's output (`attn_out_norm`,
/// `mlp_out_norm`) before the residual add.
#[derive(Module, Debug)]
pub struct Block {
    pub attn_norm: RmsNorm,
    pub self_attn: Attention,
    pub attn_out_norm: Option<RmsNorm>,
    pub mlp_norm: RmsNorm,
    pub mlp: Mlp,
    pub mlp_out_norm: Option<RmsNorm>,
    /// Sliding-window layer: attends to the last `sliding_window` keys, and uses the local RoPE
    /// table when the model has one.
    pub sliding: bool,
}

/// HF names of a block's norms: (attn_norm, attn_out_norm, mlp_norm, mlp_out_norm).
pub fn block_norm_names(cfg: &LlamaConfig) -> [Option<&'static str>; 4] {
    if cfg.sandwich_norms() {
        [
            Some("input_layernorm"),
            Some("post_attention_layernorm"),
            Some("pre_feedforward_layernorm"),
            Some("post_feedforward_layernorm"),
        ]
    } else {
        [Some("input_layernorm"), None, Some("post_attention_layernorm"), None]
    }
}

/// Per-layer key/value buffers, each `[B, n_kv_heads, capacity, head_dim]`, of which the first
/// `len` positions are filled. New keys are written in place (burn's `slice_assign` reuses a
/// uniquely owned buffer), so a decode step costs O(new tokens), not a copy of the whole cache.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Filled positions.
    pub len: usize,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache { layers: vec![None; n_layers], len: 0 }
    }
    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Keeps only the given batch rows.
    pub fn select_rows(&mut self, rows: &[usize], device: &Device) {
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
            device,
        );
        for l in self.layers.iter_mut().flatten() {
            l.0 = l.0.clone().select(0, idx.clone());
            l.1 = l.1.clone().select(0, idx.clone());
        }
    }
}

/// Writes `k`, `v` (`[B, H, T, hd]`) at positions `past..past + T` of a layer's buffers and returns
/// views of the filled prefix `[B, H, past + T, hd]`. A full buffer grows by doubling (callers that
/// know the final length, like `generate`, allocate it up front).
fn cache_append(
    slot: &mut Option<(Tensor<4>, Tensor<4>)>,
    past: usize,
    k: Tensor<4>,
    v: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, d] = k.dims();
    let need = past + t;
    let device = k.device();
    let dt = k.dtype();
    let grow = |buf: Tensor<4>, cap: usize| {
        let old = buf.dims()[2];
        Tensor::cat(vec![buf, Tensor::zeros([b, h, cap - old, d], (&device, dt))], 2)
    };
    let (kb, vb) = match slot.take() {
        Some((kb, vb)) if kb.dims()[2] >= need => (kb, vb),
        Some((kb, vb)) => {
            let cap = need.max(2 * kb.dims()[2]);
            (grow(kb, cap), grow(vb, cap))
        }
        None => {
            let z = || Tensor::zeros([b, h, need, d], (&device, dt));
            (z(), z())
        }
    };
    let range = [0..b, 0..h, past..need, 0..d];
    let kb = kb.slice_assign(range.clone(), k);
    let vb = vb.slice_assign(range, v);
    let views = (kb.clone().narrow(2, 0, need), vb.clone().narrow(2, 0, need));
    *slot = Some((kb, vb));
    views
}

/// One layer's cache slot and its filled positions.
pub type LayerCache<'a> = (&'a mut Option<(Tensor<4>, Tensor<4>)>, usize);

/// One RoPE table: cos/sin of shape `[B, 1, T, head_dim]` (rotate-half layout).
pub struct RopeTable {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
}

/// RoPE for one call: the table of the full-attention layers, Gemma 3's table for the sliding
/// layers, and the positions they were built for (sliding-window masks are derived from them).
pub struct Rope {
    pub global: RopeTable,
    pub local: Option<RopeTable>,
    pub positions: Vec<Vec<usize>>,
}

impl Rope {
    /// A single table for all layers. `positions[b][t]` is the absolute position of token t of row b.
    pub fn new(inv_freq: &[f32], positions: &[Vec<usize>], device: &Device) -> Self {
        Rope { global: RopeTable::new(inv_freq, positions, device), local: None, positions: positions.to_vec() }
    }

    /// The same tables off the autodiff graph (on the inner device).
    pub fn inner(&self) -> Rope {
        let inner = |t: &RopeTable| RopeTable { cos: t.cos.clone().inner(), sin: t.sin.clone().inner() };
        Rope { global: inner(&self.global), local: self.local.as_ref().map(inner), positions: self.positions.clone() }
    }

    /// The table for a layer.
    pub fn table(&self, sliding: bool) -> &RopeTable {
        match (&self.local, sliding) {
            (Some(local), true) => local,
            _ => &self.global,
        }
    }

    /// `mask` plus a sliding window of `window` keys over `positions` (no cache: keys are the
    /// queries), built on the mask's device from the `[B, T]` positions.
    pub fn window_mask(&self, mask: &Tensor<4>, window: usize) -> Tensor<4> {
        let device = mask.device();
        let pos = positions_tensor(&self.positions, &device);
        let [b, t] = pos.dims();
        let query = pos.clone().reshape([b, 1, t, 1]).expand([b, 1, t, t]);
        let key = pos.reshape([b, 1, 1, t]).expand([b, 1, t, t]);
        let outside = query.greater_equal(key.add_scalar(window as i64));
        mask.clone() + Tensor::<4>::zeros([b, 1, t, t], (&device, mask.dtype())).mask_fill(outside, MASKED)
    }
}

/// `positions[b][t]` as an Int tensor `[B, T]` (the only host data RoPE tables and window masks need).
fn positions_tensor(positions: &[Vec<usize>], device: &Device) -> Tensor<2, Int> {
    let b = positions.len();
    let t = positions.first().map(|p| p.len()).unwrap_or(0);
    let flat: Vec<i64> = positions.iter().flat_map(|r| r.iter().map(|&p| p as i64)).collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

impl RopeTable {
    /// cos/sin of `position × inv_freq` for each token, computed on `device` in f32 (only the
    /// positions and the frequencies go there).
    pub fn new(inv_freq: &[f32], positions: &[Vec<usize>], device: &Device) -> Self {
        let pos = positions_tensor(positions, device);
        let [b, t] = pos.dims();
        let hd = 2 * inv_freq.len();
        let freq: Vec<f32> = inv_freq.iter().chain(inv_freq).copied().collect(); // rotate-half layout
        let freq = Tensor::<1>::from_data(TensorData::new(freq, [hd]), (device, DType::F32)).reshape([1, 1, 1, hd]);
        let angle = like(pos.float(), DType::F32).reshape([b, 1, t, 1]) * freq;
        RopeTable { cos: angle.clone().cos(), sin: angle.sin() }
    }

    /// x: `[B, H, T, hd]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

impl Attention {
    /// x: `[B, T, D]`; mask: additive `[B or 1, 1, T, S]`; with a cache (slot, filled positions),
    /// new keys are appended.
    pub fn forward(&self, x: Tensor<3>, rope: &RopeTable, mask: &Tensor<4>, cache: Option<LayerCache<'_>>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let cpu_decoding = self.packed_qkv.is_some() || self.q_proj.packed.is_some();
        let (q, k, v) = match self.packed_qkv.as_ref().filter(|_| is_plain_cpu(&x.device())) {
            Some(qkv) => {
                let y = packed_matmul(x.reshape([b * t, d]), qkv);
                let part = |at: usize, heads: usize| y.clone().narrow(1, at * hd, heads * hd).reshape([b, t, heads, hd]);
                (part(0, nh), part(nh, nkv), part(nh + nkv, nkv))
            }
            None => (
                self.q_proj.forward(x.clone()).reshape([b, t, nh, hd]),
                self.k_proj.forward(x.clone()).reshape([b, t, nkv, hd]),
                self.v_proj.forward(x).reshape([b, t, nkv, hd]),
            ),
        };
        let (mut q, mut k, mut v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(q);
            k = kn.forward(k);
        }
        let q = rope.apply(q);
        k = rope.apply(k);
        if cpu_decoding && cache.is_some() {
            // A model prepared by Llama::for_cpu_decoding caches keys and values in bf16, as a
            // bf16 model does in transformers: decoding reads the whole cache every step, and
            // half the bytes is most of attention's cost there (crate::attend).
            (k, v) = (like(k, DType::BF16), like(v, DType::BF16));
        }
        let (k, v) = match cache {
            Some((slot, past)) => {
                let views = cache_append(slot, past, k, v);
                // A decode step on the CPU: attention reads the cache in place (crate::attend).
                if let Some((kb, vb)) = slot.as_ref().filter(|_| t == 1) {
                    let s = past + 1;
                    drop(views);
                    if let Some(out) = crate::attend::decode_attention(&q, kb, vb, s, mask, self.scale as f32) {
                        return self.o_proj.forward(out);
                    }
                    let (kb, vb) = slot.as_ref().expect("just appended");
                    (kb.clone().narrow(2, 0, s), vb.clone().narrow(2, 0, s))
                } else {
                    views
                }
            }
            None => (k, v),
        };
        // A bf16 model on the CPU computes attention in f32: burn-flex runs bf16 matmuls and
        // element-wise ops by widening to f32 and rounding back at every op, so one widening
        // here is both faster and closer to f32 (autocast, too, runs softmax in f32).
        let dt = q.dtype();
        let att_dt = if dt == DType::BF16 && crate::bf16_linear::applies(&q.device()) { DType::F32 } else { dt };
        let (q, k, v) = (like(q, att_dt), like(k, att_dt), like(v, att_dt));
        let s = k.dims()[2];
        let rep = nh / nkv;
        // Grouped-query attention without copying K/V: head h uses kv head h / rep, so the
        // rep query heads of a group are stacked along the sequence axis.
        let q = q.reshape([b, nkv, rep * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale);
        let scores: Tensor<5> = scores.reshape([b, nkv, rep, t, s]);
        let scores = scores + like(mask.clone(), att_dt).unsqueeze_dim::<5>(1);
        let probs = softmax(scores, 4).reshape([b, nkv, rep * t, s]);
        let out = probs.matmul(v).reshape([b, nh, t, hd]).swap_dims(1, 2).reshape([b, t, nh * hd]);
        self.o_proj.forward(like(out, dt))
    }
}

/// Applies an optional norm.
fn maybe_norm(norm: &Option<RmsNorm>, x: Tensor<3>) -> Tensor<3> {
    match norm {
        Some(n) => n.forward(x),
        None => x,
    }
}

impl Block {
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTable,
        mask: &Tensor<4>,
        cache: Option<LayerCache<'_>>,
    ) -> Tensor<3> {
        let dt = x.dtype();
        let a = self.self_attn.forward(self.attn_norm.forward(x.clone()), rope, mask, cache);
        let h = x + like(maybe_norm(&self.attn_out_norm, a), dt);
        let m = self.mlp.forward(self.mlp_norm.forward(h.clone()));
        h + like(maybe_norm(&self.mlp_out_norm, m), dt)
    }
}

#[derive(Module, Debug)]
pub struct Llama {
    /// `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the output projection is tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    /// RoPE inverse frequencies (head_dim / 2) of the full-attention layers.
    pub inv_freq: Vec<f32>,
    /// Gemma 3: RoPE inverse frequencies of the sliding-window layers.
    pub inv_freq_local: Option<Vec<f32>>,
    /// Keys visible to a query in a sliding layer (the query included).
    pub sliding_window: Option<usize>,
    /// Embeddings are multiplied by this (Gemma: √hidden; else 1).
    pub embed_scale: f32,
    /// The dtype activations are computed in. The weights are cast to it where they are used, so
    /// they may be kept wider (LoRA's f32 adapters on a bf16 base).
    #[module(skip)]
    pub compute_dtype: DType,
    /// The dtype of the residual stream between blocks: the compute dtype, or f32 after
    /// [`Llama::autocast`].
    #[module(skip)]
    pub residual_dtype: DType,
    /// The tied output head (`embed_tokens`ᵀ) packed for the CPU's bf16 kernel, set only by
    /// [`Llama::for_cpu_decoding`].
    #[module(skip)]
    pub packed_head: Option<Arc<PackedBf16>>,
}

/// Additive mask value for disallowed attention.
pub const MASKED: f32 = -1e30;

/// Source of HF-named weights (`model.layers.0.self_attn.q_proj.weight`, ...) in PyTorch layout,
/// converted to f32. Returns `Ok(None)` when the tensor is absent.
pub trait WeightSource {
    fn tensor(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;
    /// The tensor in `dtype`. The default narrows [`WeightSource::tensor`]'s f32 values one tensor
    /// at a time (GGUF dequantises to f32 per tensor); sources that store `dtype` already
    /// (bf16 safetensors) override it to hand their bytes over without an f32 round trip.
    fn tensor_as(&mut self, name: &str, dtype: Dtype) -> Result<Option<(Vec<usize>, TensorData)>> {
        Ok(self.tensor(name)?.map(|(shape, data)| {
            let t = TensorData::new(data, shape.clone());
            (shape, if dtype == Dtype::F32 { t } else { t.convert_dtype(dtype.burn()) })
        }))
    }
    /// Human-readable origin for error messages (file path).
    fn origin(&self) -> String;
}

/// A weight from `src` in the source's load dtype.
struct Load<'a> {
    src: &'a mut dyn WeightSource,
    dtype: Dtype,
}

fn take(
    src: &mut Load<'_>,
    name: &str,
    shape: &[usize],
    device: &Device,
) -> Result<Option<TensorData>> {
    let dtype = src.dtype;
    let src = &mut *src.src;
    match src.tensor_as(name, dtype)? {
        None => Ok(None),
        Some((got, data)) => {
            if got != shape {
                bail!(
                    "tensor {name} in {} has shape {:?}, expected {:?}",
                    src.origin(),
                    got,
                    shape
                );
            }
            let _ = device;
            Ok(Some(data))
        }
    }
}

/// A tensor holding `data` in `data`'s own dtype (not the device's default).
fn tensor_of<const D: usize>(data: TensorData, device: &Device) -> Tensor<D> {
    let dtype = data.dtype();
    Tensor::from_data(data, (device, dtype))
}

fn need(src: &mut Load<'_>, name: &str, shape: &[usize], device: &Device) -> Result<TensorData> {
    let origin = src.src.origin();
    take(src, name, shape, device)?
        .with_context(|| format!("tensor {name} missing from {origin}"))
}

fn linear(
    src: &mut Load<'_>,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &Device,
) -> Result<Linear> {
    let w = need(src, &format!("{prefix}.weight"), &[d_out, d_in], device)?;
    let w = tensor_of::<2>(w, device).transpose();
    // Materialise the transpose so matmuls read contiguous memory.
    let w = tensor_of::<2>(w.into_data(), device);
    let b = if bias {
        Some(tensor_of::<1>(need(src, &format!("{prefix}.bias"), &[d_out], device)?, device))
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

fn norm(src: &mut Load<'_>, name: &str, d: usize, cfg: &LlamaConfig, device: &Device) -> Result<RmsNorm> {
    let w = need(src, name, &[d], device)?;
    Ok(RmsNorm { weight: Param::from_tensor(tensor_of(w, device)), eps: cfg.rms_norm_eps, offset: cfg.norm_offset() })
}

impl Llama {
    /// Builds the model from HF-named weights. Every expected tensor must be present with the
    /// expected shape; `lm_head.weight` may be absent when embeddings are tied.
    pub fn from_source(cfg: &LlamaConfig, src: &mut dyn WeightSource, device: &Device) -> Result<Self> {
        Self::from_source_as(cfg, src, device, Dtype::F32)
    }

    /// [`Llama::from_source`] with every weight stored, and the activations computed, in `dtype`.
    pub fn from_source_as(cfg: &LlamaConfig, src: &mut dyn WeightSource, device: &Device, dtype: Dtype) -> Result<Self> {
        let src = &mut Load { src, dtype };
        cfg.validate()?;
        let d = cfg.hidden_size;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.n_kv_heads(), cfg.head_dim());
        let act = cfg.activation()?;
        let embed = need(src, "model.embed_tokens.weight", &[cfg.vocab_size, d], device)?;
        let norm_names = block_norm_names(cfg);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut block_norm = |k: usize| -> Result<Option<RmsNorm>> {
                norm_names[k].map(|n| norm(src, &format!("{p}.{n}.weight"), d, cfg, device)).transpose()
            };
            let [attn_norm, attn_out_norm, mlp_norm, mlp_out_norm] =
                [block_norm(0)?, block_norm(1)?, block_norm(2)?, block_norm(3)?];
            let head_norm = |src: &mut Load<'_>, n: &str| -> Result<Option<RmsNorm>> {
                if cfg.qk_norm() {
                    Ok(Some(norm(src, &format!("{p}.self_attn.{n}.weight"), hd, cfg, device)?))
                } else {
                    Ok(None)
                }
            };
            let attn = Attention {
                q_proj: linear(src, &format!("{p}.self_attn.q_proj"), d, nh * hd, cfg.qkv_bias(), device)?,
                k_proj: linear(src, &format!("{p}.self_attn.k_proj"), d, nkv * hd, cfg.qkv_bias(), device)?,
                v_proj: linear(src, &format!("{p}.self_attn.v_proj"), d, nkv * hd, cfg.qkv_bias(), device)?,
                o_proj: linear(src, &format!("{p}.self_attn.o_proj"), nh * hd, d, cfg.o_bias(), device)?,
                q_norm: head_norm(src, "q_norm")?,
                k_norm: head_norm(src, "k_norm")?,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                scale: cfg.attn_scale(),
                packed_qkv: None,
            };
            let mlp = Mlp {
                gate_proj: linear(src, &format!("{p}.mlp.gate_proj"), d, cfg.intermediate_size, false, device)?,
                up_proj: linear(src, &format!("{p}.mlp.up_proj"), d, cfg.intermediate_size, false, device)?,
                down_proj: linear(src, &format!("{p}.mlp.down_proj"), cfg.intermediate_size, d, false, device)?,
                act,
                packed_gate_up: None,
            };
            layers.push(Block {
                attn_norm: attn_norm.context("attention norm")?,
                self_attn: attn,
                attn_out_norm,
                mlp_norm: mlp_norm.context("mlp norm")?,
                mlp,
                mlp_out_norm,
                sliding: cfg.layer_is_sliding(i),
            });
        }
        let final_norm = norm(src, "model.norm.weight", d, cfg, device)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            match take(src, "lm_head.weight", &[cfg.vocab_size, d], device)? {
                Some(w) => {
                    let w = tensor_of::<2>(w, device).transpose();
                    Some(Linear::new(tensor_of(w.into_data(), device), None))
                }
                // Some checkpoints omit lm_head and rely on tying even without the flag.
                None => None,
            }
        };
        Ok(Llama {
            embed_tokens: Param::from_tensor(tensor_of(embed, device)),
            layers,
            norm: final_norm,
            lm_head,
            inv_freq: cfg.rope_inv_freq(),
            inv_freq_local: cfg.rope_inv_freq_local(),
            sliding_window: cfg.effective_sliding_window(),
            embed_scale: cfg.embed_scale(),
            compute_dtype: dtype.burn(),
            residual_dtype: dtype.burn(),
            packed_head: None,
        })
    }

    /// Mixed-precision training as PyTorch's autocast runs it: the norm weights in f32 and the
    /// residual stream (embeddings, residual adds, norms) in f32, the matmuls and attention in the
    /// compute dtype. A bf16 weight moves only when its f32 master crosses to another bf16 value
    /// (stochastically rounded, see dno-train's optimiser), which adds noise; the norm weights
    /// (scales near 1, where bf16's spacing is 2^-7) and the embeddings' rows then reach the
    /// forward exactly. Parameters keep their ids. A no-op for an f32 model.
    pub fn autocast(self) -> Self {
        if self.compute_dtype == DType::F32 {
            return self;
        }
        let opt = |n: Option<RmsNorm>| n.map(RmsNorm::widen);
        let layers = self
            .layers
            .into_iter()
            .map(|l| Block {
                attn_norm: l.attn_norm.widen(),
                self_attn: Attention { q_norm: opt(l.self_attn.q_norm), k_norm: opt(l.self_attn.k_norm), ..l.self_attn },
                attn_out_norm: opt(l.attn_out_norm),
                mlp_norm: l.mlp_norm.widen(),
                mlp_out_norm: opt(l.mlp_out_norm),
                ..l
            })
            .collect();
        Llama { layers, norm: self.norm.widen(), residual_dtype: DType::F32, ..self }
    }

    /// A bf16 model prepared for generation on a CPU with AVX512-BF16 (a no-op otherwise: an f32
    /// model, another device, a CPU without it, or LoRA adapters not merged). Every projection
    /// and the tied head run on [`crate::bf16mm`] (bf16 weights, inputs rounded to bf16, f32
    /// accumulation; on AMX CPUs, tile products) and everything else in f32: attention, norms,
    /// the residual stream. Keys and values are cached in bf16 (as transformers caches them for a
    /// bf16 model). That is PyTorch's CPU autocast, and 2-5x burn-flex's f32 gemm on decoding
    /// shapes (burn-flex's own bf16 path widens to f32 and is slower than its f32 path). Inference only:
    /// the packed weights are a copy made here, which training would not update.
    pub fn for_cpu_decoding(self) -> Self {
        let linears_ok = self.layers.iter().all(|l| {
            [&l.self_attn.q_proj, &l.self_attn.k_proj, &l.self_attn.v_proj, &l.self_attn.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj]
                .iter()
                .all(|p| p.lora.is_none())
        }) && self.lm_head.as_ref().is_none_or(|h| h.lora.is_none());
        if self.weight_dtype() != DType::BF16 || !is_plain_cpu(&self.device()) || !crate::bf16mm::supported() || !linears_ok {
            return self;
        }
        let bits = |t: Tensor<2>| like(t, DType::BF16).into_data().try_into_vec::<half::bf16>().expect("a bf16 tensor reads back as bf16");
        let pack = |l: Linear| {
            let [k, n] = l.weight.dims();
            let packed = Some(Arc::new(PackedBf16::from_bf16(&bits(l.weight.val()), k, n, false)));
            Linear { packed, ..l }
        };
        let packed_head = match &self.lm_head {
            Some(_) => None,
            None => {
                let [v, d] = self.embed_tokens.dims();
                Some(Arc::new(PackedBf16::from_bf16(&bits(self.embed_tokens.val()), d, v, true)))
            }
        };
        // Projections that read the same input become one packed matrix (one kernel call and one
        // read of the input); their own packed copies are then dropped. Only without biases
        // (Qwen2's q/k/v keep theirs, separately).
        let fuse = |parts: &mut [Linear]| -> Option<Arc<PackedBf16>> {
            if parts.iter().any(|p| p.bias.is_some() || p.packed.is_none()) {
                return None;
            }
            let fused = PackedBf16::concat(&parts.iter().map(|p| p.packed.as_deref().expect("checked")).collect::<Vec<_>>())?;
            parts.iter_mut().for_each(|p| p.packed = None);
            Some(Arc::new(fused))
        };
        let wide = self.autocast();
        let layers = wide
            .layers
            .into_iter()
            .map(|l| {
                let a = l.self_attn;
                let mut qkv = [pack(a.q_proj), pack(a.k_proj), pack(a.v_proj)];
                let packed_qkv = fuse(&mut qkv);
                let [q_proj, k_proj, v_proj] = qkv;
                let self_attn = Attention { q_proj, k_proj, v_proj, packed_qkv, o_proj: pack(a.o_proj), ..a };
                let m = l.mlp;
                let mut gate_up = [pack(m.gate_proj), pack(m.up_proj)];
                let packed_gate_up = if m.act == Activation::Silu { fuse(&mut gate_up) } else { None };
                let [gate_proj, up_proj] = gate_up;
                let mlp = Mlp { gate_proj, up_proj, down_proj: pack(m.down_proj), packed_gate_up, ..m };
                Block { self_attn, mlp, ..l }
            })
            .collect();
        Llama { layers, lm_head: wide.lm_head.map(pack), packed_head, compute_dtype: DType::F32, ..wide }
    }

    /// RoPE tables for tokens at `positions[b][t]`, in the compute dtype (the angles are
    /// computed in f32 on the host, then cast, as transformers does).
    pub fn rope(&self, positions: &[Vec<usize>], device: &Device) -> Rope {
        let mut rope = Rope::new(&self.inv_freq, positions, device);
        rope.local = self.inv_freq_local.as_ref().map(|f| RopeTable::new(f, positions, device));
        let dt = self.compute_dtype;
        let cast = |t: RopeTable| RopeTable { cos: like(t.cos, dt), sin: like(t.sin, dt) };
        rope.global = cast(rope.global);
        rope.local = rope.local.map(cast);
        rope
    }

    /// The dtype the weights are stored in (that of the embeddings).
    pub fn weight_dtype(&self) -> DType {
        self.embed_tokens.val().dtype()
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.val().device()
    }

    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.dims()[0]
    }

    pub(crate) fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let d = self.embed_tokens.dims()[1];
        let x = self.embed_tokens.val().select(0, tokens.reshape([b * t])).reshape([b, t, d]);
        let x = like(x, self.residual_dtype);
        if self.embed_scale == 1.0 {
            x
        } else {
            x.mul_scalar(self.embed_scale)
        }
    }

    /// Runs the blocks: each layer gets its RoPE table and, for sliding layers, `window_mask`.
    fn blocks(&self, mut x: Tensor<3>, rope: &Rope, mask: &Tensor<4>, window_mask: Option<&Tensor<4>>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        for (i, layer) in self.layers.iter().enumerate() {
            let m = match (layer.sliding, window_mask) {
                (true, Some(w)) => w,
                _ => mask,
            };
            let slot = cache.as_mut().map(|c| (&mut c.layers[i], past));
            x = layer.forward(x, rope.table(layer.sliding), m, slot);
        }
        x
    }

    /// Full causal forward without cache: tokens `[B, T]` -> final-normed hidden states `[B, T, D]`.
    /// Works on an autodiff device.
    pub fn forward_hidden(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let t = tokens.dims()[1];
        let device = tokens.device();
        let rope = self.rope(&[(0..t).collect()], &device);
        self.forward_hidden_with(tokens, &rope, &causal_mask(t, &device))
    }

    /// Forward without cache with explicit RoPE positions and an additive attention mask
    /// `[B or 1, 1, T, T]` (0 = visible, `MASKED` = hidden): several sequences can share one row,
    /// e.g. a prompt followed by two responses that each see the prompt but not each other.
    /// Sliding-window layers also hide keys `sliding_window` or more positions back (by `rope.positions`).
    pub fn forward_hidden_with(&self, tokens: Tensor<2, Int>, rope: &Rope, mask: &Tensor<4>) -> Tensor<3> {
        let (mask, window_mask) = self.layer_masks(mask, rope);
        let x = self.blocks(self.embed(tokens), rope, &mask, window_mask.as_ref(), None);
        self.final_norm(x)
    }

    /// The final norm of the residual stream `x`, in the compute dtype (the head's input).
    pub(crate) fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        like(self.norm.forward(x), self.compute_dtype)
    }

    /// The additive masks the layers of [`Llama::forward_hidden_with`] use: `mask` in the compute
    /// dtype, and for sliding-window layers (when the model has them) `mask` with the window.
    pub(crate) fn layer_masks(&self, mask: &Tensor<4>, rope: &Rope) -> (Tensor<4>, Option<Tensor<4>>) {
        let mask = like(mask.clone(), self.compute_dtype);
        let window_mask = self.sliding_window.map(|w| rope.window_mask(&mask, w));
        (mask, window_mask)
    }

    /// Output projection (tied or not): hidden `[..., D]` -> logits `[..., V]`.
    pub fn lm_head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let dims = hidden.dims();
                let d = dims[D - 1];
                let rows: usize = dims[..D - 1].iter().product();
                let logits = match self.packed_head.as_ref().filter(|_| is_plain_cpu(&hidden.device())) {
                    Some(packed) => packed_matmul(hidden.reshape([rows, d]), packed),
                    None => {
                        let w = like(self.embed_tokens.val(), hidden.dtype());
                        hidden.reshape([rows, d]).matmul(w.transpose())
                    }
                };
                let mut out = dims;
                out[D - 1] = self.vocab_size();
                logits.reshape(out)
            }
        }
    }

    /// Full causal forward: tokens `[B, T]` -> logits `[B, T, V]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.lm_head(self.forward_hidden(tokens))
    }

    /// Incremental forward with a KV cache (inference). Row `r` of `tokens` `[B, T]` holds tokens at
    /// positions `start_pos[r] .. start_pos[r] + T`; the first `left_pad[r]` cached key slots of row
    /// `r` are padding and masked out. Returns final-normed hidden states `[B, T, D]`.
    pub fn forward_cached(
        &self,
        tokens: Tensor<2, Int>,
        start_pos: &[usize],
        left_pad: &[usize],
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        if cache.layers.len() != self.layers.len() {
            *cache = KvCache::new(self.layers.len());
        }
        let past = cache.len();
        let s = past + t;
        let positions: Vec<Vec<usize>> =
            start_pos.iter().map(|&p| (p..p + t).collect()).collect();
        let rope = self.rope(&positions, &device);
        // Cache slot j of row r holds position j - left_pad[r]: slot distance is position distance.
        // Built on the device from the B pads: key slot j is hidden from query i (at slot past + i)
        // when it is padding, in the future, or `window` or more slots back.
        let pads: Vec<i64> = (0..b).map(|r| left_pad.get(r).copied().unwrap_or(0) as i64).collect();
        let shape = [b, 1, t, s];
        let pad = Tensor::<1, Int>::from_data(TensorData::new(pads, [b]), &device).reshape([b, 1, 1, 1]).expand(shape);
        let (key, query) = (index_grid(0, shape, 3, &device), index_grid(past, shape, 2, &device));
        let cached_mask = |window: usize| {
            let mut hidden = key.clone().lower(pad.clone()).bool_or(key.clone().greater(query.clone()));
            if window < s {
                hidden = hidden.bool_or(key.clone().add_scalar(window as i64).lower_equal(query.clone()));
            }
            Tensor::<4>::zeros(shape, (&device, self.compute_dtype)).mask_fill(hidden, MASKED)
        };
        let mask = cached_mask(usize::MAX / 2);
        let window_mask = self.sliding_window.map(cached_mask);
        let x = self.blocks(self.embed(tokens), &rope, &mask, window_mask.as_ref(), Some(&mut *cache));
        cache.len = s;
        self.final_norm(x)
    }
}

/// Additive causal mask `[1, 1, T, T]`, built on `device`.
pub fn causal_mask(t: usize, device: &Device) -> Tensor<4> {
    let shape = [1, 1, t, t];
    let (key, query) = (index_grid(0, shape, 3, device), index_grid(0, shape, 2, device));
    Tensor::<4>::zeros(shape, device).mask_fill(key.greater(query), MASKED)
}

/// `start, start + 1, ...` along `axis` of `shape` (2: query slots, 3: key slots), broadcast to
/// `shape`: the index grids the masks compare.
fn index_grid(start: usize, shape: [usize; 4], axis: usize, device: &Device) -> Tensor<4, Int> {
    let n = shape[axis];
    let mut along = [1; 4];
    along[axis] = n;
    Tensor::<1, Int>::arange(start as i64..(start + n) as i64, device).reshape(along).expand(shape)
}

/// Reads a float tensor back to host memory as f32.
pub fn to_vec_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading tensor back from device: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Linear with packed weights computes with them (here deliberately different from its
    /// Param, so the assertion tells which one was used), adds its bias, keeps the input dtype.
    #[test]
    fn linear_uses_its_packed_weights() {
        if !crate::bf16mm::supported() {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16");
            return;
        }
        let device = Device::flex();
        let (k, n) = (6, 5);
        let param: Vec<f32> = (0..k * n).map(|i| i as f32 / 8.0).collect();
        let other: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 / 16.0).collect();
        let t = |v: Vec<f32>, s: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, s), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(vec![0.5f32; n], [n]), &device);
        let lin = Linear { packed: Some(Arc::new(PackedBf16::new(&other, k, n))), ..Linear::new(t(param, [k, n]), Some(bias)) };
        let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 - 5.0) / 4.0).collect();
        let y = to_vec_f32(lin.forward(t(x.clone(), [2, k]))).unwrap();
        for r in 0..2 {
            for j in 0..n {
                let want: f32 = 0.5 + (0..k).map(|q| x[r * k + q] * other[q * n + j]).sum::<f32>();
                assert!((y[r * n + j] - want).abs() < 1e-5, "({r},{j}): {} vs {want}", y[r * n + j]);
            }
        }
        // Forked onto an autodiff device (training), the Param computes, with its gradient.
        let ad = device.clone().autodiff();
        let lin = lin.fork(&ad).train();
        let y = lin.forward(Tensor::<2>::from_data(TensorData::new(x.clone(), [2, k]), &ad));
        let grads = y.clone().sum().backward();
        assert!(lin.weight.grad(&grads).is_some(), "the weight gets a gradient");
        let y = to_vec_f32(y).unwrap();
        let want: f32 = 0.5 + (0..k).map(|q| x[q] * (q * n) as f32 / 8.0).sum::<f32>();
        assert!((y[0] - want).abs() < 1e-5, "autodiff path used the packed weights: {} vs {want}", y[0]);
    }

    /// A bf16 Linear being trained on the CPU runs on dno's bf16 kernel (crate::bf16_linear),
    /// forward and backward, and its weight and input get their gradients.
    #[test]
    fn bf16_linear_trains_on_the_kernel() {
        if !crate::bf16_linear::applies(&Device::flex()) {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16 (or DNO_BF16MM=0)");
            return;
        }
        let ad = Device::flex().autodiff();
        let (k, n) = (64, 48);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5).collect();
        let lin = Linear::new(like(Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &ad), DType::BF16), None);
        let lin = lin.fork(&ad).train();
        let xv: Vec<f32> = (0..3 * k).map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5).collect();
        let x = like(Tensor::<2>::from_data(TensorData::new(xv.clone(), [3, k]), &ad), DType::BF16).require_grad();
        let y = lin.forward(x.clone());
        assert!(crate::bf16_linear::holds_pack(&lin.weight.val()), "the product ran on the bf16 kernel");
        assert_eq!(y.dtype(), DType::BF16);
        let grads = like(y.clone(), DType::F32).sum().backward();
        let gw = to_vec_f32(lin.weight.grad(&grads).expect("the weight gets a gradient")).unwrap();
        // d(sum y)/dW[q][j] = sum over rows of x[r][q] (bf16-rounded x; bf16-rounded result).
        for q in [0, 17, 63] {
            let want: f32 = (0..3).map(|r| half::bf16::from_f32(xv[r * k + q]).to_f32()).sum();
            assert!((gw[q * n] - want).abs() <= 1e-2 * want.abs().max(1.0), "dW[{q}][0]: {} vs {want}", gw[q * n]);
        }
        assert!(x.grad(&grads).is_some(), "the input gets a gradient");
    }
}
