//! A bf16 matrix product for CPUs with AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake and
//! Sapphire Rapids): `x [M, K] (f32) × W [K, N] (bf16) -> [M, N] (f32)`, the inputs rounded to
//! bf16, products accumulated in f32 (`VDPBF16PS`), as PyTorch's CPU autocast computes a bf16
//! linear layer.
//!
//! Why our own kernel: burn-flex computes bf16 matmuls by converting through f32, and on the
//! decoding shapes (64 rows) its f32 gemm reaches 58–64 GFLOP/s on the 2-core development machine,
//! where torch's bf16 gemm (oneDNN) reaches 240–330 on the same shapes
//! (`cargo run --release -p dno-model --example bench_gemm`, `scripts/bench_gemm_torch.py`). No
//! crate on crates.io offers an AVX512-BF16 gemm (gemm 0.19 has f16 and f32 kernels only).
//!
//! Layout. `W` is packed once ([`PackedBf16::new`]) into panels of [`NR`] = 32 columns; within a
//! panel, for each pair of rows (k, k+1), 32 `u32`s each holding `(W[k][j], W[k+1][j])` as two
//! bf16 (low half first), the operand order `VDPBF16PS` multiplies lane-wise. Each row of `x` is
//! rounded to the same pairs. A micro-kernel keeps [`MR`] rows × 32 columns of accumulators (16
//! zmm registers) and, per pair of k, loads two panel vectors and broadcasts one pair per row.
//! Panels are split across the rayon pool.
//!
//! On CPUs with AMX (Intel Sapphire Rapids and later) whose kernel grants the tile state, the same
//! packed panels feed `TDPBF16PS` instead ([`amx`]): a panel's pair rows are exactly the layout an
//! AMX B tile loads (16 pair rows × 16 columns, 128 bytes apart), so nothing is repacked. Each tile
//! product is 16 × 16 outputs × 32 k; a call keeps 2 × 2 tiles of accumulators (32 rows × 32
//! columns). `DNO_AMX=0` turns it off (the AVX512-BF16 kernel then runs).

use rayon::prelude::*;

/// Columns per panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per micro-kernel call.
const MR: usize = 8;
/// Rows of `x` per pass over the panels (keeps that slice of packed `x` in L2).
const M_CHUNK: usize = 256;

/// Whether this CPU runs the kernel (checked once per call site by the caller; cheap).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`matmul`] uses AMX tiles: the CPU has AMX-TILE and AMX-BF16, the kernel grants this
/// process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and `DNO_AMX` is not `0`.
/// Decided once per process.
pub fn uses_amx() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| std::env::var("DNO_AMX").map_or(true, |v| v != "0") && amx::request())
}

/// f32 -> bf16 bits, rounded to nearest even (NaN stays NaN).
fn bf16_bits(x: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32
}

/// `W [K, N]` packed for [`matmul`].
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    k: usize,
    n: usize,
    /// `panels × ceil(K/2) × NR` pairs.
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Packs `w`, row-major `[k, n]` (`w[i * n + j]`), rounding each weight to bf16.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [{k}, {n}]");
        Self::from_bits(k, n, |i, j| bf16_bits(w[i * n + j]))
    }

    /// Packs bf16 weights `w`, row-major `[k, n]`, or with `transposed` row-major `[n, k]` (a
    /// tied output head: `hidden × embedᵀ`); no rounding.
    pub fn from_bf16(w: &[half::bf16], k: usize, n: usize, transposed: bool) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [{k}, {n}]");
        if transposed {
            Self::from_bits(k, n, |i, j| w[j * k + i].to_bits() as u32)
        } else {
            Self::from_bits(k, n, |i, j| w[i * n + j].to_bits() as u32)
        }
    }

    /// Packs row-major bf16 bits `w [k, n]` (contiguous rows: the fast path for weights that
    /// change every step).
    pub fn from_bf16_rows(w: &[u16], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [{k}, {n}]");
        assert!(k > 0 && n > 0, "empty weight [{k}, {n}]");
        let (kp, panels) = (k.div_ceil(2), n.div_ceil(NR));
        let mut data = vec![0u32; panels * kp * NR];
        data.par_chunks_mut(kp * NR).enumerate().for_each(|(p, panel)| {
            let (j0, cols) = (p * NR, NR.min(n - p * NR));
            for q in 0..kp {
                let lo = &w[2 * q * n + j0..][..cols];
                let out = &mut panel[q * NR..q * NR + cols];
                if 2 * q + 1 < k {
                    let hi = &w[(2 * q + 1) * n + j0..][..cols];
                    out.iter_mut().zip(lo.iter().zip(hi)).for_each(|(o, (&l, &h))| *o = l as u32 | (h as u32) << 16);
                } else {
                    out.iter_mut().zip(lo).for_each(|(o, &l)| *o = l as u32);
                }
            }
        });
        PackedBf16 { k, n, data }
    }

    /// Packs the weights whose bf16 bits `w(i, j)` returns (row i < k, column j < n).
    fn from_bits(k: usize, n: usize, w: impl Fn(usize, usize) -> u32 + Sync) -> Self {
        assert!(k > 0 && n > 0, "empty weight [{k}, {n}]");
        let (kp, panels) = (k.div_ceil(2), n.div_ceil(NR));
        let mut data = vec![0u32; panels * kp * NR];
        data.par_chunks_mut(kp * NR).enumerate().for_each(|(p, panel)| {
            let cols = NR.min(n - p * NR);
            for q in 0..kp {
                for jj in 0..cols {
                    let j = p * NR + jj;
                    let hi = if 2 * q + 1 < k { w(2 * q + 1, j) } else { 0 };
                    panel[q * NR + jj] = w(2 * q, j) | (hi << 16);
                }
            }
        });
        PackedBf16 { k, n, data }
    }

    /// `[W_1 | W_2 | ...]`: the parts' columns side by side (a fused q/k/v or gate/up
    /// projection: one pass over `x` instead of one per part). `None` unless all parts have the
    /// same K.
    pub fn concat(parts: &[&PackedBf16]) -> Option<PackedBf16> {
        let k = parts.first()?.k;
        if parts.iter().any(|p| p.k != k) {
            return None;
        }
        // Column j of the result: (part, its column).
        let cols: Vec<(usize, usize)> = parts.iter().enumerate().flat_map(|(i, p)| (0..p.n).map(move |j| (i, j))).collect();
        Some(Self::from_bits(k, cols.len(), |i, j| {
            let (part, col) = cols[j];
            parts[part].bits(i, col)
        }))
    }

    /// The bf16 bits of `W[i][j]`.
    fn bits(&self, i: usize, j: usize) -> u32 {
        let kp = self.k.div_ceil(2);
        let word = self.data[(j / NR) * kp * NR + (i / 2) * NR + j % NR];
        if i % 2 == 0 { word & 0xFFFF } else { word >> 16 }
    }

    /// Inner dimension (rows of `W`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// A raw output pointer shared by the threads; each writes its own columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// A method, so closures capture the `Send` wrapper rather than its raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The rows of `x`, row-major: f32 (rounded to bf16 by the kernel) or bf16 bits (used as they are).
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::F32(x) => x.len(),
            Rows::Bf16(x) => x.len(),
        }
    }
}

/// `x [m, K] × W -> [m, N]`, row-major f32. Panics if this CPU lacks AVX512-BF16 (check
/// [`supported`] first) or if `x.len() != m * K`.
pub fn matmul(x: &[f32], m: usize, w: &PackedBf16) -> Vec<f32> {
    matmul_rows(Rows::F32(x), m, w)
}

/// [`matmul`] for rows given as f32 or as bf16 bits.
pub fn matmul_rows(x: Rows, m: usize, w: &PackedBf16) -> Vec<f32> {
    assert!(supported(), "bf16mm::matmul needs AVX512-BF16");
    assert_eq!(x.len(), m * w.k, "x is not [{m}, {}]", w.k);
    if w.k.div_ceil(2) % amx::KP == 0 && uses_amx() {
        return amx::matmul(x, m, w);
    }
    matmul_avx512(x, m, w)
}

/// [`matmul`] on the AVX512-BF16 micro-kernel.
fn matmul_avx512(x: Rows, m: usize, w: &PackedBf16) -> Vec<f32> {
    let (kp, n) = (w.k.div_ceil(2), w.n);
    let panels = n.div_ceil(NR);
    let mut out = vec![0f32; m * n];
    let mut a = vec![0u32; M_CHUNK.min(m) * kp];
    for m0 in (0..m).step_by(M_CHUNK) {
        let rows = M_CHUNK.min(m - m0);
        rows_to_pairs(x, w.k, m0, &mut a[..rows * kp]);
        let a = &a[..rows * kp];
        let c = Out(out[m0 * n..].as_mut_ptr());
        let per_task = panels.div_ceil(rayon::current_num_threads() * 4).max(1);
        (0..panels).into_par_iter().with_min_len(per_task).for_each(|p| {
            let b = &w.data[p * kp * NR..(p + 1) * kp * NR];
            let cols = NR.min(n - p * NR);
            for r0 in (0..rows).step_by(MR) {
                let r = MR.min(rows - r0);
                // SAFETY: the CPU has AVX512-BF16 (asserted above); `a` holds `rows` rows of
                // `kp` pairs and `b` one panel; the output block rows r0..r0+r, columns
                // p*NR..p*NR+cols lies inside `out` (m0 + rows <= m) and no other task writes it.
                unsafe { block(&a[r0 * kp..], kp, b, c.at(r0 * n + p * NR), n, r, cols) };
            }
        });
    }
    out
}

/// Rows `m0..` of `x` (`k` columns) as bf16 pairs, as many rows as `dst` holds (`ceil(k/2)`
/// pairs each), on all cores. The caller has checked [`supported`].
fn rows_to_pairs(x: Rows, k: usize, m0: usize, dst: &mut [u32]) {
    dst.par_chunks_mut(k.div_ceil(2)).enumerate().for_each(|(r, row)| {
        let range = (m0 + r) * k..(m0 + r + 1) * k;
        match x {
            // SAFETY: the CPU has AVX512-BF16 (the caller checked); `row` holds ceil(k/2) pairs.
            Rows::F32(x) => unsafe { to_pairs(&x[range], row) },
            Rows::Bf16(x) => {
                let src = &x[range];
                for (q, pair) in row.iter_mut().enumerate() {
                    let hi = src.get(2 * q + 1).map_or(0, |&b| b as u32);
                    *pair = src[2 * q] as u32 | (hi << 16);
                }
            }
        }
    });
}

/// `src` rounded to bf16 bits (nearest even, as [`matmul`] rounds), into `dst` (same length),
/// on all cores.
pub fn round_to_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    const CHUNK: usize = 1 << 14;
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
        #[cfg(target_arch = "x86_64")]
        if supported() {
            // SAFETY: the CPU has AVX512-BF16 (checked); `s` and `d` have the same length.
            unsafe { kernel::to_bf16(s, d) };
            return;
        }
        d.iter_mut().zip(s).for_each(|(d, &s)| *d = half::bf16::from_f32(s).to_bits());
    });
}

/// One row of `x` as bf16 pairs (`dst[q]` = x[2q] low, x[2q+1] high, 0 past the end): the bf16
/// row in memory order, converted 32 values at a time by `VCVTNE2PS2BF16` (round to nearest
/// even, as `half` and torch round).
unsafe fn to_pairs(src: &[f32], dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        kernel::to_pairs(src, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (src, dst);
        unreachable!("bf16mm is x86_64 only")
    }
}

/// Dispatches the micro-kernel on the number of rows (1..=MR).
#[allow(clippy::too_many_arguments)]
unsafe fn block(a: &[u32], kp: usize, b: &[u32], c: *mut f32, ldc: usize, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match rows {
            8 => kernel::micro::<8>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            7 => kernel::micro::<7>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            6 => kernel::micro::<6>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            5 => kernel::micro::<5>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            4 => kernel::micro::<4>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            3 => kernel::micro::<3>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            2 => kernel::micro::<2>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
            _ => kernel::micro::<1>(a.as_ptr(), kp, b.as_ptr(), c, ldc, cols),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, kp, b, c, ldc, rows, cols);
        unreachable!("bf16mm is x86_64 only")
    }
}

/// The AMX path of [`matmul`] (x86_64 only; [`request`] is false elsewhere).
mod amx {
    use super::{Out, PackedBf16, M_CHUNK, NR};
    use rayon::prelude::*;

    /// Pairs of k per tile product (a tile row is 64 bytes).
    pub(super) const KP: usize = 16;
    /// Rows per tile; a block is two tiles of rows.
    const TM: usize = 16;
    const BLOCK_M: usize = 2 * TM;

    /// Asks the kernel for the AMX tile data state; true if this CPU has AMX-BF16 and it was granted.
    pub(super) fn request() -> bool {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 || !super::supported() {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain syscall with integer arguments; it changes only this process's
            // permission to use the tile state.
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    }

    /// `x [m, K] × W` on AMX tiles; `K/2` is a multiple of [`KP`] and [`request`] returned true.
    pub(super) fn matmul(x: super::Rows, m: usize, w: &PackedBf16) -> Vec<f32> {
        let (kp, n) = (w.k.div_ceil(2), w.n);
        let panels = n.div_ceil(NR);
        let mut out = vec![0f32; m * n];
        // Rows of x as bf16 pairs, padded with zero rows to whole blocks.
        let chunk = M_CHUNK.min(m.div_ceil(BLOCK_M) * BLOCK_M);
        let mut a = vec![0u32; chunk * kp];
        for m0 in (0..m).step_by(M_CHUNK) {
            let rows = M_CHUNK.min(m - m0);
            let padded = rows.div_ceil(BLOCK_M) * BLOCK_M;
            super::rows_to_pairs(x, w.k, m0, &mut a[..rows * kp]);
            a[rows * kp..padded * kp].fill(0);
            let a = &a[..padded * kp];
            let c = Out(out[m0 * n..].as_mut_ptr());
            let tasks = (rayon::current_num_threads() * 4).min(panels);
            let per_task = panels.div_ceil(tasks);
            (0..panels.div_ceil(per_task)).into_par_iter().for_each(|t| {
                // SAFETY: AMX was granted (request()); each task configures its thread's tiles
                // and releases them; `a` holds `padded` rows of `kp` pairs, each panel `kp` pair
                // rows of NR columns; blocks write only rows m0..m0+rows of their own panel's
                // columns, which no other task writes.
                unsafe {
                    #[cfg(target_arch = "x86_64")]
                    tiles::configure();
                    let mut spill = [0f32; BLOCK_M * NR];
                    for p in t * per_task..((t + 1) * per_task).min(panels) {
                        let b = &w.data[p * kp * NR..(p + 1) * kp * NR];
                        let cols = NR.min(n - p * NR);
                        for r0 in (0..rows).step_by(BLOCK_M) {
                            let r = BLOCK_M.min(rows - r0);
                            #[cfg(target_arch = "x86_64")]
                            {
                                tiles::block(a.as_ptr().add(r0 * kp), kp, b.as_ptr(), spill.as_mut_ptr());
                            }
                            for i in 0..r {
                                std::ptr::copy_nonoverlapping(spill.as_ptr().add(i * NR), c.at((r0 + i) * n + p * NR), cols);
                            }
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    tiles::release();
                }
            });
        }
        out
    }

    /// The tile instructions, as inline assembly (Rust's AMX intrinsics are not stable).
    #[cfg(target_arch = "x86_64")]
    mod tiles {
        use super::{KP, NR, TM};
        use std::arch::asm;

        /// Palette 1, tiles 0–7 all 16 rows × 64 bytes.
        #[repr(C, align(64))]
        struct Config([u8; 64]);

        const CONFIG: Config = {
            let mut c = [0u8; 64];
            c[0] = 1;
            let mut t = 0;
            while t < 8 {
                c[16 + 2 * t] = 64;
                c[48 + t] = TM as u8;
                t += 1;
            }
            Config(c)
        };

        pub(super) unsafe fn configure() {
            unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
        }

        pub(super) unsafe fn release() {
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }

        /// `out [32, NR] = a [32 rows, kp pairs] · b [kp pair rows, NR]`: accumulators tmm0–3
        /// (rows 0–15 / 16–31 × columns 0–15 / 16–31), x tiles tmm4–5, weight tiles tmm6–7.
        pub(super) unsafe fn block(a: *const u32, kp: usize, b: *const u32, out: *mut f32) {
            let (lda, ldb, ldc) = (kp * 4, NR * 4, NR * 4);
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                for q in (0..kp).step_by(KP) {
                    asm!(
                        "tileloadd tmm4, [{a0} + {lda} * 1]",
                        "tileloadd tmm5, [{a1} + {lda} * 1]",
                        "tileloadd tmm6, [{b0} + {ldb} * 1]",
                        "tileloadd tmm7, [{b1} + {ldb} * 1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a.add(q),
                        a1 = in(reg) a.add(TM * kp + q),
                        b0 = in(reg) b.add(q * NR),
                        b1 = in(reg) b.add(q * NR + 16),
                        lda = in(reg) lda,
                        ldb = in(reg) ldb,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tilestored [{c0} + {ldc} * 1], tmm0",
                    "tilestored [{c1} + {ldc} * 1], tmm1",
                    "tilestored [{c2} + {ldc} * 1], tmm2",
                    "tilestored [{c3} + {ldc} * 1], tmm3",
                    c0 = in(reg) out,
                    c1 = in(reg) out.add(16),
                    c2 = in(reg) out.add(TM * NR),
                    c3 = in(reg) out.add(TM * NR + 16),
                    ldc = in(reg) ldc,
                    options(nostack),
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::NR;
    use std::arch::x86_64::*;

    /// `src` rounded to bf16 bits, 16 at a time by `VCVTNEPS2BF16`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
        let full = src.len() / 16;
        unsafe {
            for c in 0..full {
                let v = _mm512_loadu_ps(src.as_ptr().add(16 * c));
                let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(dst.as_mut_ptr().add(16 * c) as *mut _, b);
            }
        }
        for i in 16 * full..src.len() {
            dst[i] = super::bf16_bits(src[i]) as u16;
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_pairs(src: &[f32], dst: &mut [u32]) {
        let full = src.len() / 32;
        unsafe {
            for c in 0..full {
                let lo = _mm512_loadu_ps(src.as_ptr().add(32 * c));
                let hi = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * c) as *mut _, packed);
            }
        }
        for q in 16 * full..dst.len() {
            let lo = super::bf16_bits(src[2 * q]);
            let hi = src.get(2 * q + 1).map_or(0, |&v| super::bf16_bits(v));
            dst[q] = lo | (hi << 16);
        }
    }

    /// `c[r][j] = Σ_q dot(a[r][q], b[q][j])` for `R` rows and the panel's first `cols` columns;
    /// `a` rows are `kp` pairs apart, `c` rows `ldc` floats apart.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn micro<const R: usize>(a: *const u32, kp: usize, b: *const u32, c: *mut f32, ldc: usize, cols: usize) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for q in 0..kp {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + q) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = c.add(r * ldc);
                if cols == NR {
                    _mm512_storeu_ps(row, acc[0]);
                    _mm512_storeu_ps(row.add(16), acc[1]);
                } else {
                    let lo = if cols >= 16 { 0xFFFF } else { (1u32 << cols) - 1 } as __mmask16;
                    let hi = if cols > 16 { ((1u32 << (cols - 16)) - 1) as __mmask16 } else { 0 };
                    _mm512_mask_storeu_ps(row, lo, acc[0]);
                    _mm512_mask_storeu_ps(row.add(16), hi, acc[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(x: f32) -> f64 {
        half::bf16::from_f32(x).to_f64()
    }

    /// A concatenation computes what its parts compute, column for column.
    #[test]
    fn concatenated_parts_match_the_parts() {
        if !supported() {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16");
            return;
        }
        let (m, k) = (5, 34);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 19) as f32 / 19.0 - 0.5).collect();
        let parts: Vec<PackedBf16> = [40usize, 16, 7]
            .iter()
            .map(|&n| PackedBf16::new(&(0..k * n).map(|i| ((i * 13 + n) % 23) as f32 / 23.0 - 0.5).collect::<Vec<_>>(), k, n))
            .collect();
        let fused = PackedBf16::concat(&parts.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!((fused.k(), fused.n()), (k, 63));
        let y = matmul(&x, m, &fused);
        let mut at = 0;
        for p in &parts {
            let yp = matmul(&x, m, p);
            for r in 0..m {
                assert_eq!(&y[r * 63 + at..r * 63 + at + p.n()], &yp[r * p.n()..(r + 1) * p.n()]);
            }
            at += p.n();
        }
        assert!(PackedBf16::concat(&[&parts[0], &PackedBf16::new(&[0.0; 6], 3, 2)]).is_none(), "K differs");
    }

    /// Against a scalar product of the bf16-rounded inputs, over shapes with odd K, N not a
    /// multiple of 32, M not a multiple of the micro-kernel's rows, and more rows than one chunk;
    /// the shapes whose K/2 is a multiple of 16 take the AMX path where the CPU has it.
    #[test]
    fn matches_the_rounded_product() {
        if !supported() {
            eprintln!("SKIPPED: this CPU has no AVX512-BF16");
            return;
        }
        eprintln!("AMX path {}", if uses_amx() { "tested" } else { "SKIPPED: no AMX on this CPU (or DNO_AMX=0)" });
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let shapes = [(1, 1, 1), (3, 7, 33), (8, 64, 32), (13, 577, 70), (300, 96, 45), (2, 70, 3), (40, 1536, 100)];
        for &(m, k, n) in &shapes {
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let got = matmul(&x, m, &PackedBf16::new(&w, k, n));
            // Where matmul took the AMX path, the AVX512-BF16 kernel is checked too.
            let other = matmul_avx512(Rows::F32(&x), m, &PackedBf16::new(&w, k, n));
            // The same weights as bf16, stored transposed ([n, k]: a tied head's embeddings).
            let wt: Vec<half::bf16> = (0..n * k).map(|t| half::bf16::from_f32(w[(t % k) * n + t / k])).collect();
            let got_t = matmul(&x, m, &PackedBf16::from_bf16(&wt, k, n, true));
            // Rows given as bf16 bits (rounded by round_to_bf16) and weights packed from bf16
            // rows: bit for bit the same product.
            let (mut xb, mut wb) = (vec![0u16; m * k], vec![0u16; k * n]);
            round_to_bf16(&x, &mut xb);
            round_to_bf16(&w, &mut wb);
            assert!(xb.iter().zip(&x).all(|(&b, &v)| b == half::bf16::from_f32(v).to_bits()), "round_to_bf16 rounds as half does");
            let got_b = matmul_rows(Rows::Bf16(&xb), m, &PackedBf16::from_bf16_rows(&wb, k, n));
            assert_eq!(got, got_b, "[{m},{k},{n}]: bf16 rows / row-packed weights");
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|q| round(x[i * k + q]) * round(w[q * n + j])).sum();
                    let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                    assert!((got[i * n + j] as f64 - want).abs() < tol, "[{m},{k},{n}] at ({i},{j}): {} vs {want}", got[i * n + j]);
                    assert!((other[i * n + j] as f64 - want).abs() < tol, "avx512 [{m},{k},{n}] at ({i},{j}): {} vs {want}", other[i * n + j]);
                    assert_eq!(got[i * n + j], got_t[i * n + j], "transposed packing differs at ({i},{j})");
                }
            }
        }
    }
}
