#!/usr/bin/env python3
"""Produce reference fixtures for SmolLM2-135M-Instruct (Q4_1 GGUF) with HF transformers.

Writes into fixtures/reference/smollm2/:
  model_info.json  GGUF metadata summary (tokenizer.ggml.pre, special ids, chat template)
  tokenize.json    token ids of a >= 200 string corpus (add_special_tokens=False)
  chat.json        apply_chat_template(..., tokenize=False, add_generation_prompt=True) + ids
  greedy.json      greedy continuations (64 new tokens) from transformers
  logits.json      last-position logits for a few prompts (full vector, rounded)

Usage:
  /work/venv-ref/bin/python scripts/make_reference.py [--gguf PATH] [--out DIR] [--only NAME,...]
The GGUF defaults to $DNO_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf (see scripts/fetch_smollm2.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_corpus  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ROOT = Path(__file__).resolve().parent.parent
GREEDY_NEW_TOKENS = 64


def default_gguf() -> Path:
    models = Path(os.environ.get("DNO_MODELS", Path.home() / ".cache" / "dno" / "models"))
    return models / GGUF_NAME


def versions() -> dict:
    import gguf
    import tokenizers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy": np.__version__,
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def write_json(path: Path, obj: dict, indent: int | None = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, indent=indent)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


def gguf_metadata(gguf_path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    meta: dict = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key in (
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.scores",
        ):
            meta[key] = f"<array of {len(field.data)}>"
            continue
        try:
            val = field.contents()
        except Exception as e:  # pragma: no cover - depends on gguf version
            val = f"<unreadable: {e}>"
        if isinstance(val, list) and len(val) > 64:
            val = f"<array of {len(val)}>"
        meta[key] = val
    tensor_types: dict[str, int] = {}
    for t in reader.tensors:
        name = t.tensor_type.name
        tensor_types[name] = tensor_types.get(name, 0) + 1
    # token_type histogram and the special ("control") tokens, useful for tokenizer tests
    tokens_field = reader.fields.get("tokenizer.ggml.tokens")
    type_field = reader.fields.get("tokenizer.ggml.token_type")
    control = []
    if tokens_field is not None and type_field is not None:
        toks = tokens_field.contents()
        types = type_field.contents()
        for i, (tok, ty) in enumerate(zip(toks, types)):
            if ty != 1:  # 1 = NORMAL
                control.append({"id": i, "token": tok, "type": int(ty)})
    return {"metadata": meta, "tensor_type_counts": tensor_types, "non_normal_tokens": control}


def load(gguf_path: Path):
    d, f = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    return tok, model


def make_tokenize(tok, common: dict) -> dict:
    cases = []
    for text in ref_corpus.corpus():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        cases.append(
            {
                "text": text,
                "ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": tok.decode(ids, skip_special_tokens=False),
            }
        )
    backend = json.loads(tok.backend_tokenizer.to_str())
    return {
        **common,
        "hf_tokenizer_pipeline": {k: backend.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")},
        "pre_tokenizer_caveat": "transformers builds this tokenizer from the GGUF and ignores "
        "tokenizer.ggml.pre='smollm': it uses the plain GPT-2 byte-level regex, while llama.cpp (and the "
        "original SmolLM2 tokenizer.json, Digits(individual_digits=True)) split every numeric char "
        "(\\p{N}, incl. ½ ² Ⅳ) on its own. Strings with such chars after a space can differ; see "
        "tokenize_llamacpp.json.",
        "add_special_tokens": False,
        "note": "ids = tokenizer(text, add_special_tokens=False).input_ids; special tokens written "
        "inside the text (e.g. <|im_start|>) are matched as special tokens by the HF tokenizer. "
        "'decoded' = tokenizer.decode(ids, skip_special_tokens=False).",
        "cases": cases,
    }


def make_chat(tok, common: dict) -> dict:
    cases = []
    for case in ref_corpus.chat_cases():
        text = tok.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids_direct = tok.apply_chat_template(case["messages"], tokenize=True, add_generation_prompt=True)
        if hasattr(ids_direct, "keys"):
            ids_direct = ids_direct["input_ids"]
        cases.append(
            {
                "name": case["name"],
                "messages": case["messages"],
                "text": text,
                "ids": ids,
                "ids_match_apply_chat_template_tokenize": list(ids_direct) == ids,
            }
        )
    return {
        **common,
        "chat_template": tok.chat_template,
        "note": "text = apply_chat_template(messages, tokenize=False, add_generation_prompt=True); "
        "ids = tokenizer(text, add_special_tokens=False).input_ids",
        "cases": cases,
    }


def prompt_ids(tok, prompt: dict) -> list[int]:
    if "text" in prompt:
        return tok(prompt["text"], add_special_tokens=False)["input_ids"]
    text = tok.apply_chat_template(prompt["messages"], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def manual_greedy(model, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy decoding with a KV cache that never stops at EOS.

    Returns the new ids and, per step, the margin logit[top1] - logit[top2]
    (small margins flag near-ties that another implementation may break differently).
    """
    out = model(torch.tensor([ids]), use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1]
    new, margins = [], []
    for _ in range(n):
        top2 = torch.topk(logits, 2)
        nxt = int(top2.indices[0])
        new.append(nxt)
        margins.append(round(float(top2.values[0] - top2.values[1]), 5))
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
    return new, margins


@torch.no_grad()
def make_greedy(tok, model, common: dict) -> dict:
    gen_cfg = model.generation_config
    eos = gen_cfg.eos_token_id
    cases = []
    for prompt in ref_corpus.greedy_prompts():
        ids = prompt_ids(tok, prompt)
        inp = torch.tensor([ids])
        out = model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            do_sample=False,
            max_new_tokens=GREEDY_NEW_TOKENS,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        gen_ids = out[0, len(ids) :].tolist()
        no_stop_ids, margins = manual_greedy(model, ids, GREEDY_NEW_TOKENS)
        prefix_agree = all(a == b for a, b in zip(gen_ids, no_stop_ids))
        cases.append(
            {
                "name": prompt["name"],
                "messages": prompt["messages"],
                "prompt_ids": ids,
                "generate_new_ids": gen_ids,
                "generate_text": tok.decode(gen_ids, skip_special_tokens=False),
                "stopped_on_eos": len(gen_ids) < GREEDY_NEW_TOKENS,
                "no_stop_new_ids": no_stop_ids,
                "no_stop_text": tok.decode(no_stop_ids, skip_special_tokens=False),
                "no_stop_top1_top2_margin": margins,
                "generate_is_prefix_of_no_stop": prefix_agree,
            }
        )
    return {
        **common,
        "max_new_tokens": GREEDY_NEW_TOKENS,
        "eos_token_id_generation_config": eos,
        "tokenizer_eos_token": tok.eos_token,
        "tokenizer_eos_token_id": tok.eos_token_id,
        "tokenizer_bos_token_id": tok.bos_token_id,
        "tokenizer_pad_token_id": tok.pad_token_id,
        "note": "generate_new_ids: model.generate(do_sample=False, max_new_tokens=64) with the model's "
        "generation_config (stops at eos_token_id_generation_config; the stopping eos id is included). "
        "no_stop_new_ids: a plain argmax loop with KV cache for exactly 64 steps that ignores EOS. "
        "Prompts are the chat template with add_generation_prompt=True, no BOS added.",
        "cases": cases,
    }


@torch.no_grad()
def make_logits(tok, model, common: dict) -> dict:
    cases = []
    for prompt in ref_corpus.logits_prompts():
        ids = prompt_ids(tok, prompt)
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
                "mean_logit": float(logits.mean()),
                "std_logit": float(logits.std()),
                "top50_ids": [int(i) for i in top],
                "top50_values": [float(np.float32(logits[i])) for i in top],
                "logits_rounded_3dp": [round(float(x), 3) for x in logits],
            }
        )
    return {
        **common,
        "note": "Last-position logits of a single forward pass over `ids` (no BOS added). "
        "logits_rounded_3dp is the full vocabulary vector rounded to 3 decimal places; "
        "top50_values are exact f32 values.",
        "cases": cases,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=default_gguf())
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "fixtures" / "reference" / "smollm2")
    ap.add_argument("--only", default="info,tokenize,chat,greedy,logits")
    args = ap.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"make_reference: GGUF not found at {args.gguf} (run scripts/fetch_smollm2.sh)")
    only = set(args.only.split(","))

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    common = {
        "model": GGUF_NAME,
        "producer": "scripts/make_reference.py",
        "versions": versions(),
    }
    if "info" in only:
        write_json(args.out / "model_info.json", {**common, **gguf_metadata(args.gguf)})
    tok, model = load(args.gguf)
    if "tokenize" in only:
        write_json(args.out / "tokenize.json", make_tokenize(tok, common))
    if "chat" in only:
        write_json(args.out / "chat.json", make_chat(tok, common))
    if "logits" in only:
        write_json(args.out / "logits.json", make_logits(tok, model, common), indent=None)
    if "greedy" in only:
        write_json(args.out / "greedy.json", make_greedy(tok, model, common))


if __name__ == "__main__":
    main()
