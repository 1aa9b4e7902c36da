#!/usr/bin/env python3
"""Reference fixtures for Gemma 3 270M (base, Q4_K_M GGUF from scripts/fetch_gemma3.sh), made by
HF transformers loading the GGUF (`gguf_file=`), into fixtures/reference/gemma3/:

  model_info.json  GGUF metadata summary
  tokenize.json    HF token ids of the ref_corpus strings (transformers' own SentencePiece -> BPE
                   conversion; llama.cpp's ids are in tokenize_llamacpp.json, which is what dno
                   must equal, see scripts/llamacpp_tokenize_ref.py)
  chat.json        the chat cases rendered with pipelines/chat_templates/gemma.jinja (the GGUF has
                   no chat template) + ids
  greedy.json      greedy continuations (64 new tokens) of the 10 ref_corpus greedy prompts
  logits.json      last-position logits of the ref_corpus logits prompts: the top 50 exactly, and
                   every 4th vocabulary entry (65536 of 262144) rounded to 3 decimals, so the file
                   stays near SmolLM2's size

Usage:
  /work/venv-ref/bin/python scripts/make_gemma3_reference.py [--gguf PATH] [--out DIR] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as mr  # noqa: E402
import ref_corpus  # noqa: E402

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
TEMPLATE = mr.REPO_ROOT / "pipelines" / "chat_templates" / "gemma.jinja"
LOGIT_STRIDE = 4


def default_gguf() -> Path:
    models = Path(os.environ.get("DNO_MODELS", Path.home() / ".cache" / "dno" / "models"))
    return models / GGUF_NAME


@torch.no_grad()
def make_logits(tok, model, common: dict) -> dict:
    cases = []
    for prompt in ref_corpus.logits_prompts():
        ids = mr.prompt_ids(tok, prompt)
        logits = model(torch.tensor([ids])).logits[0, -1].double().numpy()
        order = np.argsort(-logits, kind="stable")
        top = order[:50]
        cases.append(
            {
                "name": prompt["name"],
                "prompt": {k: v for k, v in prompt.items() if k != "name"},
                "ids": ids,
                "vocab_size": int(logits.shape[0]),
                "max_abs_logit": float(np.abs(logits).max()),
                "top50_ids": [int(i) for i in top],
                "top50_values": [float(np.float32(logits[i])) for i in top],
                "stride": LOGIT_STRIDE,
                "strided_logits_rounded_3dp": [round(float(x), 3) for x in logits[::LOGIT_STRIDE]],
            }
        )
    return {
        **common,
        "note": "Last-position logits of a single forward pass over `ids` (the chat prompts start with "
        "<bos> from the template; raw text prompts get no BOS). strided_logits_rounded_3dp[k] is "
        f"logit[{LOGIT_STRIDE} * k] rounded to 3 decimals; top50_values are exact f32 values.",
        "cases": cases,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=default_gguf())
    ap.add_argument("--out", type=Path, default=mr.REPO_ROOT / "fixtures" / "reference" / "gemma3")
    ap.add_argument("--only", default="info,tokenize,chat,greedy,logits")
    args = ap.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"make_gemma3_reference: GGUF not found at {args.gguf} (run scripts/fetch_gemma3.sh)")
    only = set(args.only.split(","))

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    common = {
        "model": GGUF_NAME,
        "producer": "scripts/make_gemma3_reference.py",
        "chat_template": str(TEMPLATE.relative_to(mr.REPO_ROOT)),
        "versions": mr.versions(),
    }
    if "info" in only:
        info = mr.gguf_metadata(args.gguf)
        # 6670 non-normal tokens: keep the count per type and the first 20 of each.
        by_type: dict[int, list] = {}
        for t in info.pop("non_normal_tokens"):
            by_type.setdefault(t["type"], []).append(t)
        info["non_normal_token_counts"] = {str(k): len(v) for k, v in sorted(by_type.items())}
        info["non_normal_tokens_first20"] = {str(k): v[:20] for k, v in sorted(by_type.items())}
        mr.write_json(args.out / "model_info.json", {**common, **info})
    tok, model = mr.load(args.gguf)
    tok.chat_template = TEMPLATE.read_text(encoding="utf-8")
    # The GGUF's eos is <eos> (1); llama.cpp also ends generation at <end_of_turn> (106), found by
    # name, as does google/gemma-3's generation_config (eos_token_id [1, 106]) and dno.
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    if "tokenize" in only:
        mr.write_json(args.out / "tokenize.json", mr.make_tokenize(tok, common))
    if "chat" in only:
        mr.write_json(args.out / "chat.json", mr.make_chat(tok, common))
    if "logits" in only:
        mr.write_json(args.out / "logits.json", make_logits(tok, model, common), indent=None)
    if "greedy" in only:
        mr.write_json(args.out / "greedy.json", mr.make_greedy(tok, model, common))


if __name__ == "__main__":
    main()
