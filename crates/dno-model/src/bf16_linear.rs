//! `x [M, K] × w [K, N]` on dno's bf16 CPU kernel ([`crate::bf16mm`]), differentiable: the
//! matmul of bf16 training on the CPU (`dno train --dtype bf16`).
//!
//! burn-flex computes a bf16 matmul by widening both operands to f32 and rounding the product
//! back, which runs slower than its f32 gemm; under autodiff the backward pass's two products
//! (dx = g·wᵀ, dw = xᵀ·g) do the same. This module is a burn backend extension
//! (`#[backend_extension]`) with its own backward pass (burn-autodiff's `Backward`), so all
//! three products run on the AVX512-BF16 / AMX kernel. The arithmetic is the one burn's bf16
//! path does: operands rounded to bf16 (a no-op for bf16 tensors), products accumulated in f32,
//! the result rounded to the output's dtype (x's for the product and dx, w's for dw).
//!
//! The packed weights (`w` for the product, `wᵀ` for dx) are cached ([`packed`]) under their
//! storage, so a step packs each weight once for the policy's shards and the reference pass;
//! [`forget_packed`] drops the cache (the trainer calls it after every optimizer step, when the
//! weights change) and [`set_caching`] turns it off (`--gradient-checkpointing`). dw's `K` is
//! the number of positions: it is padded with zero rows to a multiple of 32, which keeps the
//! AMX tiles in use (a padded row adds nothing to the product).
//!
//! Attention of a bf16 model on the CPU runs in f32 (`model::Attention::forward`), so this
//! module covers every bf16 product of training but attention's.
//!
//! [`matmul`] falls back to burn's matmul where the kernel cannot run: another device, a CPU
//! without AVX512-BF16, or `DNO_BF16MM=0`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, BackendTypes, Dispatch, Flex};
use burn::tensor::{Bytes, DType, Device, Tensor, TensorData};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::bf16mm::{self, PackedBf16, Rows};

type FlexTensor = <Flex as BackendTypes>::FloatTensorPrimitive;

/// The product as a backend operation: burn-flex (forward only) and autodiff over burn-flex.
#[backend_extension(Flex, Autodiff)]
pub trait Bf16Matmul: burn::backend::Backend {
    fn bf16_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl Bf16Matmul for Flex {
    fn bf16_matmul(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        product(&x, &w)
    }
}

/// The backward step: dx = g·wᵀ, dw = xᵀ·g, each only for a tracked input.
#[derive(Debug)]
struct Bf16MatmulBackward;

impl Backward<Flex, 2> for Bf16MatmulBackward {
    /// The forward inputs (they share their buffers with the forward tensors).
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, w) = ops.state;
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, grad_w(&x, &g, w.dtype()));
        }
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, grad_x(&g, &w, x.dtype()));
        }
    }
}

impl<C: CheckpointStrategy> Bf16Matmul for Autodiff<Flex, C> {
    fn bf16_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (w, w_node) = w.into_parts();
        match Bf16MatmulBackward.prepare::<C>([x_node, w_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = product(&x, &w);
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(product(&x, &w)),
        }
    }
}

/// Whether [`matmul`] runs on dno's kernel for tensors on `device`.
pub fn applies(device: &Device) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *device == Device::flex()
        && *ENABLED.get_or_init(|| std::env::var("DNO_BF16MM").map_or(true, |v| v != "0") && bf16mm::supported())
}

/// `x [M, K] × w [K, N] -> [M, N]` in x's dtype, operands rounded to bf16 and products summed
/// in f32; differentiable on an autodiff device. Where [`applies`] is false, burn's matmul in
/// x's dtype.
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if !applies(&x.device()) {
        let dt = x.dtype();
        return x.matmul(crate::model::like(w, dt));
    }
    Tensor::from_dispatch(<Dispatch as Bf16Matmul>::bf16_matmul(x.into_dispatch(), w.into_dispatch()))
}

static CACHING: AtomicBool = AtomicBool::new(true);

/// Whether packed weights are cached (the default) or packed at every use. A cache holds up to
/// two packed copies of every bf16 weight (for the product and for dx), twice the bytes of the
/// model's bf16 weights; `dno train --gradient-checkpointing`, which trades time for memory,
/// turns it off.
pub fn set_caching(on: bool) {
    CACHING.store(on, Ordering::Relaxed);
    if !on {
        forget_packed();
    }
}

/// Drops the cached packed weights (call when the weights change: after an optimizer step).
pub fn forget_packed() {
    cache().lock().expect("bf16 pack cache").clear();
}

/// Whether the cache holds a pack of `w` (as the product's weight): [`matmul`] ran on the
/// kernel with it since the last [`forget_packed`].
pub fn holds_pack(w: &Tensor<2>) -> bool {
    let Ok(p) = w.clone().inner().try_into_primitive::<Flex>() else { return false };
    let key = key_of(&View::of(&p), &p.data_arc(), false);
    cache().lock().expect("bf16 pack cache").iter().any(|e| e.key == key && e.source.strong_count() > 0)
}

/// A 2-D flex tensor's elements in host memory, through its strides.
struct View<'a> {
    data: Data<'a>,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
    offset: usize,
}

enum Data<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl<'a> View<'a> {
    fn of(t: &'a FlexTensor) -> Self {
        let layout = t.layout();
        let (rows, cols, row_stride, col_stride) = layout.as_2d_strides().expect("bf16_linear: a 2-D tensor");
        let data = match t.dtype() {
            DType::F32 => Data::F32(t.storage::<f32>()),
            DType::BF16 => Data::Bf16(t.storage::<bf16>()),
            other => panic!("bf16_linear: unsupported dtype {other:?}"),
        };
        View { data, rows, cols, row_stride, col_stride, offset: layout.start_offset() }
    }

    /// The matrix (or with `transpose` its transpose) as row-major bf16 bits (f32 rounded to
    /// nearest even), `rows × cols` with zeros past its own size.
    fn bf16_matrix(&self, transpose: bool, rows: usize, cols: usize) -> Vec<u16> {
        let (own_rows, own_cols) = if transpose { (self.cols, self.rows) } else { (self.rows, self.cols) };
        let (rs, cs) = if transpose { (self.col_stride, self.row_stride) } else { (self.row_stride, self.col_stride) };
        assert!(own_rows <= rows && own_cols <= cols);
        let at = |i: usize, j: usize| (self.offset as isize + i as isize * rs + j as isize * cs) as usize;
        let mut out = vec![0u16; rows * cols];
        if own_rows == 0 || own_cols == 0 {
            return out;
        }
        let dst = &mut out[..own_rows * cols];
        if cs == 1 {
            // Contiguous source rows.
            dst.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
                let row = &mut row[..own_cols];
                match self.data {
                    Data::F32(d) => bf16mm::round_to_bf16(&d[at(i, 0)..at(i, 0) + own_cols], row),
                    Data::Bf16(d) => row.copy_from_slice(d[at(i, 0)..at(i, 0) + own_cols].reinterpret_cast()),
                }
            });
        } else if rs == 1 {
            // Contiguous source columns (a transpose): blocks of output rows, each read as runs
            // down the source's columns.
            const BLOCK: usize = 64;
            dst.par_chunks_mut(cols * BLOCK).enumerate().for_each(|(b, block)| {
                let i0 = b * BLOCK;
                let n = block.len() / cols;
                for j in 0..own_cols {
                    let base = at(i0, j);
                    match self.data {
                        Data::F32(d) => (0..n).for_each(|i| block[i * cols + j] = bf16::from_f32(d[base + i]).to_bits()),
                        Data::Bf16(d) => (0..n).for_each(|i| block[i * cols + j] = d[base + i].to_bits()),
                    }
                }
            });
        } else {
            dst.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
                for (j, o) in row[..own_cols].iter_mut().enumerate() {
                    *o = match self.data {
                        Data::F32(d) => bf16::from_f32(d[at(i, j)]).to_bits(),
                        Data::Bf16(d) => d[at(i, j)].to_bits(),
                    };
                }
            });
        }
        out
    }
}

/// The cache key of `w`'s pack (storage address, offset, shape, strides, orientation).
type Key = (usize, usize, [usize; 2], [isize; 2], bool);

fn key_of(v: &View, data: &Arc<Bytes>, transpose: bool) -> Key {
    (Arc::as_ptr(data) as usize, v.offset, [v.rows, v.cols], [v.row_stride, v.col_stride], transpose)
}

/// A cached pack of one weight's storage.
struct Entry {
    source: Weak<Bytes>,
    key: Key,
    packed: Arc<OnceLock<Arc<PackedBf16>>>,
}

fn cache() -> &'static Mutex<Vec<Entry>> {
    static CACHE: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

/// `w` (`[K, N]`), or with `transpose` `wᵀ`, packed for [`bf16mm::matmul`]; cached under w's
/// storage, layout and orientation (an entry whose storage was freed is dropped).
fn packed(w: &FlexTensor, transpose: bool) -> Arc<PackedBf16> {
    let v = View::of(w);
    let pack = || {
        let (k, n) = if transpose { (v.cols, v.rows) } else { (v.rows, v.cols) };
        Arc::new(PackedBf16::from_bf16_rows(&v.bf16_matrix(transpose, k, n), k, n))
    };
    if !CACHING.load(Ordering::Relaxed) {
        return pack();
    }
    let data = w.data_arc();
    let key = key_of(&v, &data, transpose);
    let slot = {
        let mut c = cache().lock().expect("bf16 pack cache");
        c.retain(|e| e.source.strong_count() > 0);
        match c.iter().find(|e| e.key == key) {
            Some(e) => e.packed.clone(),
            None => {
                let slot = Arc::new(OnceLock::new());
                c.push(Entry { source: Arc::downgrade(&data), key, packed: slot.clone() });
                slot
            }
        }
    };
    drop(data);
    // Packed outside the lock: the shards' threads wait on this entry, not on the whole cache.
    slot.get_or_init(pack).clone()
}

/// `y` (row-major `shape`, f32) as a flex tensor of `dtype`.
fn output(y: Vec<f32>, shape: [usize; 2], dtype: DType) -> FlexTensor {
    let data = match dtype {
        DType::BF16 => {
            let mut out = vec![bf16::ZERO; y.len()];
            bf16mm::round_to_bf16(&y, out.reinterpret_cast_mut());
            TensorData::new(out, shape)
        }
        DType::F32 => TensorData::new(y, shape),
        other => TensorData::new(y, shape).convert_dtype(other),
    };
    FlexTensor::from_data(data)
}

fn dims(t: &FlexTensor) -> [usize; 2] {
    let s = t.layout().shape();
    assert_eq!(s.num_dims(), 2, "bf16_linear: a 2-D tensor");
    [s[0], s[1]]
}

/// `x [M, K] × w [K, N]` in x's dtype.
fn product(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let ([m, k], [k2, n]) = (dims(x), dims(w));
    assert_eq!(k, k2, "bf16_linear: [{m}, {k}] × [{k2}, {n}]");
    let a = View::of(x).bf16_matrix(false, m, k);
    output(bf16mm::matmul_rows(Rows::Bf16(&a), m, &packed(w, false)), [m, n], x.dtype())
}

/// dx = g [M, N] × wᵀ [N, K] in `dtype`.
fn grad_x(g: &FlexTensor, w: &FlexTensor, dtype: DType) -> FlexTensor {
    let ([m, n], [k, _]) = (dims(g), dims(w));
    let a = View::of(g).bf16_matrix(false, m, n);
    output(bf16mm::matmul_rows(Rows::Bf16(&a), m, &packed(w, true)), [m, k], dtype)
}

/// dw = xᵀ [K, M] × g [M, N] in `dtype`, M padded with zeros to a multiple of 32.
fn grad_w(x: &FlexTensor, g: &FlexTensor, dtype: DType) -> FlexTensor {
    let ([m, k], [_, n]) = (dims(x), dims(g));
    let mp = m.next_multiple_of(32);
    let a = View::of(x).bf16_matrix(true, k, mp);
    let b = PackedBf16::from_bf16_rows(&View::of(g).bf16_matrix(false, mp, n), mp, n);
    output(bf16mm::matmul_rows(Rows::Bf16(&a), k, &b), [k, n], dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::to_vec_f32;

    fn random(shape: [usize; 2], seed: u64, device: &Device, dtype: DType) -> Tensor<2> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..shape[0] * shape[1])
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        crate::model::like(Tensor::<2>::from_data(TensorData::new(v, shape), device), dtype)
    }

    fn close(a: Tensor<2>, b: Tensor<2>, what: &str) {
        let (a, b) = (to_vec_f32(a).unwrap(), to_vec_f32(b).unwrap());
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        // Both sides round their operands to bf16 and their outputs to the output dtype; they
        // differ in summation order only, and in where bf16 outputs round.
        assert!(worst <= 1e-2 * scale, "{what}: worst difference {worst} at scale {scale}");
    }

    /// Forward and both gradients against burn's own bf16 matmul under autodiff, for bf16 and
    /// f32 operands, a transposed weight view (the tied output head) and a row count that is
    /// not a multiple of 32 (dw's padding).
    #[test]
    fn matches_burns_matmul_and_its_gradients() {
        if !applies(&Device::flex()) {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16 (or DNO_BF16MM=0)");
            return;
        }
        let ad = Device::flex().autodiff();
        for (dtype, m, k, n, transposed) in
            [(DType::BF16, 45, 64, 96, false), (DType::BF16, 64, 96, 40, true), (DType::F32, 33, 64, 32, false)]
        {
            let x = random([m, k], 1, &ad, dtype).require_grad();
            let w = if transposed { random([n, k], 2, &ad, dtype).require_grad() } else { random([k, n], 2, &ad, dtype).require_grad() };
            let w_used = if transposed { w.clone().transpose() } else { w.clone() };
            let up = random([m, n], 3, &ad, DType::F32);
            let ours = matmul(x.clone(), w_used.clone());
            assert_eq!(ours.dtype(), dtype);
            let loss = (crate::model::like(ours.clone(), DType::F32) * up.clone()).sum();
            let g = loss.backward();
            let (gx, gw) = (x.grad(&g).unwrap(), w.grad(&g).unwrap());

            let (x2, w2) = (x.clone().detach().require_grad(), w.clone().detach().require_grad());
            let w2_used = if transposed { w2.clone().transpose() } else { w2.clone() };
            let theirs = x2.clone().matmul(w2_used);
            let loss2 = (crate::model::like(theirs.clone(), DType::F32) * up).sum();
            let g2 = loss2.backward();
            let what = format!("{dtype:?} [{m}, {k}] x [{k}, {n}] transposed={transposed}");
            close(ours.inner(), theirs.inner(), &format!("{what}: product"));
            close(gx.inner(), x2.grad(&g2).unwrap().inner(), &format!("{what}: dx"));
            close(gw.inner(), w2.grad(&g2).unwrap().inner(), &format!("{what}: dw"));
        }
    }

    /// A frozen weight (LoRA's base) gets no gradient and the input still does; the plain
    /// device runs the product alone; the cache packs a weight once and forgets it on request.
    #[test]
    fn frozen_weights_plain_device_and_the_cache() {
        if !applies(&Device::flex()) {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16 (or DNO_BF16MM=0)");
            return;
        }
        let ad = Device::flex().autodiff();
        let x = random([20, 64], 4, &ad, DType::BF16).require_grad();
        let w = random([64, 32], 5, &ad, DType::BF16);
        let y = matmul(x.clone(), w.clone());
        let g = crate::model::like(y, DType::F32).sum().backward();
        assert!(x.grad(&g).is_some());
        assert!(w.grad(&g).is_none());

        let plain = Device::flex();
        let (xp, wp) = (random([20, 64], 4, &plain, DType::BF16), random([64, 32], 5, &plain, DType::BF16));
        close(matmul(xp.clone(), wp.clone()), xp.clone().matmul(wp.clone()), "plain device");
        let prim = wp.clone().try_into_primitive::<Flex>().ok().expect("a flex tensor");
        let first = packed(&prim, false);
        assert!(Arc::ptr_eq(&first, &packed(&prim, false)), "the second product reuses the pack");
        assert!(!Arc::ptr_eq(&first, &packed(&prim, true)), "the transpose is a pack of its own");
        let key = key_of(&View::of(&prim), &prim.data_arc(), false);
        assert!(holds_pack(&wp));
        drop((wp, prim));
        let served = cache().lock().unwrap().iter().any(|e| e.key == key && e.source.strong_count() > 0);
        assert!(!served, "a freed weight's pack is not served");
    }
}
