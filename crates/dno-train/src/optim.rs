//! AdamW and global gradient-norm clipping.
//!
//! The AdamW update is PyTorch's (and burn's): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
//! p ← p(1 − lr·λ) − lr·m̂/(√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ). burn's `AdamW` spends ~10
//! element-wise tensor ops per parameter, each a pass over memory on one thread of the CPU
//! backend (~1 s a step for 135M parameters, while the other core idles). [`AdamW`] here runs the
//! same update as one fused pass over host memory on all cores when the parameters live on the
//! CPU, and delegates to burn's `AdamW` elsewhere (a GPU). Its state is burn's `AdamWState`, so checkpoints
//! keep burn's record format.
//!
//! **Mixed precision.** Under `--dtype bf16`/`f16` the policy's parameters are stored and trained in
//! the compute dtype (forward and backward in bf16, bf16 gradients), and each parameter's AdamW
//! state also holds its **f32 master copy** ([`State::master`]): the update is applied to the master
//! in f32, with f32 moments, and the parameter is the master rounded back to the compute dtype.
//! This is the scheme of Megatron-LM's and DeepSpeed's bf16 optimisers; it keeps no f32 gradients
//! and no second copy of the weights inside the autodiff graph.
//!
//! The rounding back is **stochastic** ([`round_stochastic`]): up or down with probabilities that
//! make the rounded weight equal the master in expectation. Round-to-nearest would freeze the
//! model: weights start on the bf16 grid, and at DPO's learning rates (5e-7..1e-6, each Adam step
//! moving a weight by about lr) a weight near 0.05 needs ~100 steps before its master crosses half
//! of bf16's spacing there (~1e-4). Measured on SmolLM2-135M (scripts/bench_precision.sh, 24 pairs,
//! lr 1e-6): after 20 steps the f32 run's loss fell from 0.693 to 0.361 while a round-to-nearest bf16
//! run's rose to 0.709.
//!
//! burn's `GradientClipping::Norm` clips each parameter's gradient by its own norm; PyTorch's
//! `clip_grad_norm_` (what TRL uses) clips the *global* norm over all parameters, which keeps
//! the update direction. That is implemented here over burn's `GradientsParams`.

use anyhow::{bail, Result};
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{
    AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, ModuleOptimizer, Optimizer, RecordState,
    StateSink, StateSource,
};
use burn::tensor::{bf16, f16, DType, Device, Tensor, TensorData};
use dno_math::SplitMix64;
use dno_model::Llama;
use rayon::prelude::*;

/// AdamW with β = (0.9, 0.999), ε = 1e-8 (burn's default is 1e-5), decoupled weight decay on
/// matrices only: rank-1 parameters (RMSNorm weights, biases) get none, as in HF Trainer.
pub fn adamw(model: &Llama, weight_decay: f64) -> ModuleOptimizer {
    let mut optim = ModuleOptimizer::from(AdamW::new(weight_decay));
    if weight_decay > 0.0 {
        let mut v = RankOneIds(Vec::new());
        model.visit(&mut v);
        if !v.0.is_empty() {
            optim = optim.with_group(ParamGroup::from_ids(v.0), AdamW::new(0.0), None);
        }
    }
    optim
}

/// One parameter's optimiser state: burn's AdamW moments, plus the f32 master copy when the
/// parameter itself is stored narrower (mixed precision).
#[derive(Clone)]
pub struct State<const D: usize> {
    pub adam: AdamWState<D>,
    /// The f32 master weights of a bf16/f16 parameter; `None` for an f32 parameter.
    pub master: Option<Tensor<D>>,
}

/// Written as burn's `AdamWState` leaves (`momentum.*`) plus `master`, so f32 runs keep burn's
/// record layout.
impl<const D: usize> RecordState for State<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        self.adam.state_flatten(prefix, out);
        if let Some(m) = &self.master {
            out.push_tensor(prefix, "master", m.clone().into_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let adam = AdamWState::state_unflatten(prefix, src, device)?;
        let master = src.take_tensor(prefix, "master").map(|d| Tensor::from_data(d, device));
        Some(State { adam, master })
    }
}

/// AdamW (see the module docs), β = (0.9, 0.999), ε = 1e-8.
#[derive(Clone)]
pub struct AdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// burn's AdamW with the same settings: the update off the CPU (tensor ops on any device).
    tensor_ops: burn::optim::AdamW,
}

impl AdamW {
    pub fn new(weight_decay: f64) -> Self {
        let (beta_1, beta_2, epsilon, weight_decay) = (0.9, 0.999, 1e-8, weight_decay as f32);
        let tensor_ops = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        AdamW { beta_1, beta_2, epsilon, weight_decay, tensor_ops }
    }

    /// The update of the f32 `master` as one fused pass over host buffers, in parallel chunks;
    /// `grad` may be f32, bf16 or f16 (widened per element). With `narrow`, it also returns the
    /// updated master rounded to that dtype (the parameter of a mixed-precision run), written in
    /// the same pass. `None` when the buffers are not host f32 (the caller falls back to tensor
    /// ops). `into_data` of a uniquely owned contiguous tensor moves its buffer: nothing is copied.
    fn step_host<const D: usize>(
        &self,
        lr: LearningRate,
        master: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
        narrow: Option<DType>,
    ) -> (Tensor<D>, AdamWState<D>, Option<Tensor<D>>) {
        let device = master.device();
        let shape = master.shape();
        let n = shape.num_elements();
        let mut p = master.into_data();
        let g = grad.into_data();
        let (mut m, mut v, time) = match state {
            Some(s) => (s.momentum.moment_1.into_data(), s.momentum.moment_2.into_data(), s.momentum.time + 1),
            None => {
                let zeros = TensorData::new(vec![0f32; n], shape.clone());
                (zeros.clone(), zeros, 1)
            }
        };
        let (c1, c2) = bias_corrections(self, time);
        let k = Coeffs {
            b1: self.beta_1,
            b2: self.beta_2,
            eps: self.epsilon,
            lr: lr as f32,
            decay: (1.0 - lr * self.weight_decay as f64) as f32,
            c1: c1 as f32,
            c2: c2 as f32,
        };
        {
            let ps = p.as_mut_slice::<f32>().expect("master weights are f32");
            let ms = m.as_mut_slice::<f32>().expect("AdamW moments are f32");
            let vs = v.as_mut_slice::<f32>().expect("AdamW moments are f32");
            match g.dtype() {
                DType::BF16 => k.pass(ps, ms, vs, g.as_slice::<bf16>().expect("bf16 gradient"), bf16::to_f32),
                DType::F16 => k.pass(ps, ms, vs, g.as_slice::<f16>().expect("f16 gradient"), f16::to_f32),
                _ => k.pass(ps, ms, vs, g.as_slice::<f32>().expect("f32 gradient"), |x| x),
            }
        }
        let narrowed = narrow.map(|dt| {
            let ps = p.as_slice::<f32>().expect("master weights are f32");
            // The draw depends on the step, the element and the master's own bits: reproducible
            // (a resumed run rounds alike) and not shared between parameters of one shape.
            let data = match dt {
                DType::BF16 => TensorData::new(round_all::<bf16>(ps, time), shape.clone()),
                DType::F16 => TensorData::new(round_all::<f16>(ps, time), shape.clone()),
                other => TensorData::new(ps.to_vec(), shape.clone()).convert_dtype(other),
            };
            Tensor::<D>::from_data(data, (&device, dt))
        });
        let back = |d: TensorData| Tensor::<D>::from_data(d, &device);
        (back(p), AdamWState::new(AdaptiveMomentumState::new(time, back(m), back(v))), narrowed)
    }
}

/// A 16-bit float type the masters are rounded to (bf16, f16).
pub trait Narrow: Copy + Send {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn to_bits(self) -> u16;
    fn from_bits(bits: u16) -> Self;
}

macro_rules! narrow_impl {
    ($t:ty) => {
        impl Narrow for $t {
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn to_bits(self) -> u16 {
                <$t>::to_bits(self)
            }
            fn from_bits(bits: u16) -> Self {
                <$t>::from_bits(bits)
            }
        }
    };
}
narrow_impl!(bf16);
narrow_impl!(f16);

/// Rounds `x` to a narrower float type, to one of its two neighbours there: to the farther one with
/// probability (distance to the nearer) / (distance between them), else to the nearer, so that
/// E[rounded] = x. `u` is uniform in [0, 1). Values the type holds exactly stay as they are.
pub fn round_stochastic<T: Narrow>(x: f32, u: f32) -> T {
    let near = T::from_f32(x);
    let n = near.to_f32();
    if n == x || !x.is_finite() || !n.is_finite() {
        return near;
    }
    // The neighbour on x's other side: one step up or down in magnitude (sign-magnitude bits).
    let bits = near.to_bits();
    let far = if x.abs() > n.abs() {
        T::from_bits(if n == 0.0 { (u16::from(x < 0.0) << 15) | 1 } else { bits + 1 })
    } else {
        T::from_bits(bits - 1)
    };
    let f = far.to_f32();
    if !f.is_finite() {
        return near;
    }
    if u < (x - n) / (f - n) {
        far
    } else {
        near
    }
}

/// The masters `ps` rounded stochastically, in parallel. Each draw depends on the step, the element
/// and the master's own bits: reproducible (a resumed run rounds alike) and not shared between
/// parameters of one shape.
fn round_all<T: Narrow>(ps: &[f32], time: usize) -> Vec<T> {
    ps.par_iter().enumerate().map(|(i, &x)| round_stochastic(x, uniform(time as u64, i as u64, x.to_bits()))).collect()
}

/// A uniform draw in [0, 1) from three integers (dno-math's SplitMix64, reseeded by their mix).
fn uniform(a: u64, b: u64, c: u32) -> f32 {
    let first = SplitMix64::new(a ^ (u64::from(c) << 32)).next_u64();
    SplitMix64::new(first ^ b).next_f32()
}

/// Stochastic rounding with tensor ops (off the CPU's fused path): `x` plus uniform noise of one
/// spacing of `dtype` at `x`, rounded to nearest, lands on the upper neighbour with probability
/// equal to x's position between the two ([`round_stochastic`]'s rule). The spacing is
/// 2^(floor(log2 |x|) − mantissa bits).
fn round_stochastic_tensor<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    let mantissa = match dtype {
        DType::BF16 => 7.0,
        DType::F16 => 10.0,
        _ => return x.cast(dtype),
    };
    let ln2 = std::f64::consts::LN_2;
    let spacing = x.clone().abs().log().div_scalar(ln2).floor().sub_scalar(mantissa).mul_scalar(ln2).exp();
    let noise = Tensor::<D>::random(x.shape(), burn::tensor::Distribution::Uniform(-0.5, 0.5), &x.device());
    (x + noise * spacing).cast(dtype)
}

/// The scalars of one AdamW update (see the module docs).
#[derive(Clone, Copy)]
struct Coeffs {
    b1: f32,
    b2: f32,
    eps: f32,
    lr: f32,
    /// 1 − lr·λ.
    decay: f32,
    /// Bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ.
    c1: f32,
    c2: f32,
}

impl Coeffs {
    /// p, m, v ← AdamW(p, m, v, g) element-wise, in parallel chunks; `widen` reads a gradient
    /// element as f32.
    fn pass<G: Copy + Send + Sync>(self, ps: &mut [f32], ms: &mut [f32], vs: &mut [f32], gs: &[G], widen: impl Fn(G) -> f32 + Sync) {
        const CHUNK: usize = 1 << 15;
        let Coeffs { b1, b2, eps, lr, decay, c1, c2 } = self;
        ps.par_chunks_mut(CHUNK)
            .zip(ms.par_chunks_mut(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let gi = widen(g[i]);
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] = p[i] * decay - lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                }
            });
    }
}

/// Whether [`AdamW`] takes the fused host path: an f32 master (the parameter, or its master copy),
/// a float gradient and f32 moments, all on the CPU.
fn fused_on_host<const D: usize>(master: &Tensor<D>, grad: &Tensor<D>, state: Option<&AdamWState<D>>) -> bool {
    let f32_state =
        state.is_none_or(|s| s.momentum.moment_1.dtype() == DType::F32 && s.momentum.moment_2.dtype() == DType::F32);
    master.device() == Device::flex()
        && master.dtype() == DType::F32
        && matches!(grad.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && f32_state
}

/// 1 − β₁ᵗ and 1 − β₂ᵗ for step `time` (1-based).
fn bias_corrections(o: &AdamW, time: usize) -> (f64, f64) {
    let t = time as i32;
    (1.0 - (o.beta_1 as f64).powi(t), 1.0 - (o.beta_2 as f64).powi(t))
}

impl Optimizer for AdamW {
    type State<const D: usize> = State<D>;

    /// An f32 parameter is updated in place of itself; a narrower one through its f32 master copy
    /// (created from the parameter on the first step), then rounded back to its dtype.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let dtype = tensor.dtype();
        let (adam, master) = match state {
            Some(State { adam, master }) => (Some(adam), master),
            None => (None, None),
        };
        let narrow = dtype != DType::F32;
        let master = match (narrow, master) {
            (false, _) => tensor,
            (true, Some(m)) => m,
            (true, None) => tensor.cast(DType::F32),
        };
        if fused_on_host(&master, &grad, adam.as_ref()) {
            let (master, adam, narrowed) = self.step_host(lr, master, grad, adam, narrow.then_some(dtype));
            return match narrowed {
                Some(param) => (param, Some(State { adam, master: Some(master) })),
                None => (master, Some(State { adam, master: None })),
            };
        }
        let grad = if grad.dtype() == DType::F32 { grad } else { grad.cast(DType::F32) };
        let (master, adam) = self.tensor_ops.step(lr, master, grad, adam);
        let adam = adam.expect("burn's AdamW always returns its state");
        if narrow {
            (round_stochastic_tensor(master.clone(), dtype), Some(State { adam, master: Some(master) }))
        } else {
            (master, Some(State { adam, master: None }))
        }
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.adam.momentum = state.adam.momentum.to_device(device);
        state.master = state.master.map(|m| m.to_device(device));
        state
    }
}

struct RankOneIds(Vec<ParamId>);

impl ModuleVisitor for RankOneIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D < 2 {
            self.0.push(param.id);
        }
    }
}

/// Every gradient's squared L2 norm as a `[1]` tensor, on the device (nothing is read back).
struct SquaredNorms<'a> {
    grads: &'a GradientsParams,
    sums: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            // Squared in f32: a bf16 sum over millions of elements would lose the small ones.
            let g = if g.dtype() == DType::F32 { g } else { g.cast(DType::F32) };
            self.sums.push(g.square().sum());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters, before clipping; when
/// `max_norm > 0` and the norm exceeds it, every gradient is scaled by `max_norm / norm`.
pub fn clip_global_norm(model: &Llama, mut grads: GradientsParams, max_norm: f64) -> Result<(GradientsParams, f64)> {
    let norm = global_norm(model, &grads)?;
    if !norm.is_finite() {
        bail!("gradient norm is {norm}: the loss diverged (lower lr or check the data)");
    }
    if max_norm > 0.0 && norm > max_norm {
        let mut scale = Scale { grads: &mut grads, factor: max_norm / (norm + 1e-6) };
        model.visit(&mut scale);
    }
    Ok((grads, norm))
}

/// The global L2 norm of `grads` over `model`'s parameters with one read-back from the device:
/// each tensor's squared norm (an f32 reduction on the device) is concatenated into one `[P]`
/// tensor, which is read back once and summed in f64.
pub fn global_norm(model: &Llama, grads: &GradientsParams) -> Result<f64> {
    let mut sq = SquaredNorms { grads, sums: Vec::new() };
    model.visit(&mut sq);
    if sq.sums.is_empty() {
        return Ok(0.0);
    }
    let sums = Tensor::cat(sq.sums, 0)
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the gradient norms back from the device: {e:?}"))?;
    Ok(sums.iter().map(|&x| x as f64).sum::<f64>().sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(t: &Tensor<2>) -> Vec<f32> {
        t.clone().into_data().try_to_vec::<f32>().unwrap()
    }

    /// The fused host update and burn's own AdamW agree over several steps, with weight decay and
    /// bias correction.
    #[test]
    fn fused_adamw_matches_burn_adamw() {
        let device = Device::flex();
        let init: Vec<f32> = (0..40_000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0).collect();
        let param = || Tensor::<2>::from_data(TensorData::new(init.clone(), [200, 200]), &device);
        let grad = |step: usize| {
            let g: Vec<f32> = (0..40_000).map(|i| (((i + 7 * step) * 53 % 97) as f32 - 48.0) / 30.0).collect();
            Tensor::<2>::from_data(TensorData::new(g, [200, 200]), &device)
        };
        let ours = AdamW::new(0.1);
        let theirs = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.1).build();
        let (mut a, mut c) = (param(), param());
        let (mut sa, mut sc) = (None, None);
        for step in 0..4 {
            let lr = 1e-2 / (step + 1) as f64;
            assert!(fused_on_host(&a, &grad(step), sa.as_ref().map(|s: &State<2>| &s.adam)), "step {step} must take the fused host path");
            (a, sa) = ours.step(lr, a, grad(step), sa);
            (c, sc) = theirs.step(lr, c, grad(step), sc);
        }
        let (va, vc) = (vals(&a), vals(&c));
        let moved = va.iter().zip(&init).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(moved > 1e-3, "the parameters did not move ({moved})");
        for i in 0..va.len() {
            assert!((va[i] - vc[i]).abs() < 1e-6, "element {i}: fused {} vs burn {}", va[i], vc[i]);
        }
        let sa = sa.unwrap();
        assert_eq!(sa.adam.momentum.time, 4);
        assert!(sa.master.is_none(), "an f32 parameter needs no master copy");
    }

    /// A bf16 parameter is trained through its f32 master copy: the master follows an f32 run fed
    /// the same gradients exactly, and the parameter is the master rounded stochastically to
    /// bf16: always to one of the master's two bf16 neighbours, unbiased, so updates below bf16's
    /// resolution move the weights from the first step on (round-to-nearest would not move them).
    #[test]
    fn bf16_parameter_updates_its_f32_master() {
        let device = Device::flex();
        // Values bf16 holds exactly, so the master created from the parameter equals the f32 start.
        let init: Vec<f32> = (0..4096).map(|i| bf16::from_f32(1.0 + (i % 7) as f32 / 8.0).to_f32()).collect();
        let grad = |step: usize| {
            let g: Vec<f32> = (0..4096).map(|i| (((i + 3 * step) * 29 % 61) as f32 - 30.0) / 40.0).collect();
            Tensor::<2>::from_data(TensorData::new(g, [64, 64]), &device).cast(DType::BF16)
        };
        let ours = AdamW::new(0.0);
        let mut full = Tensor::<2>::from_data(TensorData::new(init.clone(), [64, 64]), &device);
        let mut narrow = full.clone().cast(DType::BF16);
        let (mut sf, mut sn) = (None, None);
        // lr 3e-4: one step moves a weight near 1 by at most ~3e-4, under half of bf16's spacing there (2^-7).
        for step in 0..40 {
            (full, sf) = ours.step(3e-4, full, grad(step).cast(DType::F32), sf);
            (narrow, sn) = ours.step(3e-4, narrow, grad(step), sn);
            assert_eq!(narrow.dtype(), DType::BF16, "the parameter keeps its dtype");
            let nearest: Vec<f32> = vals(&full).iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
            if step == 0 {
                assert_eq!(nearest, init, "one step is below bf16's resolution: round-to-nearest would not move");
                assert_ne!(vals(&narrow.clone().cast(DType::F32)), init, "stochastic rounding moves some weights at once");
            }
        }
        let master = sn.unwrap().master.expect("a bf16 parameter has an f32 master copy");
        assert_eq!(master.dtype(), DType::F32);
        let m = vals(&master);
        assert_eq!(m, vals(&full), "the master follows the f32 run exactly");
        let p = vals(&narrow.cast(DType::F32));
        for (&x, &r) in m.iter().zip(&p) {
            let (lo, hi) = (bf16::from_f32(x - x.abs() / 128.0).to_f32(), bf16::from_f32(x + x.abs() / 128.0).to_f32());
            assert!(r >= lo && r <= hi, "{r} is not a bf16 neighbour of {x}");
        }
        // Unbiased: the mean rounding error is far below the spacing (2^-7 near 1) over 4096 weights.
        let bias = m.iter().zip(&p).map(|(x, r)| (r - x) as f64).sum::<f64>() / m.len() as f64;
        assert!(bias.abs() < 2e-4, "mean rounding error {bias}");
        // Reproducible (a resumed run rounds alike): the same steps from the same start give the same weights.
        let run = || {
            let (mut w, mut st) = (Tensor::<2>::from_data(TensorData::new(init.clone(), [64, 64]), &device).cast(DType::BF16), None);
            for step in 0..3 {
                (w, st) = ours.step(3e-4, w, grad(step), st);
            }
            vals(&w.cast(DType::F32))
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_exact_on_the_grid() {
        let r = |x: f32, u: f32| round_stochastic::<bf16>(x, u).to_f32();
        // 1 + 2^-9 lies a quarter of the way from 1 to 1 + 2^-7.
        let x = 1.0 + 1.0 / 512.0;
        assert_eq!(r(x, 0.2), 1.0 + 1.0 / 128.0);
        assert_eq!(r(x, 0.3), 1.0);
        assert_eq!(r(-x, 0.2), -(1.0 + 1.0 / 128.0), "negative values mirror");
        assert_eq!(r(1.5, 0.0), 1.5, "grid values stay");
        assert_eq!(r(0.0, 0.0), 0.0);
        // Mean over uniform draws equals x.
        for &x in &[0.0517f32, -3.3e-3, 7.77, 1.0 + 1e-4] {
            let n = 20000;
            let mean = (0..n).map(|i| r(x, (i as f32 + 0.5) / n as f32) as f64).sum::<f64>() / n as f64;
            assert!(((mean - x as f64) / x as f64).abs() < 1e-5, "{x}: mean {mean}");
        }
        let rf = |x: f32, u: f32| round_stochastic::<f16>(x, u).to_f32();
        let x = 1.0 + 1.0 / 4096.0; // a quarter of f16's spacing (2^-10) above 1
        assert_eq!(rf(x, 0.2), 1.0 + 1.0 / 1024.0);
        assert_eq!(rf(x, 0.3), 1.0);
        // The draws are uniform enough: their mean is 1/2.
        let m = (0..10000u64).map(|i| uniform(7, i, 12345) as f64).sum::<f64>() / 10000.0;
        assert!((m - 0.5).abs() < 0.01, "{m}");
    }
}
