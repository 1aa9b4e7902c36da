"""Reference renderings of a multi-turn chat (system turn, earlier user/assistant turns, final
user turn) by transformers' `apply_chat_template`, committed as fixtures/chat-multiturn.json.

The Rust test `chat_conversation_renders_like_transformers` (crates/dno-cli/tests/datain.rs)
imports the same conversation with `dno prompts import` and checks `dno prompts render` against
these texts and token ids, for fixtures/tiny-qwen2 and for SmolLM2-135M-Instruct (its template
and tokenizer read from the GGUF by transformers).

Run with /work/venv-ref/bin/python (transformers, gguf):
    python scripts/make_chat_reference.py [DNO_MODELS]
"""

import json
import os
import sys

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DNO_MODELS", os.path.expanduser("~/.cache/dno/models"))
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSATIONS = [
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
        {"role": "user", "content": "And of Italy? Say \"Rome\" if you agree.\nThanks é你好"},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Count to three."},
    ],
]


def render(tok):
    out = []
    for msgs in CONVERSATIONS:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append({"text": text, "ids": ids})
    return out


def main():
    ref = {
        "producer": "scripts/make_chat_reference.py",
        "versions": {"transformers": transformers.__version__},
        "note": "apply_chat_template(messages, tokenize=False, add_generation_prompt=True); ids = tokenizer(text, add_special_tokens=False)",
        "conversations": CONVERSATIONS,
        "tiny-qwen2": render(AutoTokenizer.from_pretrained(os.path.join(ROOT, "fixtures", "tiny-qwen2"))),
        "smollm2": render(AutoTokenizer.from_pretrained(MODELS, gguf_file=SMOLLM2)),
    }
    path = os.path.join(ROOT, "fixtures", "chat-multiturn.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
