#!/usr/bin/env python3
"""llama.cpp last-position logits for the prompts of logits.json, compared with transformers.

Writes fixtures/reference/smollm2/logits_llamacpp.json: for each case of logits.json (same ids),
llama.cpp's top-50 ids/values, its argmax, and the max/mean |llama.cpp - HF| over the full vocab.
llama.cpp quantizes activations for its Q4_1/Q8_0 dot products, so it differs from transformers'
f32 (de-quantized weights) forward by more than float rounding; this file measures by how much,
which tells a Rust test what tolerance a faithful implementation can be held to.

Usage: /work/venv-ref/bin/python scripts/llamacpp_logits_ref.py [--gguf PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import REPO_ROOT, default_gguf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=default_gguf())
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "fixtures" / "reference" / "smollm2")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    args = ap.parse_args()
    hf_path = args.out / "logits.json"
    if not hf_path.is_file():
        sys.exit(f"llamacpp_logits_ref: {hf_path} missing (run scripts/make_reference.py first)")
    hf = json.loads(hf_path.read_text(encoding="utf-8"))

    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(args.gguf), n_ctx=512, n_batch=512, n_threads=args.threads, logits_all=True, verbose=False
    )
    cases = []
    for c in hf["cases"]:
        llm.reset()
        llm.eval(c["ids"])
        got = np.array(llm.scores[len(c["ids"]) - 1], dtype=np.float64)
        ref = np.array(c["logits_rounded_3dp"], dtype=np.float64)
        diff = np.abs(got - ref)
        lp_got = got - np.logaddexp.reduce(got)
        lp_ref = ref - np.logaddexp.reduce(ref)
        p_ref = np.exp(lp_ref)
        kl = float(np.sum(p_ref * (lp_ref - lp_got)))
        top_ref = np.argsort(-ref, kind="stable")[:50]
        order = np.argsort(-got, kind="stable")[:50]
        cases.append(
            {
                "name": c["name"],
                "ids": c["ids"],
                "top50_ids": [int(i) for i in order],
                "top50_values": [float(np.float32(got[i])) for i in order],
                "argmax": int(order[0]),
                "hf_argmax": int(c["top50_ids"][0]),
                "max_abs_diff_vs_hf": float(diff.max()),
                "mean_abs_diff_vs_hf": float(diff.mean()),
                "max_abs_logprob_diff_on_hf_top50": float(np.abs(lp_got - lp_ref)[top_ref].max()),
                "kl_hf_to_llamacpp": kl,
            }
        )
        print(f"{c['name']}: max|diff|={diff.max():.4f} mean|diff|={diff.mean():.4f} "
              f"top50 max|dlogp|={np.abs(lp_got - lp_ref)[top_ref].max():.4f} KL={kl:.5f} "
              f"argmax llama.cpp={order[0]} hf={c['top50_ids'][0]}")
    out = {
        "model": args.gguf.name,
        "producer": "scripts/llamacpp_logits_ref.py",
        "versions": {"llama_cpp_python": version("llama_cpp_python")},
        "note": "llama.cpp (CPU) logits at the last position of the same ids as logits.json; diffs are "
        "against logits.json's 3-decimal HF vector.",
        "cases": cases,
    }
    path = args.out / "logits_llamacpp.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
