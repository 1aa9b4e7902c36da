#!/usr/bin/env python3
"""Tokenize the reference corpus with llama.cpp (through llama-cpp-python) for comparison with HF.

Writes fixtures/reference/smollm2/tokenize_llamacpp.json with, for each corpus string, llama.cpp's
token ids (add_bos=False, special=True: special-token text such as <|im_start|> is parsed as the
special token, which is what the HF tokenizer does), and whether they equal the HF ids stored in
tokenize.json (run make_reference.py first). Also records ids of the chat prompts (chat.json texts).

Usage: /work/venv-ref/bin/python scripts/llamacpp_tokenize_ref.py [--gguf PATH] [--out DIR]
       [--llama-tokenize BIN]
With --llama-tokenize (the llama-tokenize binary of scripts/build_llamacpp.sh), each string goes
through `BIN -m GGUF --stdin --ids --no-bos --no-escape` (special tokens parsed, the default)
instead of llama-cpp-python. Gemma 3 270M:
  scripts/llamacpp_tokenize_ref.py --gguf ~/.cache/dno/models/gemma-3-270m-q4_k_m.gguf \
      --out fixtures/reference/gemma3 --llama-tokenize /work/llama-build/bin/llama-tokenize
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_corpus  # noqa: E402
from make_reference import REPO_ROOT, default_gguf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=default_gguf())
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "fixtures" / "reference" / "smollm2")
    ap.add_argument("--llama-tokenize", type=Path, help="llama.cpp's llama-tokenize binary (else llama-cpp-python)")
    args = ap.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"llamacpp_tokenize_ref: GGUF not found at {args.gguf} (run scripts/fetch_smollm2.sh)")

    hf_path = args.out / "tokenize.json"
    hf_ids = {}
    if hf_path.is_file():
        hf_ids = {c["text"]: c["ids"] for c in json.loads(hf_path.read_text(encoding="utf-8"))["cases"]}

    if args.llama_tokenize:
        cmd = [str(args.llama_tokenize), "-m", str(args.gguf), "--stdin", "--ids", "--no-bos", "--no-escape", "--log-disable"]

        def tok(text: str) -> list[int]:
            r = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=True)
            return json.loads(r.stdout.decode().strip().splitlines()[-1])

        v = subprocess.run([str(args.llama_tokenize), "--version"], capture_output=True, text=True)
        versions = {"llama_tokenize": (v.stdout + v.stderr).strip()}
        how = "ids = `llama-tokenize -m GGUF --stdin --ids --no-bos --no-escape` of the text (special tokens parsed)"
    else:
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(args.gguf), vocab_only=True, verbose=False)

        def tok(text: str) -> list[int]:
            return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

        versions = {
            "llama_cpp_python": version("llama_cpp_python"),
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
        }
        how = "ids = Llama(vocab_only=True).tokenize(text.encode(), add_bos=False, special=True)"

    cases, mismatches = [], []
    for text in ref_corpus.corpus():
        ids = tok(text)
        same = hf_ids.get(text) == ids if text in hf_ids else None
        case = {"text": text, "ids": ids, "same_as_hf": same}
        if same is False:
            case["hf_ids"] = hf_ids[text]
            mismatches.append(text)
        cases.append(case)

    chat_cases = []
    chat_path = args.out / "chat.json"
    if chat_path.is_file():
        for c in json.loads(chat_path.read_text(encoding="utf-8"))["cases"]:
            ids = tok(c["text"])
            chat_cases.append({"name": c["name"], "ids": ids, "same_as_hf": ids == c["ids"]})

    out = {
        "model": args.gguf.name,
        "producer": "scripts/llamacpp_tokenize_ref.py",
        "versions": versions,
        "add_bos": False,
        "special": True,
        "note": how + "; same_as_hf compares with tokenize.json (HF tokenizer built by transformers from the same GGUF).",
        "n_cases": len(cases),
        "n_mismatch_vs_hf": len(mismatches),
        "mismatch_texts": mismatches,
        "cases": cases,
        "chat_cases": chat_cases,
    }
    path = args.out / "tokenize_llamacpp.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(cases)} cases, {len(mismatches)} differ from HF")


if __name__ == "__main__":
    main()
