"""The peer side of scripts/gpu_check.sh: transformers and TRL on the same device and workload.

Subcommands (each prints one number or line on stdout, errors on stderr):
  parity          greedy continuations of the prompts in a dno samples file, compared with dno's
  generate        HF generate, K samples per prompt (T=0.7, top-p 0.95, EOS on): prints new tokens
  make-pairs      longest vs shortest sample of each prompt -> prompt/chosen/rejected JSONL
  metrics-tokens  the tokens a dno training run processed (sum of metrics.parquet `tokens`)
  metrics-diff    the largest per-step loss difference between two dno training runs
  dpo             TRL DPOTrainer, one epoch over the pairs: prints tokens processed, counted as
                  dno counts them (each pair's prompt once plus both responses)
"""
import argparse
import json
import sys
from pathlib import Path


def read_parquet(path):
    """Rows of a Parquet file as dicts, with whichever reader is installed."""
    try:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except ImportError:
        import polars as pl

        return pl.read_parquet(path).to_dicts()


def load(gguf, device):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(gguf)
    tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
    dtype = torch.float32
    model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=dtype)
    # transformers keeps its GGUF quantizer attached although every weight is now a plain tensor, and
    # Trainer then refuses to fine-tune a "quantized" model: detach the stale marker.
    q = getattr(model, "hf_quantizer", None)
    if q is not None:
        assert all(t.dtype == dtype for t in model.parameters())
        q.remove_quantization_config(model)
    return tok, model.to(torch_device(device)).eval()


def torch_device(spec):
    return "cpu" if spec == "cpu" else spec


def chat(tok, prompt):
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def cmd_parity(a):
    import torch

    tok, model = load(a.gguf, a.device)
    rows = read_parquet(a.samples)
    same = 0
    for r in rows:
        ids = tok(chat(tok, r["prompt"]), return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=a.max_new_tokens, do_sample=False)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        if text.strip() == r["response"].strip():
            same += 1
        else:
            print(f"differs: {r['prompt_id']}: dno {r['response'][:60]!r} vs hf {text[:60]!r}", file=sys.stderr)
    print(f"{same}/{len(rows)}")


def cmd_generate(a):
    import torch

    tok, model = load(a.gguf, a.device)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [json.loads(l)["prompt"] for l in open(a.prompts)]
    texts = [chat(tok, p) for p in prompts for _ in range(a.k)]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=a.max_new_tokens, do_sample=True, temperature=0.7, top_p=0.95,
                             top_k=0, pad_token_id=tok.pad_token_id)
    new = out[:, batch.input_ids.shape[1]:]
    tokens = 0
    for row in new.tolist():
        n = len(row)
        if tok.eos_token_id in row:
            n = row.index(tok.eos_token_id) + 1
        tokens += n
    print(tokens)


def cmd_make_pairs(a):
    by_prompt = {}
    for r in read_parquet(a.samples):
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    pairs = []
    depth = 0
    while len(pairs) < a.pairs:
        added = False
        for pid in sorted(by_prompt):
            rs = sorted(by_prompt[pid], key=lambda r: (len(r["response"]), r["sample_id"]))
            if depth < len(rs) // 2 and len(pairs) < a.pairs:
                long, short = rs[-1 - depth], rs[depth]
                added = True
                if long["response"] == short["response"]:
                    continue  # not a preference pair
                pairs.append({"prompt_id": f"{pid}-{depth}", "prompt": long["prompt"], "chosen": long["response"],
                              "rejected": short["response"]})
        if not added:
            break
        depth += 1
    with open(a.out, "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")


def cmd_metrics_tokens(a):
    print(sum(int(r["tokens"]) for r in read_parquet(a.metrics)))


def cmd_metrics_diff(a):
    one, other = read_parquet(a.a), read_parquet(a.b)
    if len(one) != len(other):
        sys.exit(f"{len(one)} steps vs {len(other)} steps")
    print(f"{max(abs(float(x['loss']) - float(y['loss'])) for x, y in zip(one, other)):.2e}")


def cmd_dpo(a):
    import time

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if a.threads:
        torch.set_num_threads(a.threads)
    tok, model = load(a.gguf, a.device)
    rows = [json.loads(l) for l in open(a.pairs)]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "chosen": [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    cfg = DPOConfig(output_dir="/tmp/dno-gpu-check-trl", beta=0.1, learning_rate=5e-7, num_train_epochs=1,
                    per_device_train_batch_size=8, lr_scheduler_type="constant", report_to=[], save_strategy="no",
                    logging_steps=1, use_cpu=a.device == "cpu", gradient_checkpointing=False,
                    precompute_ref_log_probs=True, bf16=a.bf16)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    print(f"trl: train() {time.perf_counter() - t0:.1f} s (reference pass included)", file=sys.stderr)
    tokens = 0
    for r in rows:
        p = len(tok(chat(tok, r["prompt"]), add_special_tokens=False).input_ids)
        c = len(tok(r["chosen"], add_special_tokens=False).input_ids) + 1
        j = len(tok(r["rejected"], add_special_tokens=False).input_ids) + 1
        tokens += p + c + j
    print(tokens)


ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
sub = ap.add_subparsers(dest="cmd", required=True)
s = sub.add_parser("parity"); s.add_argument("--gguf"); s.add_argument("--device"); s.add_argument("--samples")
s.add_argument("--max-new-tokens", type=int, default=32)
s = sub.add_parser("generate"); s.add_argument("--gguf"); s.add_argument("--device"); s.add_argument("--prompts")
s.add_argument("--k", type=int); s.add_argument("--max-new-tokens", type=int)
s = sub.add_parser("make-pairs"); s.add_argument("--samples"); s.add_argument("--pairs", type=int); s.add_argument("--out")
s = sub.add_parser("metrics-tokens"); s.add_argument("--metrics")
s = sub.add_parser("metrics-diff"); s.add_argument("--a"); s.add_argument("--b")
s = sub.add_parser("dpo"); s.add_argument("--gguf"); s.add_argument("--device"); s.add_argument("--pairs")
s.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
s.add_argument("--bf16", action="store_true", help="bf16 autocast (DPOConfig bf16=True), f32 master weights")
a = ap.parse_args()
{"parity": cmd_parity, "generate": cmd_generate, "make-pairs": cmd_make_pairs, "metrics-tokens": cmd_metrics_tokens,
 "metrics-diff": cmd_metrics_diff, "dpo": cmd_dpo}[a.cmd](a)
