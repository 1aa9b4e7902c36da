//! The SiLU-gated product of Llama-style MLPs, `h = silu(g) · u = g·σ(g)·u`, fused on the CPU,
//! forward and backward.
//!
//! burn computes it as three ops (a sigmoid, two products), and under autodiff its backward as
//! several more, each a pass over the `[positions, intermediate]` activations (the widest of a
//! layer) in burn-flex's element-wise loops; in bf16 each pass also widens and rounds. Here one
//! pass computes `h`, and one pass computes both gradients:
//! `du = dh·g·σ(g)`, `dg = dh·u·σ(g)·(1 + g·(1 − σ(g)))`. Arithmetic is f32 whatever the
//! dtype; outputs are in the inputs' dtype. A burn backend extension for burn-flex and autodiff
//! over it, like [`crate::bf16_linear`]; [`silu_gate`] falls back to burn's ops on other devices.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, BackendTypes, Dispatch, Flex};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, Tensor, TensorData};
use half::bf16;
use rayon::prelude::*;

type FlexTensor = <Flex as BackendTypes>::FloatTensorPrimitive;

#[backend_extension(Flex, Autodiff)]
pub trait SiluGate: burn::backend::Backend {
    fn silu_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SiluGate for Flex {
    fn silu_gate(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        forward(&gate, &up)
    }
}

#[derive(Debug)]
struct SiluGateBackward;

impl Backward<Flex, 2> for SiluGateBackward {
    /// The forward inputs (sharing their buffers).
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_g, node_u] = ops.parents;
        let dh = grads.consume::<Flex>(&ops.node);
        let (g, u) = ops.state;
        let (dg, du) = backward(&g, &u, &dh);
        if let Some(node) = node_g {
            grads.register::<Flex>(node.id, dg);
        }
        if let Some(node) = node_u {
            grads.register::<Flex>(node.id, du);
        }
    }
}

impl<C: CheckpointStrategy> SiluGate for Autodiff<Flex, C> {
    fn silu_gate(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (g, g_node) = gate.into_parts();
        let (u, u_node) = up.into_parts();
        match SiluGateBackward.prepare::<C>([g_node, u_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let h = forward(&g, &u);
                prep.finish((g, u), h)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&g, &u)),
        }
    }
}

/// `silu(gate) · up` (same shapes), fused on burn-flex (plain or autodiff) for f32 and bf16;
/// burn's ops elsewhere.
pub fn silu_gate<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let fused = gate.device() == Device::flex()
        && gate.dims() == up.dims()
        && gate.dtype() == up.dtype()
        && matches!(gate.dtype(), DType::F32 | DType::BF16);
    if !fused {
        return silu(gate) * up;
    }
    Tensor::from_dispatch(<Dispatch as SiluGate>::silu_gate(gate.into_dispatch(), up.into_dispatch()))
}

/// Elements per parallel task.
const CHUNK: usize = 4096;

/// A flex tensor's elements in logical order (a contiguous copy when it is a strided view).
enum Vals {
    F32(FlexTensor),
    Bf16(FlexTensor),
}

impl Vals {
    fn of(t: &FlexTensor) -> Self {
        let t = if t.layout().is_contiguous() && t.layout().start_offset() == 0 { t.clone() } else { t.to_contiguous() };
        match t.dtype() {
            DType::F32 => Vals::F32(t),
            DType::BF16 => Vals::Bf16(t),
            other => panic!("silu_gate: unsupported dtype {other:?}"),
        }
    }

    /// Elements `start..start + out.len()` as f32.
    fn read(&self, start: usize, out: &mut [f32]) {
        match self {
            Vals::F32(t) => out.copy_from_slice(&t.storage::<f32>()[start..start + out.len()]),
            Vals::Bf16(t) => {
                out.iter_mut().zip(&t.storage::<bf16>()[start..]).for_each(|(o, v)| *o = v.to_f32());
            }
        }
    }
}

/// σ(x) from e^-|x| (never overflows); also the CPU decoding path's gate (`model::silu_mlp_on_host`).
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = crate::generate::exp_nonpositive(-x.abs());
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// Computes `n` outputs chunk by chunk from the f32 values of `inputs`, into a tensor of
/// `dtype` and `shape`.
fn map_chunks(inputs: &[&Vals], n: usize, dtype: DType, shape: burn::tensor::Shape, f: impl Fn(&[Vec<f32>], &mut [f32]) + Sync) -> FlexTensor {
    let compute = |start: usize, out: &mut [f32]| {
        let bufs: Vec<Vec<f32>> = inputs
            .iter()
            .map(|v| {
                let mut b = vec![0f32; out.len()];
                v.read(start, &mut b);
                b
            })
            .collect();
        f(&bufs, out);
    };
    let data = match dtype {
        DType::BF16 => {
            let mut out = vec![bf16::ZERO; n];
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
                let mut tmp = vec![0f32; o.len()];
                compute(c * CHUNK, &mut tmp);
                o.iter_mut().zip(&tmp).for_each(|(o, &t)| *o = bf16::from_f32(t));
            });
            TensorData::new(out, shape)
        }
        _ => {
            let mut out = vec![0f32; n];
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| compute(c * CHUNK, o));
            TensorData::new(out, shape)
        }
    };
    FlexTensor::from_data(data)
}

fn forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    let shape = g.layout().shape().clone();
    let n = shape.num_elements();
    let (gv, uv) = (Vals::of(g), Vals::of(u));
    map_chunks(&[&gv, &uv], n, g.dtype(), shape, |b, out| {
        for ((o, &g), &u) in out.iter_mut().zip(&b[0]).zip(&b[1]) {
            *o = g * sigmoid(g) * u;
        }
    })
}

/// (dL/dg, dL/du) for the upstream gradient `dh`.
fn backward(g: &FlexTensor, u: &FlexTensor, dh: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let shape = g.layout().shape().clone();
    let n = shape.num_elements();
    let (gv, uv, dv) = (Vals::of(g), Vals::of(u), Vals::of(dh));
    let dg = map_chunks(&[&gv, &uv, &dv], n, g.dtype(), shape.clone(), |b, out| {
        for (i, o) in out.iter_mut().enumerate() {
            let (g, u, d) = (b[0][i], b[1][i], b[2][i]);
            let s = sigmoid(g);
            *o = d * u * s * (1.0 + g * (1.0 - s));
        }
    });
    let du = map_chunks(&[&gv, &dv], n, u.dtype(), shape, |b, out| {
        for ((o, &g), &d) in out.iter_mut().zip(&b[0]).zip(&b[1]) {
            *o = d * g * sigmoid(g);
        }
    });
    (dg, du)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{like, to_vec_f32};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 12.0).collect()
    }

    /// The fused op against burn's `silu(g) · u`: values and both gradients, f32 (to 1e-5) and
    /// bf16 (to bf16's rounding), on a strided view too (a transposed `up`).
    #[test]
    fn matches_burns_ops_and_their_gradients() {
        let ad = Device::flex().autodiff();
        for dtype in [DType::F32, DType::BF16] {
            let shape = [3, 5, 40];
            let t = |v: Vec<f32>| like(Tensor::<3>::from_data(TensorData::new(v, shape), &ad), dtype).require_grad();
            let (g, u) = (t(values(600, 1)), t(values(600, 7)));
            // A strided `up`: [3, 40, 5] swapped to [3, 5, 40].
            let ut = like(Tensor::<3>::from_data(TensorData::new(values(600, 9), [3, 40, 5]), &ad), dtype).require_grad();
            let up = Tensor::<3>::from_data(TensorData::new(values(600, 3), shape), &ad);
            for strided in [false, true] {
                let u_in = if strided { ut.clone().swap_dims(1, 2) } else { u.clone() };
                let ours = silu_gate(g.clone(), u_in.clone());
                assert_eq!(ours.dtype(), dtype);
                let grads = (like(ours.clone(), DType::F32) * up.clone()).sum().backward();
                let (g2, u2) = (g.clone().detach().require_grad(), u_in.clone().detach().require_grad());
                let theirs = silu(like(g2.clone(), DType::F32)) * like(u2.clone(), DType::F32);
                let grads2 = (theirs.clone() * up.clone()).sum().backward();
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
                let check = |a: Tensor<3>, b: Tensor<3>, what: &str| {
                    let (a, b) = (to_vec_f32(a).unwrap(), to_vec_f32(b).unwrap());
                    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{dtype:?} strided={strided} {what}[{i}]: {x} vs {y}");
                    }
                };
                check(ours.inner(), theirs.inner(), "h");
                check(g.grad(&grads).unwrap().inner(), g2.grad(&grads2).unwrap().inner(), "dg");
                let du = if strided { ut.grad(&grads).unwrap().inner().swap_dims(1, 2) } else { u.grad(&grads).unwrap().inner() };
                check(du, u2.grad(&grads2).unwrap().inner(), "du");
            }
        }
    }
}
