//! Matmul throughput of burn-flex on the shapes SmolLM2-135M trains and decodes with, in GFLOP/s,
//! f32 and bf16. `scripts/bench_gemm_torch.py` measures torch on the same shapes, to tell how
//! much of a gap to a peer is FLOPs and how much is the matmul rate.
//!
//! `cargo run --release -p dno-model --example bench_gemm [-- --reps 5]`
use burn::tensor::{DType, Device, Distribution, Tensor};
use std::time::Instant;

fn main() {
    let reps: usize = std::env::args().skip_while(|a| a != "--reps").nth(1).map_or(5, |v| v.parse().expect("--reps N"));
    let device = Device::flex();
    // (what, M, K, N): training has ~1200 positions per shard (4 pairs of ~300), decoding 64 rows.
    let shapes = [
        ("train q/o proj", 1200, 576, 576),
        ("train gate/up proj", 1200, 576, 1536),
        ("train down proj", 1200, 1536, 576),
        ("train dW gate/up (K = positions)", 576, 1200, 1536),
        ("decode gate/up, 64 rows", 64, 576, 1536),
        ("decode head, 64 rows", 64, 576, 49152),
    ];
    println!("| shape | M x K x N | burn f32 GFLOP/s | burn bf16 GFLOP/s | dno bf16mm GFLOP/s |");
    println!("|---|---|---|---|---|");
    for (what, m, k, n) in shapes {
        let rate = |dtype: DType| {
            let a = Tensor::<2>::random([m, k], Distribution::Default, &device).cast(dtype);
            let b = Tensor::<2>::random([k, n], Distribution::Default, &device).cast(dtype);
            let _ = a.clone().matmul(b.clone()).into_data(); // warm-up
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t = Instant::now();
                let _ = a.clone().matmul(b.clone()).into_data();
                best = best.min(t.elapsed().as_secs_f64());
            }
            2.0 * (m * k * n) as f64 / best / 1e9
        };
        let ours = if dno_model::bf16mm::supported() {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
            let packed = dno_model::bf16mm::PackedBf16::new(&w, k, n);
            let _ = dno_model::bf16mm::matmul(&x, m, &packed);
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t = Instant::now();
                let _ = dno_model::bf16mm::matmul(&x, m, &packed);
                best = best.min(t.elapsed().as_secs_f64());
            }
            format!("{:.1}", 2.0 * (m * k * n) as f64 / best / 1e9)
        } else {
            "no AVX512-BF16".into()
        };
        println!("| {what} | {m} x {k} x {n} | {:.1} | {:.1} | {ours} |", rate(DType::F32), rate(DType::BF16));
    }
}
