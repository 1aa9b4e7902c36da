#!/usr/bin/env python3
"""Reference token sequences for `dno train`'s response encoding, from transformers.

For three chat-template families it writes the exact token ids transformers'
`apply_chat_template` gives for a prompt (with the generation prompt) and for the full
conversation (prompt + assistant response). `crates/dno-model/tests/turn_end.rs` checks that
`dno_model::chat::encode_for_training` (what `dno train` calls) produces the same sequences:
an ended response is followed by the template's end-of-turn text, a truncated one is not.

* chatml: SmolLM2-135M-Instruct's tokenizer and template, read from its GGUF
  (transformers `gguf_file=`; $DNO_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf).
* qwen2: fixtures/tiny-qwen2 (a Qwen2 byte-level BPE with a ChatML template).
* llama3: fixtures/tiny-llama3-tokenizer, built here: a tiny byte-level BPE with Llama 3's split
  regex and special tokens, EOS `<|end_of_text|>` (as Meta-Llama-3-8B-Instruct first shipped),
  and a Llama-3.1-style template that ends turns with `<|eot_id|>` and prints today's date
  with `strftime_now`. transformers' clock is pinned to NOW so the date is reproducible.

Usage: /work/venv-ref/bin/python scripts/make_eot_reference.py [--fixtures DIR]
Writes DIR/tiny-llama3-tokenizer/ and DIR/eot/reference.json (deterministic).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path

import transformers
import transformers.utils.chat_template_utils as ctu
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2024, 7, 26, 9, 30, 0)  # what strftime_now returns (naive local time)

LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
LLAMA3_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024.",
    "You are a helpful assistant. What is the capital of France? Paris is the capital.",
    "Write a haiku about autumn leaves falling in the wind.",
    "system user assistant 12345 67890",
] * 4

# (messages, response, ended). Responses have no surrounding whitespace: the Llama 3 template
# trims message content, while dno trains on the response text as sampled.
CASES = [
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the capital of France?"}], "Paris.", True),
    ([{"role": "user", "content": "Write a haiku about autumn."}], "Leaves fall in the wind,\nred and gold", True),
    ([{"role": "user", "content": "Count to five."}], "one, two, three, fo", False),
]


class FixedClock(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def build_llama3(out: Path) -> None:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=LLAMA3_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(LLAMA3_CORPUS, trainer=trainer)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": LLAMA3_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def load(family: str, fixtures: Path):
    if family == "chatml":
        gguf = Path(os.environ.get("DNO_MODELS", "/root/.cache/dno/models")) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        d = tempfile.mkdtemp()
        os.symlink(gguf, Path(d) / gguf.name)
        return AutoTokenizer.from_pretrained(d, gguf_file=gguf.name), f"$DNO_MODELS/{gguf.name}"
    if family == "qwen2":
        return AutoTokenizer.from_pretrained(fixtures / "tiny-qwen2"), "fixtures/tiny-qwen2"
    d = fixtures / "tiny-llama3-tokenizer"
    return PreTrainedTokenizerFast(
        tokenizer_file=str(d / "tokenizer.json"), bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    ), "fixtures/tiny-llama3-tokenizer"


def ids(tok, messages, **kw):
    out = tok.apply_chat_template(messages, tokenize=True, **kw)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", type=Path, default=REPO_ROOT / "fixtures")
    a = ap.parse_args()
    ctu.datetime = FixedClock  # transformers' strftime_now reads datetime.now()
    build_llama3(a.fixtures / "tiny-llama3-tokenizer")
    families = {}
    for family in ["chatml", "qwen2", "llama3"]:
        tok, source = load(family, a.fixtures)
        if family == "llama3":
            tok.chat_template = LLAMA3_TEMPLATE
        cases = []
        for messages, response, ended in CASES:
            prompt = ids(tok, messages, add_generation_prompt=True)
            if ended:
                full = ids(tok, messages + [{"role": "assistant", "content": response}])
            else:
                full = prompt + tok(response, add_special_tokens=False)["input_ids"]
            assert full[: len(prompt)] == prompt, (family, messages)
            cases.append({"messages": messages, "response": response, "ended": ended, "prompt_ids": prompt, "full_ids": full,
                          "full_text": tok.decode(full)})
        eot = {"chatml": "<|im_end|>", "qwen2": "<|im_end|>", "llama3": "<|eot_id|>"}[family]
        families[family] = {"source": source, "eos_token": tok.eos_token, "end_of_turn_token": eot,
                            "end_of_turn_id": tok.convert_tokens_to_ids(eot), "cases": cases}
    out = a.fixtures / "eot" / "reference.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"generator": f"scripts/make_eot_reference.py, transformers {transformers.__version__}",
           "strftime_now": NOW.isoformat(), "families": families}
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
