#!/usr/bin/env python3
"""Build tiny random test models and their reference outputs with HF transformers.

1. fixtures/tiny-qwen2/: a tiny random Qwen2 (hidden 64, 2 layers, 4 heads / 2 kv heads,
   q/k/v biases, untied lm_head) saved as an HF directory, with a tiny byte-level BPE
   tokenizer trained here with the `tokenizers` package and a ChatML chat template;
   reference.json holds the full logits (every position) for 3 fixed token sequences,
   tokenizer cases, a chat-template rendering and a greedy continuation.
2. fixtures/tiny-llama.gguf (+ fixtures/tiny-llama.reference.json): a tiny random Llama written
   with the `gguf` package (F32 tensors plus one Q8_0 tensor, Q/K permuted like llama.cpp's
   converter does), and reference logits from transformers loading that GGUF.

Usage: /work/venv-ref/bin/python scripts/make_tiny_qwen2.py [--fixtures DIR]
Deterministic: fixed seeds, fixed training corpus.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_corpus  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Direct Nash Optimization iterates sampling, annotating, pairing and training.",
    "A preference oracle compares two responses and returns the probability that one wins.",
    "def f(x):\n    return x * 2\n",
    "fn main() { println!(\"hello\"); }",
    "Hello world! Hello again, world. 12345 67890",
    "you are a helpful assistant. what is the capital of france? paris.",
    "café naïve 你好 世界 😀",
] * 4


def build_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    # Same pipeline as a published Qwen2 tokenizer.json: NFC, the Qwen2 split regex (single digits),
    # then byte-level without its own regex. transformers' Qwen2Tokenizer imposes exactly this
    # pipeline when it loads a qwen2 directory, so the `tokenizers` library and transformers agree.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT, trainer=trainer)
    return tok


def write_json(path: Path, obj, indent: int | None = None) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


def randomize(model: torch.nn.Module, seed: int, std: float = 0.08) -> None:
    """Deterministic non-trivial weights: N(0, std) everywhere, norms 1 + N(0, 0.1),
    biases N(0, 0.1) (HF's own init would leave biases at 0 and norms at 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def classic_hf_layout(out_dir: Path) -> None:
    """Make the files look like a typical Qwen2 hub checkpoint, whatever transformers version wrote them.

    transformers >= 5 writes `rope_parameters` instead of a top-level `rope_theta`, stores the chat
    template only in chat_template.jinja and names the tokenizer class `TokenizersBackend`. Loaders
    written against published Qwen2 checkpoints expect `rope_theta`/`torch_dtype` in config.json and
    `chat_template` in tokenizer_config.json, so add those keys (transformers still loads the result).
    """
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    rope = cfg.get("rope_parameters") or {}
    cfg.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    cfg.setdefault("torch_dtype", cfg.get("dtype", "float32"))
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    tc_path = out_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc["chat_template"] = CHAT_TEMPLATE
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc.setdefault("additional_special_tokens", ["<|im_start|>", "<|im_end|>"])
    tc.setdefault("add_bos_token", False)
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


SEQUENCES_TEXT = [
    "Hello world!",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x * 2\n# 12345 café 😀",
]


@torch.no_grad()
def tiny_qwen2(out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    raw_tok = build_tokenizer(vocab_size=384)
    vocab = raw_tok.get_vocab_size()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=raw_tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out_dir)

    cfg = transformers.Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        hidden_act="silu",
        bos_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).float().eval()
    randomize(model, seed=1234)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    classic_hf_layout(out_dir)

    # Reload from disk so the reference reflects exactly what is stored.
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out_dir)
    seqs = []
    for text in SEQUENCES_TEXT:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0]
        seqs.append(
            {
                "text": text,
                "ids": ids,
                "logits_shape": list(logits.shape),
                "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
            }
        )
    chat_msgs = [{"role": "user", "content": "Hello world!"}]
    chat_text = tok.apply_chat_template(chat_msgs, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(chat_text, add_special_tokens=False)["input_ids"]
    gen = model.generate(
        torch.tensor([chat_ids]),
        attention_mask=torch.ones(1, len(chat_ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=16,
    )[0, len(chat_ids) :].tolist()
    tok_cases = [
        {"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]}
        for s in ref_corpus.corpus()[:60]
    ]
    # The stored tokenizer.json must give the same ids through the plain `tokenizers` library
    # (what a Rust loader uses) as through transformers' AutoTokenizer.
    plain = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    for s in ref_corpus.corpus():
        a = plain.encode(s, add_special_tokens=False).ids
        b = tok(s, add_special_tokens=False)["input_ids"]
        if a != b:
            raise SystemExit(f"make_tiny_qwen2: tokenizers vs transformers disagree on {s!r}: {a} vs {b}")
    write_json(
        out_dir / "reference.json",
        {
            "producer": "scripts/make_tiny_qwen2.py",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "note": "logits: full [seq_len, vocab] float32 logits (7 significant digits) of one forward pass per sequence, no BOS. "
            "Tokenizer ids use add_special_tokens=False. greedy: generate(do_sample=False, "
            "max_new_tokens=16) from the chat prompt (stops at eos_token_id if produced).",
            "vocab_size": vocab,
            "sequences": seqs,
            "chat": {"messages": chat_msgs, "text": chat_text, "ids": chat_ids, "greedy_new_ids": gen},
            "tokenize": tok_cases,
        },
    )


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF (rotate-half) -> llama.cpp (interleaved) layout for q/k projection rows."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@torch.no_grad()
def tiny_llama_gguf(gguf_path: Path, qwen_dir: Path) -> None:
    import gguf

    tok = AutoTokenizer.from_pretrained(qwen_dir)
    raw = json.loads((qwen_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab_map: dict[str, int] = dict(raw["model"]["vocab"])
    for added in raw.get("added_tokens", []):
        vocab_map[added["content"]] = added["id"]
    n_vocab = len(vocab_map)
    tokens = [""] * n_vocab
    for t, i in vocab_map.items():
        tokens[i] = t
    special = set(SPECIALS)
    token_types = [3 if t in special else 1 for t in tokens]  # 3 = CONTROL, 1 = NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["model"]["merges"]]

    hidden, n_layer, n_head, n_kv, ff = 64, 2, 4, 2, 128
    cfg = transformers.LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=ff,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv,
        max_position_embeddings=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).float().eval()
    randomize(hf, seed=4321)
    sd = {k: v.numpy().astype(np.float32) for k, v in hf.state_dict().items()}

    w = gguf.GGUFWriter(str(gguf_path), "llama")
    w.add_name("tiny-llama-test")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab_map["<|endoftext|>"])
    w.add_eos_token_id(vocab_map["<|im_end|>"])
    w.add_pad_token_id(vocab_map["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    q8_tensor = "blk.1.ffn_down.weight"
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for i in range(n_layer):
        for hf_suffix, gg_suffix in per_layer.items():
            names[f"model.layers.{i}.{hf_suffix}"] = f"blk.{i}.{gg_suffix}"
    for hf_name, gg_name in names.items():
        data = sd[hf_name]
        if gg_name.endswith("attn_q.weight"):
            data = permute_for_gguf(data, n_head)
        elif gg_name.endswith("attn_k.weight"):
            data = permute_for_gguf(data, n_kv)
        if gg_name == q8_tensor:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gg_name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gg_name, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {gguf_path} ({gguf_path.stat().st_size / 1024:.1f} KiB)")

    # Reference: transformers loading the GGUF (dequantizes Q8_0, un-permutes q/k).
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()
    seqs = []
    for text in SEQUENCES_TEXT:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0]
        # sanity: the in-memory HF model (unquantized) should be close
        logits_f32 = hf(torch.tensor([ids])).logits[0]
        seqs.append(
            {
                "text": text,
                "ids": ids,
                "logits_shape": list(logits.shape),
                "max_abs_diff_vs_unquantized_f32_model": float((logits - logits_f32).abs().max()),
                "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
            }
        )
    ref_path = gguf_path.with_name(gguf_path.stem + ".reference.json")
    write_json(
        ref_path,
        {
            "producer": "scripts/make_tiny_qwen2.py",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "gguf": gguf_path.name,
            "q8_0_tensors": [q8_tensor],
            "note": "logits: full [seq_len, vocab] float32 logits (7 significant digits) from transformers loading the GGUF "
            "(AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)); ids from the tiny-qwen2 "
            "tokenizer (same vocab/merges as the GGUF, tokenizer.ggml.pre='qwen2'), add_special_tokens=False. "
            "Note: transformers' own GGUF->tokenizer conversion ignores tokenizer.ggml.pre (plain GPT-2 "
            "byte-level regex), so it would split digit runs differently from these ids.",
            "vocab_size": n_vocab,
            "sequences": seqs,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=REPO_ROOT / "fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    qwen_dir = args.fixtures / "tiny-qwen2"
    tiny_qwen2(qwen_dir)
    tiny_llama_gguf(args.fixtures / "tiny-llama.gguf", qwen_dir)


if __name__ == "__main__":
    main()
