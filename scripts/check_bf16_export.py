#!/usr/bin/env python3
"""Checks a `dno export --dtype bf16` directory against transformers (issue 14's acceptance).

  python scripts/check_bf16_export.py MODEL_DIR SAMPLES.parquet [--tokens 16]

MODEL_DIR is the exported bf16 HF directory; SAMPLES.parquet is `dno sample --dtype bf16
--temperature 0 -k 1 --max-new-tokens N` of that same directory. The script loads MODEL_DIR with
`AutoModelForCausalLM.from_pretrained` (torch_dtype from config.json, which must say bfloat16),
runs greedy decoding on each sample's prompt through the same chat template, and compares the
first N tokens. A divergence counts as a bf16 near-tie when, at the first differing position,
transformers' logit of dno's token is within --tie (default 0.25, about two bf16 ulps at logit
magnitude 20) of its top logit. Prints one row per prompt and a summary; exits 1 on any real
mismatch. Needs torch, transformers and pyarrow (/work/venv-ref).
"""
import argparse
import json
import sys

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("samples")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--tie", type=float, default=0.25)
    a = ap.parse_args()

    cfg = json.load(open(f"{a.model_dir}/config.json"))
    assert cfg.get("torch_dtype") == "bfloat16", f"config.json torch_dtype is {cfg.get('torch_dtype')!r}"
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype="auto")
    assert model.dtype == torch.bfloat16, model.dtype
    model.eval()

    rows = pq.read_table(a.samples).to_pylist()
    exact = ties = bad = 0
    print("| prompt | dno tokens | first difference | verdict |")
    print("|---|---|---|---|")
    for r in rows:
        messages = []
        if r.get("system"):
            messages.append({"role": "system", "content": r["system"]})
        messages.append({"role": "user", "content": r["prompt"]})
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not torch.is_tensor(ids):
            ids = ids["input_ids"]
        ours = tok.encode(r["response"], add_special_tokens=False)[: a.tokens]
        n = min(a.tokens, len(ours)) if r["finish_reason"] == "stop" else a.tokens
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=a.tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        theirs = out[0, ids.shape[1]:].tolist()
        eos = set([tok.eos_token_id] + (model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list) else [model.generation_config.eos_token_id]))
        theirs_text = [t for t in theirs if t not in eos][:n]
        diff = next((j for j in range(min(n, len(theirs_text), len(ours))) if ours[j] != theirs_text[j]), None)
        if diff is None and len(ours[:n]) == len(theirs_text[:n]):
            exact += 1
            verdict, where = "match", "-"
        elif diff is None:
            # Same prefix, different length: retokenising the text changed the split at the end.
            exact += 1
            verdict, where = "match (prefix)", f"lengths {len(ours[:n])} vs {len(theirs_text)}"
        else:
            prefix = torch.tensor([ids[0].tolist() + ours[:diff]])
            with torch.no_grad():
                logits = model(prefix).logits[0, -1].float()
            gap = (logits.max() - logits[ours[diff]]).item()
            where = f"token {diff}: dno {ours[diff]} vs hf {theirs_text[diff]}, logit gap {gap:.3f}"
            if gap <= a.tie:
                ties += 1
                verdict = "bf16 near-tie"
            else:
                bad += 1
                verdict = "MISMATCH"
        print(f"| {r['prompt_id']} | {len(ours[:n])} | {where} | {verdict} |")
    print()
    print(f"{len(rows)} prompts, first {a.tokens} greedy tokens: {exact} identical, {ties} diverge at a bf16 near-tie "
          f"(logit gap <= {a.tie}), {bad} mismatched")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
