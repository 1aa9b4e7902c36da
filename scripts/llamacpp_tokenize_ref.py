#!/usr/bin/env python3
"""Tokenize the reference corpus with llama.cpp (through llama-cpp-python) for comparison with HF.

Writes fixtures/reference/smollm2/tokenize_llamacpp.json with, for each corpus string, llama.cpp's
token ids (add_bos=False, special=True: special-token text such as <|im_start|> is parsed as the
special token, which is what the HF tokenizer does), and whether they equal the HF ids stored in
tokenize.json (run make_reference.py first). Also records ids of the chat prompts (chat.json texts).

Usage: /work/venv-ref/bin/python scripts/llamacpp_tokenize_ref.py [--gguf PATH] [--out DIR]
       [--llama-tokenize BIN | --libllama PATH/libllama.so]
With --llama-tokenize (the llama-tokenize binary of scripts/build_llamacpp.sh), each string goes
through `BIN -m GGUF --stdin --ids --no-bos --no-escape` (special tokens parsed, the default)
instead of llama-cpp-python. With --libllama, the same call llama-tokenize makes
(llama_tokenize(vocab, text, add_special=false, parse_special=true) on a vocab-only model) goes
through ctypes into llama.cpp's shared library, for a build that has libllama but not the tool yet.
Gemma 3 270M:
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


def libllama_tokenizer(lib_path: Path, gguf: Path):
    """llama_tokenize through ctypes. The struct is llama.h's llama_model_params of the vendored
    llama.cpp in llama-cpp-python 0.3.36 (scripts/build_llamacpp.sh)."""
    import ctypes as C

    class ModelParams(C.Structure):
        _fields_ = [
            ("devices", C.c_void_p), ("tensor_buft_overrides", C.c_void_p), ("n_gpu_layers", C.c_int32),
            ("split_mode", C.c_int), ("load_mode", C.c_int), ("lazy_mode", C.c_int), ("main_gpu", C.c_int32),
            ("tensor_split", C.c_void_p), ("progress_callback", C.c_void_p), ("progress_callback_user_data", C.c_void_p),
            ("kv_overrides", C.c_void_p), ("vocab_only", C.c_bool), ("check_tensors", C.c_bool),
            ("use_extra_bufts", C.c_bool), ("no_host", C.c_bool), ("no_alloc", C.c_bool), ("load_mtp", C.c_bool),
        ]

    lib = C.CDLL(str(lib_path))
    lib.llama_backend_init()
    lib.llama_model_default_params.restype = ModelParams
    lib.llama_model_load_from_file.restype = C.c_void_p
    lib.llama_model_load_from_file.argtypes = [C.c_char_p, ModelParams]
    lib.llama_model_get_vocab.restype = C.c_void_p
    lib.llama_model_get_vocab.argtypes = [C.c_void_p]
    lib.llama_tokenize.restype = C.c_int32
    lib.llama_tokenize.argtypes = [C.c_void_p, C.c_char_p, C.c_int32, C.POINTER(C.c_int32), C.c_int32, C.c_bool, C.c_bool]
    params = lib.llama_model_default_params()
    params.vocab_only = True
    model = lib.llama_model_load_from_file(str(gguf).encode(), params)
    if not model:
        sys.exit(f"llamacpp_tokenize_ref: libllama could not load {gguf}")
    vocab = lib.llama_model_get_vocab(model)

    def tok(text: str) -> list[int]:
        b = text.encode("utf-8")
        n = len(b) + 2
        while True:
            buf = (C.c_int32 * n)()
            got = lib.llama_tokenize(vocab, b, len(b), buf, n, False, True)
            if got >= 0:
                return list(buf[:got])
            n = -got

    return tok, {"libllama": str(lib_path.resolve()), "llama_cpp_python_vendored": "0.3.36"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=default_gguf())
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "fixtures" / "reference" / "smollm2")
    ap.add_argument("--llama-tokenize", type=Path, help="llama.cpp's llama-tokenize binary (else llama-cpp-python)")
    ap.add_argument("--libllama", type=Path, help="llama.cpp's libllama.so, called through ctypes")
    args = ap.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"llamacpp_tokenize_ref: GGUF not found at {args.gguf} (run scripts/fetch_smollm2.sh)")

    hf_path = args.out / "tokenize.json"
    hf_ids = {}
    if hf_path.is_file():
        hf_ids = {c["text"]: c["ids"] for c in json.loads(hf_path.read_text(encoding="utf-8"))["cases"]}

    if args.libllama:
        tok, versions = libllama_tokenizer(args.libllama, args.gguf)
        how = "ids = llama_tokenize(vocab, text, add_special=false, parse_special=true) (libllama via ctypes, vocab_only)"
    elif args.llama_tokenize:
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
