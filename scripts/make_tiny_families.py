#!/usr/bin/env python3
"""Tiny random models of the other supported families, with transformers reference outputs.

Each fixture reuses the byte-level BPE tokenizer of fixtures/tiny-qwen2 (vocab 384; run
scripts/make_tiny_qwen2.py first) and holds, in reference.json, the full logits of a few fixed
token sequences and a greedy continuation, computed by transformers in float32.

  fixtures/tiny-qwen3/          Qwen3: q_norm/k_norm, explicit head_dim (16 != hidden/heads),
                                attention_bias read from the config (true here), tied embeddings.
  fixtures/tiny-qwen3.gguf      the same weights as GGUF (arch qwen3), some tensors Q8_0/Q5_0/Q5_1;
                                reference: transformers with the dequantised weights.
  fixtures/tiny-mistral-sw/     Mistral with sliding_window = 4 (sequences and the greedy run are
                                longer than the window, so the KV-cache path is covered too).
  fixtures/tiny-gemma3/         Gemma 3 text: four norms per block, (1 + w) norms, q/k norms,
                                √hidden embedding scale, GeLU-tanh, query_pre_attn_scalar = 24,
                                sliding (window 4, RoPE base 10000) and global (1e6) layers.
  fixtures/tiny-gemma3.gguf     a Gemma 3 written like llama.cpp's converter (norms stored + 1,
                                6 layers: sliding pattern 6), F16/Q8_0 tensors; reference:
                                transformers loading the GGUF.
  fixtures/tiny-llama3.gguf     Llama with Llama-3 rope scaling as llama.cpp writes it
                                (rope_freqs.weight); reference: the HF model with rope_scaling llama3.
  fixtures/tiny-phi3/           Phi-3: fused qkv_proj and gate_up_proj, sliding_window = 4 (every layer).
  fixtures/tiny-phi3.gguf       the same weights as a phi3 GGUF (attn_qkv, ffn_up = gate and up rows,
                                no sliding window); reference: the HF Phi-3 with sliding_window None.
  fixtures/gguf-quants.gguf     blocks of every supported quant type next to their dequantisation
                                by gguf.quants.dequantize (numpy); Q8_K by hand (gguf-py lacks it).

Usage: /work/venv-ref/bin/python scripts/make_tiny_families.py [--fixtures DIR] [--only NAME,...]
         (NAME: qwen3, mistral, gemma3, gemma3-gguf, llama3-gguf, phi3, quants; default all)
       /work/venv-ref/bin/python scripts/make_tiny_families.py --check-export DNO_BINARY
         (runs `dno export` on every fixture and reloads the result with transformers; DNO_BINARY
         may also be target/release/examples/export_hf from `cargo build --release -p dno-model --example export_hf`)
Deterministic: fixed seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_qwen2 import permute_for_gguf, randomize, write_json  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
SEQUENCES_TEXT = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x * 2\n# 12345 café",
]
GREEDY_PROMPT = "Direct Nash Optimization iterates"
GREEDY_NEW = 12


def tokenizer(fixtures: Path) -> Tokenizer:
    return Tokenizer.from_file(str(fixtures / "tiny-qwen2" / "tokenizer.json"))


def vocab_of(fixtures: Path) -> tuple[int, int, int]:
    """(vocab size, bos id, eos id) of the tiny-qwen2 tokenizer."""
    tok = tokenizer(fixtures)
    return tok.get_vocab_size(), tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")


@torch.no_grad()
def reference(model, fixtures: Path, producer: str, note: str) -> dict:
    """Logits of SEQUENCES_TEXT and a greedy continuation of GREEDY_PROMPT, checked against a
    step-by-step argmax of the full forward (so the reference does not rely on HF's cache)."""
    tok = tokenizer(fixtures)
    seqs = []
    for text in SEQUENCES_TEXT:
        ids = tok.encode(text, add_special_tokens=False).ids
        logits = model(torch.tensor([ids])).logits[0]
        seqs.append({"text": text, "ids": ids, "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()]})
    prompt = tok.encode(GREEDY_PROMPT, add_special_tokens=False).ids
    gen = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=GREEDY_NEW,
        min_new_tokens=GREEDY_NEW,
        eos_token_id=None,
        pad_token_id=0,
    )[0, len(prompt):].tolist()
    seq = list(prompt)
    for _ in range(GREEDY_NEW):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    if seq[len(prompt):] != gen:
        raise SystemExit(f"{producer}: HF generate {gen} != full-forward argmax {seq[len(prompt):]}")
    return {
        "producer": "scripts/make_tiny_families.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "note": "logits: full [seq_len, vocab] float32 logits (7 significant digits), ids from the tiny-qwen2 "
        "tokenizer with add_special_tokens=False. greedy: generate(do_sample=False) of "
        f"{GREEDY_NEW} tokens (no EOS stop), equal to a step-by-step argmax of the full forward. " + note,
        "sequences": seqs,
        "greedy": {"prompt_ids": prompt, "new_ids": gen},
    }


def save_hf(model, out_dir: Path, fixtures: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copy(fixtures / "tiny-qwen2" / f, out_dir / f)
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("transformers_version", None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def base_kwargs(fixtures: Path) -> dict:
    vocab, bos, eos = vocab_of(fixtures)
    return dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=bos, max_position_embeddings=256)


@torch.no_grad()
def hf_fixture(name: str, model_cls, cfg, fixtures: Path, seed: int, note: str):
    torch.manual_seed(0)
    model = model_cls(cfg).float().eval()
    randomize(model, seed=seed)
    model.generation_config = transformers.GenerationConfig(do_sample=False)
    out = fixtures / name
    save_hf(model, out, fixtures)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # what is stored
    write_json(out / "reference.json", reference(model, fixtures, name, note))
    return model


def tiny_qwen3(fixtures: Path):
    cfg = transformers.Qwen3Config(
        **base_kwargs(fixtures), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, attention_bias=True,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, dtype="float32",
    )
    return hf_fixture("tiny-qwen3", transformers.Qwen3ForCausalLM, cfg, fixtures, 3003, "Qwen3 with attention_bias=true.")


def tiny_mistral_sw(fixtures: Path):
    cfg = transformers.MistralConfig(
        **base_kwargs(fixtures), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, dtype="float32",
    )
    return hf_fixture("tiny-mistral-sw", transformers.MistralForCausalLM, cfg, fixtures, 4004,
                      "Mistral with sliding_window=4: each query sees itself and the 3 keys before it.")


def tiny_gemma3(fixtures: Path):
    cfg = transformers.Gemma3TextConfig(
        **base_kwargs(fixtures), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=4, sliding_window_pattern=2, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh", dtype="float32",
    )
    return hf_fixture("tiny-gemma3", transformers.Gemma3ForCausalLM, cfg, fixtures, 5005,
                      "Gemma 3: layers 0 and 2 sliding (window 4, RoPE base 1e4), 1 and 3 global (base 1e6).")


def tiny_phi3(fixtures: Path):
    cfg = transformers.Phi3Config(
        **base_kwargs(fixtures), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, original_max_position_embeddings=256, dtype="float32",
    )
    return hf_fixture("tiny-phi3", transformers.Phi3ForCausalLM, cfg, fixtures, 8008,
                      "Phi-3: fused qkv_proj (q heads, k heads, v heads) and gate_up_proj (gate rows, up rows); "
                      "sliding_window=4 on every layer.")


# ---------------------------------------------------------------- GGUF writers


def gguf_tokenizer(w, fixtures: Path) -> None:
    raw = json.loads((fixtures / "tiny-qwen2" / "tokenizer.json").read_text(encoding="utf-8"))
    vocab_map: dict[str, int] = dict(raw["model"]["vocab"])
    for added in raw.get("added_tokens", []):
        vocab_map[added["content"]] = added["id"]
    tokens = [""] * len(vocab_map)
    for t, i in vocab_map.items():
        tokens[i] = t
    specials = {a["content"] for a in raw.get("added_tokens", [])}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in raw["model"]["merges"]])
    w.add_bos_token_id(vocab_map["<|endoftext|>"])
    w.add_eos_token_id(vocab_map["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template((fixtures / "tiny-qwen2" / "chat_template.jinja").read_text(encoding="utf-8"))


GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_names(sd: dict, gemma: bool) -> dict[str, str]:
    layer = dict(GGUF_LAYER_NAMES)
    if gemma:
        layer.update({
            "post_attention_layernorm.weight": "post_attention_norm.weight",
            "pre_feedforward_layernorm.weight": "ffn_norm.weight",
            "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
        })
    else:
        layer["post_attention_layernorm.weight"] = "ffn_norm.weight"
    out = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    for name in sd:
        if name.startswith("model.layers."):
            i, tail = name[len("model.layers."):].split(".", 1)
            out[name] = f"blk.{i}.{layer[tail]}"
    return {k: v for k, v in out.items() if k in sd}


def write_tensors(w, sd: dict, names: dict[str, str], quant: dict[str, "gguf.GGMLQuantizationType"],
                  transform=lambda hf, gg, x: x) -> dict:
    """Writes every tensor (F32 unless listed in `quant`); returns the HF state dict of what a
    reader dequantises (for a reference that matches the stored weights)."""
    import gguf

    stored = {}
    for hf_name, gg_name in names.items():
        data = transform(hf_name, gg_name, sd[hf_name].numpy().astype(np.float32))
        qt = quant.get(gg_name)
        if qt is None:
            w.add_tensor(gg_name, np.ascontiguousarray(data))
            back = data
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(gg_name, np.ascontiguousarray(data.astype(np.float16)))
            back = data.astype(np.float16).astype(np.float32)
        else:
            q = gguf.quants.quantize(data, qt)
            w.add_tensor(gg_name, q, raw_dtype=qt)
            back = gguf.quants.dequantize(q, qt)
        stored[hf_name] = back
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def common_kv(w, cfg, n_vocab: int, head_dim: int) -> None:
    import gguf

    w.add_context_length(256)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)


@torch.no_grad()
def tiny_qwen3_gguf(fixtures: Path, hf_model) -> None:
    """The tiny-qwen3 weights as a qwen3 GGUF (llama.cpp does not permute Qwen q/k)."""
    import gguf

    path = fixtures / "tiny-qwen3.gguf"
    cfg = hf_model.config
    sd = hf_model.state_dict()
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_name("tiny-qwen3-test")
    common_kv(w, cfg, cfg.vocab_size, cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    gguf_tokenizer(w, fixtures)
    Q = gguf.GGMLQuantizationType
    quant = {"blk.0.ffn_up.weight": Q.Q5_0, "blk.1.ffn_gate.weight": Q.Q5_1, "blk.1.ffn_down.weight": Q.Q8_0,
             "blk.0.attn_v.weight": Q.Q4_0, "blk.1.attn_output.weight": Q.Q4_1}
    names = gguf_names(sd, gemma=False)
    names.pop("lm_head.weight", None)  # tied
    stored = write_tensors(w, sd, names, quant)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    model = transformers.Qwen3ForCausalLM(cfg).float().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items()}, strict=False)
    model.tie_weights()
    ref = reference(model, fixtures, "tiny-qwen3.gguf",
                    "Reference: transformers Qwen3 with the GGUF's dequantised weights (gguf.quants.dequantize).")
    ref["quantized_tensors"] = {k: v.name for k, v in quant.items()}
    write_json(path.with_name("tiny-qwen3.reference.json"), ref)


@torch.no_grad()
def tiny_gemma3_gguf(fixtures: Path) -> None:
    """A 6-layer Gemma 3 written like llama.cpp's converter: norms + 1, no q/k permutation,
    no sliding-window pattern key (llama.cpp's default: every 6th layer global)."""
    import gguf

    kw = base_kwargs(fixtures)
    head_dim = 16
    cfg = transformers.Gemma3TextConfig(
        **kw, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=4,
        rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, dtype="float32",
    )
    torch.manual_seed(0)
    hf = transformers.Gemma3ForCausalLM(cfg).float().eval()
    randomize(hf, seed=6006)
    # Smaller tied embeddings keep the logits near 10 (not 28), so f32 rounding stays well under 1e-4
    hf.model.embed_tokens.weight.mul_(0.4)
    sd = hf.state_dict()
    path = fixtures / "tiny-gemma3.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny-gemma3-test")
    common_kv(w, cfg, cfg.vocab_size, head_dim)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(4)
    gguf_tokenizer(w, fixtures)
    Q = gguf.GGMLQuantizationType
    quant = {"token_embd.weight": Q.F16, "blk.2.ffn_up.weight": Q.Q8_0, "blk.5.attn_q.weight": Q.Q5_0}
    names = gguf_names(sd, gemma=True)
    names.pop("lm_head.weight", None)
    # llama.cpp's Gemma converter stores every norm weight as 1 + w
    write_tensors(w, sd, names, quant, transform=lambda hf_n, gg_n, x: x + 1 if gg_n.endswith("norm.weight") else x)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    # Reference: transformers' own GGUF loader (it subtracts the 1 again). GGUF has no
    # query_pre_attn_scalar; llama.cpp scales by head_dim^-0.5 (all sizes but 27B), so pass that.
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, query_pre_attn_scalar=head_dim
    ).eval()
    lt = model.config.layer_types
    if lt != ["sliding_attention"] * 5 + ["full_attention"]:
        raise SystemExit(f"tiny-gemma3.gguf: transformers derived layer_types {lt}")
    ref = reference(model, fixtures, "tiny-gemma3.gguf",
                    "Reference: transformers loading the GGUF (AutoModelForCausalLM.from_pretrained(gguf_file=...), "
                    "query_pre_attn_scalar=head_dim as llama.cpp); norms stored as 1 + w like llama.cpp's converter.")
    ref["quantized_tensors"] = {k: v.name for k, v in quant.items()}
    write_json(path.with_name("tiny-gemma3.reference.json"), ref)


@torch.no_grad()
def tiny_phi3_gguf(fixtures: Path, hf_model) -> None:
    """The tiny-phi3 weights as llama.cpp's converter writes a phi3 GGUF: fused attn_qkv and
    ffn_up (gate rows then up rows), rotate-half RoPE (no q/k permutation), F16/Q8_0 tensors."""
    import gguf

    path = fixtures / "tiny-phi3.gguf"
    cfg = hf_model.config
    sd = hf_model.state_dict()
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_name("tiny-phi3-test")
    common_kv(w, cfg, cfg.vocab_size, head_dim)
    w.add_rope_freq_base(10000.0)
    gguf_tokenizer(w, fixtures)
    w.add_pad_token_id(cfg.pad_token_id)  # else transformers' Phi3Config pads with id 32000
    layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.qkv_proj.weight": "attn_qkv.weight", "self_attn.o_proj.weight": "attn_output.weight",
             "mlp.gate_up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for name in sd:
        if name.startswith("model.layers."):
            i, tail = name[len("model.layers."):].split(".", 1)
            names[name] = f"blk.{i}.{layer[tail]}"
    Q = gguf.GGMLQuantizationType
    quant = {"blk.0.attn_qkv.weight": Q.Q8_0, "blk.1.ffn_up.weight": Q.F16}
    stored = write_tensors(w, sd, names, quant)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    plain = transformers.Phi3Config(**{**cfg.to_dict(), "sliding_window": None})
    model = transformers.Phi3ForCausalLM(plain).float().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items()})
    ref = reference(model, fixtures, "tiny-phi3.gguf",
                    "Reference: transformers Phi3 (sliding_window None: the GGUF has no window) with the GGUF's "
                    "dequantised weights.")
    ref["quantized_tensors"] = {k: v.name for k, v in quant.items()}
    write_json(path.with_name("tiny-phi3.reference.json"), ref)


def llama3_rope_factors(theta: float, dim: int, rs: dict) -> list[float]:
    """llama.cpp convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors): rope_freqs.weight."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    out = []
    for f in freqs.tolist():
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return out


@torch.no_grad()
def tiny_llama3_gguf(fixtures: Path) -> None:
    import gguf

    rs = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 128}
    cfg = transformers.LlamaConfig(
        **base_kwargs(fixtures), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_theta": 10000.0, **rs}, dtype="float32",
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).float().eval()
    randomize(hf, seed=7007)
    sd = hf.state_dict()
    head_dim = 32
    factors = llama3_rope_factors(10000.0, head_dim, rs)
    if not any(1.0 < f < rs["factor"] for f in factors):
        raise SystemExit("tiny-llama3: no blended RoPE frequency")
    path = fixtures / "tiny-llama3.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama3-test")
    common_kv(w, cfg, cfg.vocab_size, head_dim)
    w.add_rope_freq_base(10000.0)
    gguf_tokenizer(w, fixtures)
    w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    names = gguf_names(sd, gemma=False)
    names.pop("lm_head.weight", None)

    def permute(hf_n, gg_n, x):
        if gg_n.endswith("attn_q.weight"):
            return permute_for_gguf(x, cfg.num_attention_heads)
        if gg_n.endswith("attn_k.weight"):
            return permute_for_gguf(x, cfg.num_key_value_heads)
        return x

    write_tensors(w, sd, names, {}, transform=permute)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    ref = reference(hf, fixtures, "tiny-llama3.gguf",
                    "Reference: the HF LlamaForCausalLM with rope_scaling llama3 (factor 4, low 1, high 4, "
                    "original_max_position_embeddings 128) whose weights the GGUF holds; the GGUF carries the "
                    "scaling as llama.cpp's rope_freqs.weight. (transformers' GGUF loader ignores rope_freqs.)")
    ref["rope_scaling"] = rs
    ref["rope_freqs"] = factors
    write_json(path.with_name("tiny-llama3.reference.json"), ref)


def quant_fixture(fixtures: Path) -> None:
    """Two blocks of every supported quant type, each followed by its F32 dequantisation."""
    import gguf

    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(1515)
    path = fixtures / "gguf-quants.gguf"
    w = gguf.GGUFWriter(str(path), "none")
    for qt in [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K]:
        block, type_size = gguf.GGML_QUANT_SIZES[qt]
        n = 2 * 256
        try:
            q = gguf.quants.quantize(rng.normal(0, 1, (2, 256)).astype(np.float32), qt)
            how = "quantize"
        except (NotImplementedError, gguf.quants.QuantError):
            # random blocks; the f16/f32 scales are set to sane finite values
            q = rng.integers(0, 256, (2, 256 // block * type_size), dtype=np.uint8)
            blocks = q.reshape(-1, type_size)
            scale_offsets = {Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
            for off in scale_offsets.get(qt, []):
                blocks[:, off:off + 2] = np.frombuffer(
                    rng.uniform(0.01, 0.1, len(blocks)).astype(np.float16).tobytes(), np.uint8).reshape(-1, 2)
            if qt == Q.Q8_K:
                blocks[:, 0:4] = np.frombuffer(rng.uniform(0.01, 0.1, len(blocks)).astype(np.float32).tobytes(),
                                               np.uint8).reshape(-1, 4)
            how = "random blocks"
        if qt == Q.Q8_K:  # not in gguf-py: d (f32) * int8, bsums ignored
            blocks = q.reshape(-1, type_size)
            d = blocks[:, 0:4].copy().view(np.float32)
            deq = (d * blocks[:, 4:260].copy().view(np.int8).astype(np.float32)).reshape(2, 256)
        else:
            deq = gguf.quants.dequantize(q, qt)
        assert deq.shape == (2, 256) and np.isfinite(deq).all(), qt.name
        w.add_tensor(qt.name, q, raw_dtype=qt)
        w.add_tensor(qt.name + ".ref", np.ascontiguousarray(deq.astype(np.float32)))
        print(f"  {qt.name}: {how}, {n} values")
    # one type this runtime refuses, to test the error names it
    q = gguf.quants.quantize(rng.normal(0, 1, (1, 256)).astype(np.float32), Q.TQ2_0) if hasattr(Q, "TQ2_0") else None
    if q is not None:
        w.add_tensor("TQ2_0", q, raw_dtype=Q.TQ2_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


# ---------------------------------------------------------------- export check


@torch.no_grad()
def check_export(dno: Path, fixtures: Path) -> None:
    """`dno export` of every fixture, reloaded by transformers: logits must match the reference."""
    for name in ["tiny-qwen3", "tiny-qwen3.gguf", "tiny-mistral-sw", "tiny-gemma3", "tiny-gemma3.gguf", "tiny-llama3.gguf",
                 "tiny-phi3", "tiny-phi3.gguf"]:
        ref_path = fixtures / name / "reference.json" if not name.endswith(".gguf") else fixtures / name.replace(".gguf", ".reference.json")
        ref = json.loads(ref_path.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            # the `dno` binary, or dno-model's `export_hf` example (same save_hf)
            if dno.name.startswith("export_hf"):
                cmd = [str(dno), str(fixtures / name), str(out)]
            else:
                cmd = [str(dno), "export", "--model", str(fixtures / name), "--out", str(out)]
            subprocess.run(cmd, check=True)
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            worst = 0.0
            for s in ref["sequences"]:
                got = model(torch.tensor([s["ids"]])).logits[0]
                worst = max(worst, float((got - torch.tensor(s["logits"])).abs().max()))
            arch = json.loads((out / "config.json").read_text())["architectures"]
            print(f"{name}: dno export -> transformers ({arch[0]}): max |dlogit| vs reference = {worst:.2e}")
            if worst > 1e-4:
                raise SystemExit(f"{name}: exported model differs from the reference by {worst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=REPO_ROOT / "fixtures")
    ap.add_argument("--check-export", type=Path, metavar="DNO_BINARY")
    ap.add_argument("--only", default="qwen3,mistral,gemma3,gemma3-gguf,llama3-gguf,phi3,quants")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.check_export:
        check_export(args.check_export, args.fixtures)
        return
    only = set(args.only.split(","))
    if "qwen3" in only:
        qwen3 = tiny_qwen3(args.fixtures)
        tiny_qwen3_gguf(args.fixtures, qwen3)
    if "mistral" in only:
        tiny_mistral_sw(args.fixtures)
    if "gemma3" in only:
        tiny_gemma3(args.fixtures)
    if "gemma3-gguf" in only:
        tiny_gemma3_gguf(args.fixtures)
    if "llama3-gguf" in only:
        tiny_llama3_gguf(args.fixtures)
    if "phi3" in only:
        phi3 = tiny_phi3(args.fixtures)
        tiny_phi3_gguf(args.fixtures, phi3)
    if "quants" in only:
        quant_fixture(args.fixtures)


if __name__ == "__main__":
    main()
