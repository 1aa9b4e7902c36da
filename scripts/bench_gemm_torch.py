"""torch's matmul GFLOP/s on the shapes of crates/dno-model/examples/bench_gemm.rs (same table)."""
import argparse, time, torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=5)
args = ap.parse_args()
torch.set_num_threads(args.threads)
shapes = [("train q/o proj", 1200, 576, 576), ("train gate/up proj", 1200, 576, 1536), ("train down proj", 1200, 1536, 576),
          ("train dW gate/up (K = positions)", 576, 1200, 1536), ("decode gate/up, 64 rows", 64, 576, 1536),
          ("decode head, 64 rows", 64, 576, 49152)]
print(f"| shape | M x K x N | torch {torch.__version__} f32 GFLOP/s | bf16 GFLOP/s |\n|---|---|---|---|")
for what, m, k, n in shapes:
    def rate(dtype):
        a, b = torch.rand(m, k, dtype=dtype), torch.rand(k, n, dtype=dtype)
        a @ b
        best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(args.reps))
        return 2 * m * k * n / best / 1e9
    print(f"| {what} | {m} x {k} x {n} | {rate(torch.float32):.1f} | {rate(torch.bfloat16):.1f} |")
