//! Decode-step attention on the CPU, reading the KV cache where it lies.
//!
//! A decode step has one query per row and head against every cached key. Through burn-flex this
//! is two batched matmuls of `b · n_kv` tiny matrices (`[rep, hd] × [hd, s]`, then `[rep, s] ×
//! [s, hd]`) over a narrowed view of the cache, an additive mask and a softmax: on SmolLM2 at 64
//! rows, ~17% of `dno sample`'s CPU time in gemm calls too small to be efficient, plus copies and
//! the softmax's scalar `expf`. [`decode_attention`] does the same product row by row on the
//! host: for each (row, kv head) it scores the `rep` query heads of the group against the cached
//! keys in place (no copy of the cache: burn-flex tensors are host memory, read through
//! [`Tensor::try_into_primitive`]), skips the slots the mask hides (padding and the front of a
//! reused slot, which a masked gemm still reads), and accumulates the values. Keys and values may
//! be f32 or bf16. Only for the plain CPU device (not autodiff, not GPUs): [`decode_attention`]
//! returns `None` anywhere else and the burn path runs.

use burn::backend::{BackendTypes, Flex};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::model::MASKED;

/// burn-flex's float tensor: host memory with a layout.
type FlexTensor = <Flex as BackendTypes>::FloatTensorPrimitive;

/// Cached keys or values of one layer, as the host slice of a `[B, n_kv, capacity, hd]` buffer.
enum Kv<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
}

/// The contiguous host storage of a flex tensor `t` (`None` on other devices, or when `t` is
/// a strided view). The returned primitive keeps the storage alive; it shares `t`'s buffer, so
/// it must be dropped before `t`'s buffer is written in place again.
fn flex_primitive<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    if !crate::device::is_plain_cpu(&t.device()) {
        return None;
    }
    let p = t.clone().try_into_primitive::<Flex>().ok()?;
    (p.layout().is_contiguous() && p.layout().start_offset() == 0).then_some(p)
}

fn kv_view(p: &FlexTensor) -> Option<Kv<'_>> {
    match p.dtype() {
        DType::F32 => Some(Kv::F32(p.storage::<f32>())),
        DType::BF16 => Some(Kv::Bf16(p.storage::<half::bf16>())),
        _ => None,
    }
}

/// `softmax(q · Kᵀ · scale + mask) · V` for a decode step (one query per row).
///
/// `q`: `[b, n_heads, 1, hd]`; `k_buf`, `v_buf`: a layer's cache buffers `[b, n_kv, capacity,
/// hd]`, of which the first `s` slots are filled; `mask`: additive `[b, 1, 1, s]` (a slot at
/// [`MASKED`] is skipped). Returns `[b, 1, n_heads · hd]` in `q`'s dtype, or `None` when the
/// tensors are not plain host tensors of these shapes (the caller then runs burn's path).
pub fn decode_attention(q: &Tensor<4>, k_buf: &Tensor<4>, v_buf: &Tensor<4>, s: usize, mask: &Tensor<4>, scale: f32) -> Option<Tensor<3>> {
    let [b, nh, t, hd] = q.dims();
    let [bk, nkv, cap, hdk] = k_buf.dims();
    if t != 1 || bk != b || hdk != hd || v_buf.dims() != k_buf.dims() || s > cap || nkv == 0 || nh % nkv != 0 || mask.dims() != [b, 1, 1, s] {
        return None;
    }
    let (kp, vp, mp) = (flex_primitive(k_buf)?, flex_primitive(v_buf)?, flex_primitive(mask)?);
    if kp.dtype() != vp.dtype() || mp.dtype() != DType::F32 {
        return None;
    }
    let (keys, values) = (kv_view(&kp)?, kv_view(&vp)?);
    let mask: &[f32] = mp.storage::<f32>();
    let dtype = q.dtype();
    let qs: Vec<f32> = crate::model::to_vec_f32(q.clone()).ok()?;
    let rep = nh / nkv;
    let simd = avx512(hd);
    let mut out = vec![0f32; b * nh * hd];
    // One task per (row, kv head): its rep query heads are adjacent in q and in the output.
    out.par_chunks_mut(rep * hd).enumerate().for_each(|(task, o)| {
        let (r, g) = (task / nkv, task % nkv);
        let base = (r * nkv + g) * cap * hd;
        let q = &qs[task * rep * hd..(task + 1) * rep * hd];
        let m = &mask[r * s..(r + 1) * s];
        let span = base..base + s * hd;
        match (&keys, &values) {
            (Kv::F32(k), Kv::F32(v)) => group(q, &k[span.clone()], &v[span], m, hd, scale, simd, o),
            (Kv::Bf16(k), Kv::Bf16(v)) => group(q, &k[span.clone()], &v[span], m, hd, scale, simd, o),
            _ => unreachable!("keys and values share a dtype (checked above)"),
        }
    });
    drop((kp, vp, mp));
    let device = q.device();
    Some(crate::model::like(Tensor::<3>::from_data(TensorData::new(out, [b, 1, nh * hd]), &device), dtype))
}

/// A cached element read as f32 (and, on AVX-512, 16 at a time).
trait Elem: Copy + Send + Sync {
    fn f32(self) -> f32;
    /// Elements `p[0..16]` as f32 lanes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}
impl Elem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}
impl Elem for half::bf16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // bf16 -> f32 is a 16-bit shift into the high half.
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)))) }
    }
}

/// Whether [`group`] may take its AVX-512 path for head size `hd` (a multiple of 16 lanes).
fn avx512(hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        hd % 16 == 0 && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = hd;
        false
    }
}

/// Attention of one kv head's `rep` query heads: `q [rep, hd]`, keys and values `[s, hd]`,
/// additive mask `[s]`; writes `out [rep, hd]`. `simd`: [`avx512`]`(hd)`.
#[allow(clippy::too_many_arguments)]
fn group<K: Elem, V: Elem>(q: &[f32], k: &[K], v: &[V], mask: &[f32], hd: usize, scale: f32, simd: bool, out: &mut [f32]) {
    let s = mask.len();
    let rep = q.len() / hd;
    let visible: Vec<usize> = (0..s).filter(|&j| mask[j] > MASKED / 2.0).collect();
    let n = visible.len();
    let mut scores = vec![0f32; rep * n];
    if simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F was detected and hd is a multiple of 16 (avx512()); every slice holds whole rows.
        unsafe {
            simd::scores(q, k, &visible, hd, &mut scores)
        };
    } else {
        for (i, &j) in visible.iter().enumerate() {
            let key = &k[j * hd..(j + 1) * hd];
            for h in 0..rep {
                scores[h * n + i] = q[h * hd..(h + 1) * hd].iter().zip(key).map(|(a, b)| a * b.f32()).sum();
            }
        }
    }
    for h in 0..rep {
        let sc = &mut scores[h * n..(h + 1) * n];
        for (x, &j) in sc.iter_mut().zip(&visible) {
            *x = *x * scale + mask[j];
        }
        let max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for x in sc.iter_mut() {
            *x = crate::generate::exp_nonpositive(*x - max);
            total += *x;
        }
        let inv = 1.0 / total;
        sc.iter_mut().for_each(|x| *x *= inv);
    }
    if simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        unsafe {
            simd::weighted_values(&scores, v, &visible, hd, out)
        };
    } else {
        out.fill(0.0);
        for h in 0..rep {
            let o = &mut out[h * hd..(h + 1) * hd];
            for (&p, &j) in scores[h * n..(h + 1) * n].iter().zip(&visible) {
                for (oi, vi) in o.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                    *oi += p * vi.f32();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::Elem;
    use std::arch::x86_64::*;

    /// `scores[h][i] = q[h] · k[visible[i]]` for every query head h; hd a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores<K: Elem>(q: &[f32], k: &[K], visible: &[usize], hd: usize, scores: &mut [f32]) {
        let (rep, n) = (q.len() / hd, visible.len());
        unsafe {
            for (i, &j) in visible.iter().enumerate() {
                let key = k.as_ptr().add(j * hd);
                for h in 0..rep {
                    let qh = q.as_ptr().add(h * hd);
                    let mut acc = _mm512_setzero_ps();
                    for c in (0..hd).step_by(16) {
                        acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(c)), K::load16(key.add(c)), acc);
                    }
                    *scores.get_unchecked_mut(h * n + i) = _mm512_reduce_add_ps(acc);
                }
            }
        }
    }

    /// `out[h] = Σ_i probs[h][i] · v[visible[i]]`; hd a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values<V: Elem>(probs: &[f32], v: &[V], visible: &[usize], hd: usize, out: &mut [f32]) {
        let (rep, n) = (out.len() / hd, visible.len());
        unsafe {
            for h in 0..rep {
                for c in (0..hd).step_by(16) {
                    let mut acc = _mm512_setzero_ps();
                    for (i, &j) in visible.iter().enumerate() {
                        let p = _mm512_set1_ps(*probs.get_unchecked(h * n + i));
                        acc = _mm512_fmadd_ps(p, V::load16(v.as_ptr().add(j * hd + c)), acc);
                    }
                    _mm512_storeu_ps(out.as_mut_ptr().add(h * hd + c), acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::Device;

    /// Against burn's masked softmax attention, f32 and bf16 caches, with hidden slots.
    #[test]
    fn matches_burn_attention() {
        let device = Device::flex();
        let (b, nh, nkv, hd, cap, s) = (3, 6, 2, 64, 12, 9);
        let mut seed = 7u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect()
        };
        let q = Tensor::<4>::from_data(TensorData::new(rnd(b * nh * hd), [b, nh, 1, hd]), &device);
        let kb = Tensor::<4>::from_data(TensorData::new(rnd(b * nkv * cap * hd), [b, nkv, cap, hd]), &device);
        let vb = Tensor::<4>::from_data(TensorData::new(rnd(b * nkv * cap * hd), [b, nkv, cap, hd]), &device);
        // Row 0 sees everything, row 1 not its first 3 slots, row 2 only its last 2.
        let hidden = [0usize, 3, 7];
        let mut m = vec![0f32; b * s];
        for r in 0..b {
            m[r * s..r * s + hidden[r]].fill(MASKED);
        }
        let mask = Tensor::<4>::from_data(TensorData::new(m, [b, 1, 1, s]), &device);
        let scale = 0.125f32;
        for dt in [DType::F32, DType::BF16] {
            let (kb, vb) = (crate::model::like(kb.clone(), dt), crate::model::like(vb.clone(), dt));
            let got = crate::model::to_vec_f32(decode_attention(&q, &kb, &vb, s, &mask, scale).expect("host tensors")).unwrap();
            let rep = nh / nkv;
            let (k, v) = (crate::model::like(kb.narrow(2, 0, s), DType::F32), crate::model::like(vb.narrow(2, 0, s), DType::F32));
            let scores = q.clone().reshape([b, nkv, rep, hd]).matmul(k.swap_dims(2, 3)).mul_scalar(scale);
            let probs = softmax(scores + mask.clone(), 3);
            let want = crate::model::to_vec_f32(probs.matmul(v).reshape([b, 1, nh * hd])).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-5, "{dt:?} at {i}: {g} vs {w}");
            }
        }
    }
}
