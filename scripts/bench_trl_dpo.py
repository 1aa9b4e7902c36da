"""Peer benchmark: TRL DPOTrainer training throughput on CPU, for comparison with
crates/dno-train/examples/bench_train.rs (same workload, same table columns).

Usage:
    /work/venv-ref/bin/python scripts/bench_trl_dpo.py \
        [--model PATH.gguf] [--pairs 24] [--batch 8] [--seq-len 120] [--prompt-len 40] \
        [--threads 2] [--steps N] [--no-precompute] [--grad-ckpt]

Workload: SmolLM2-135M-Instruct (GGUF, dequantised to f32 by transformers), full fine-tune,
sigmoid DPO with beta 0.1, lr 5e-7 constant, AdamW, batches of `--batch` pairs, one epoch.
Each pair is `--prompt-len` random prompt tokens plus a chosen and a rejected response of
`--seq-len - --prompt-len` random tokens (ids >= 100, so no special tokens; fixed seed).
The token ids go straight into TRL's collator: the dataset already holds `prompt_ids`,
`chosen_ids`, `rejected_ids`, and `_prepare_dataset` (which would tokenise text) is bypassed.

Reference log-probs: by default `precompute_ref_log_probs=True`, so TRL runs one no-grad pass
of the (still untrained) policy over all pairs before training, like our Rust reference pass;
that pass is timed on its own. With `--no-precompute`, a second copy of the model is loaded as
`ref_model` and TRL runs its forward inside every step (the ref pass then reads 0 and the
reference work is part of train()). TRL's config turns activation (gradient) checkpointing on
by default; the Rust trainer does not checkpoint, so it is off here unless `--grad-ckpt`.
Throughput counts the tokens of both sequences of every trained pair over ref + train time.
"""
import argparse
import os
import random
import resource
import tempfile
import time
from pathlib import Path

DEFAULT_MODEL = Path.home() / ".cache/dno/models/SmolLM2-135M-Instruct.Q4_1.gguf"

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--model", default=str(DEFAULT_MODEL))
ap.add_argument("--pairs", type=int, default=24)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--seq-len", type=int, default=120)
ap.add_argument("--prompt-len", type=int, default=40)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=None, help="default: pairs / batch (one epoch)")
ap.add_argument("--no-precompute", action="store_true", help="reference forward inside each step")
ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (TRL's default)")
args = ap.parse_args()
if not 0 < args.prompt_len < args.seq_len:
    ap.error("--prompt-len must be in 1..seq-len")

os.environ.setdefault("TQDM_DISABLE", "1")
import torch  # noqa: E402  (imported after the env tweak on purpose)
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

torch.set_num_threads(args.threads)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class TimedDPOTrainer(DPOTrainer):
    """DPOTrainer that accepts pre-tokenised pairs and times the reference precompute."""

    ref_s = 0.0

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # already prompt_ids / chosen_ids / rejected_ids

    def _precompute_ref_logps(self, dataset, name, batch_size):
        t0 = time.perf_counter()
        out = super()._precompute_ref_logps(dataset, name, batch_size)
        self.ref_s += time.perf_counter() - t0
        return out


gguf = Path(args.model)
t_load = time.perf_counter()


def load():
    m = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers leaves its GGUF quantizer attached even though every weight was unpacked to a plain
    # f32 tensor, and Trainer then refuses to fine-tune a "quantized" model; detach the stale marker.
    q = getattr(m, "hf_quantizer", None)
    if q is not None:
        assert not q.packed_modules and all(p.dtype == torch.float32 for p in m.parameters())
        q.remove_quantization_config(m)
    return m

tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = load()
ref_model = load() if args.no_precompute else None
load_s = time.perf_counter() - t_load
rss_load_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

vocab = model.config.vocab_size
rng = random.Random(1234)
toks = lambda n: [rng.randrange(100, vocab) for _ in range(n)]  # noqa: E731
resp = args.seq_len - args.prompt_len
rows = [{"prompt_ids": toks(args.prompt_len), "chosen_ids": toks(resp), "rejected_ids": toks(resp)}
        for _ in range(args.pairs)]
dataset = Dataset.from_list(rows)
steps = args.steps or args.pairs // args.batch
trained_pairs = steps * args.batch

cfg = DPOConfig(
    output_dir=tempfile.mkdtemp(prefix="bench_trl_dpo_"),
    use_cpu=True, bf16=False, fp16=False, beta=0.1, loss_type=["sigmoid"],
    learning_rate=5e-7, lr_scheduler_type="constant", warmup_steps=0,
    per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
    num_train_epochs=1, max_steps=steps if args.steps else -1,
    max_length=256, precompute_ref_log_probs=not args.no_precompute,
    precompute_ref_batch_size=args.batch, activation_checkpointing=args.grad_ckpt,
    dataloader_num_workers=0, report_to="none", save_strategy="no", eval_strategy="no",
    logging_steps=1, disable_tqdm=True, seed=1234,
)

load_before = load_average()
cpu0 = cpu_seconds()
t0 = time.perf_counter()
trainer = TimedDPOTrainer(model=model, ref_model=ref_model, args=cfg, train_dataset=dataset,
                          processing_class=tokenizer)
init_s = time.perf_counter() - t0 - trainer.ref_s
t1 = time.perf_counter()
trainer.train()
train_s = time.perf_counter() - t1
cpu_s = cpu_seconds() - cpu0
all_s = time.perf_counter() - t0
ref_s = trainer.ref_s
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

tokens = 2 * args.seq_len * trained_pairs
total = ref_s + train_s
mode = "TRL DPO full" + (" (ref in step)" if args.no_precompute else "") + (" +ckpt" if args.grad_ckpt else "")
print(f"\nmodel: {gguf} (loaded in {load_s:.1f}s), device: cpu, trainer init excl. ref pass {init_s:.1f}s")
print(f"{trained_pairs} pairs = {steps} steps x {args.batch} pairs, {args.seq_len} tokens per sequence "
      f"({args.prompt_len} prompt); ref pass over {args.pairs} pairs")
print()
print("| peer | pairs | train s | pairs/s | tokens/s (ref+policy) | peak RSS MiB |")
print("|---|---|---|---|---|---|")
print(f"| {mode} | {trained_pairs} | {train_s:.1f} | {trained_pairs / total:.3f} | {tokens / total:.1f} | {peak_mib:.0f} |")
print()
print(f"ref pass {ref_s:.1f}s, train() {train_s:.1f}s; policy-only tokens/s {tokens / train_s:.1f}"
      + (" (includes the in-step reference forwards)" if args.no_precompute else "")
      + f"; activation checkpointing {trainer.args.activation_checkpointing}; peak RSS after load {rss_load_mib:.0f} MiB")
print(f"CPU time of trainer init + ref pass + train: {cpu_s:.1f}s (average {cpu_s / all_s:.2f} cores ours); "
      f"CPU-normalised: {tokens / (cpu_s / args.threads):.1f} tokens/s on {args.threads} threads")
print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
      f"threads {torch.get_num_threads()}; load average before: {load_before}, after: {load_average()}")
