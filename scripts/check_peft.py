#!/usr/bin/env python3
"""Checks that PEFT loads the adapter `dno train --lora-rank R` writes (OUT/adapter).

  python scripts/check_peft.py BASE_DIR ADAPTER_DIR MERGED_DIR

Loads BASE_DIR with transformers, wraps it with `peft.PeftModel.from_pretrained(base,
ADAPTER_DIR)` (which fails on unknown or missing keys in PEFT's naming), and compares its logits
on a few token sequences with those of MERGED_DIR (dno's own merged export, OUT/model). Also
checks that every adapter tensor was loaded (no key left at PEFT's initialisation: lora_B is
zero at init, so a non-zero difference from the base proves the weights arrived). Prints the
largest logit difference; exits 1 above 1e-4. Needs torch, transformers, peft (/work/venv-ref).
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    base_dir, adapter_dir, merged_dir = sys.argv[1:4]
    base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, torch_dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 2, 7], [3, 3, 8, 21, 40, 11, 12, 4]])
    with torch.no_grad():
        base_logits = base(ids).logits
    peft_model = PeftModel.from_pretrained(base, adapter_dir)
    peft_model.eval()
    saved = load_file(f"{adapter_dir}/adapter_model.safetensors")
    state = peft_model.state_dict()
    missing = []
    for k, v in saved.items():
        # PEFT's in-model key carries the adapter name: ...lora_A.default.weight
        mk = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        if mk not in state or not torch.equal(state[mk], v):
            missing.append(k)
    assert not missing, f"adapter tensors not loaded as saved: {missing[:5]}"
    with torch.no_grad():
        peft_logits = peft_model(ids).logits
        merged_logits = merged(ids).logits
    d = (peft_logits - merged_logits).abs().max().item()
    moved = (peft_logits - base_logits).abs().max().item()
    print(f"{len(saved)} adapter tensors loaded by PEFT; max |logit(PEFT base+adapter) - logit(dno merged)| = {d:.2e}; "
          f"adapter effect max |dlogit| = {moved:.2e}")
    assert moved > 1e-4, "the adapter changed nothing"
    sys.exit(0 if d <= 1e-4 else 1)


if __name__ == "__main__":
    main()
