#!/usr/bin/python3
"""Writes a GPT-2-small-shaped checkpoint with random weights (124M parameters, HF layout: config.json,
model.safetensors, GPT-2's encoder.json + vocab.bpe) for speed benchmarks: the cost does not depend on the
weights. Needs Debian's python3-torch and ../shared/gpt2 (the GPT-2 vocabulary files beside the checkout).
Usage: bench/gpt2_small.py OUT_DIR [GPT2_VOCAB_DIR=../shared/gpt2]"""
import json, os, shutil, struct, sys

import torch

out = sys.argv[1]
vocab_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "gpt2")
V, P, C, L = 50257, 1024, 768, 12
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(1)
tensors = {"wte.weight": torch.randn(V, C, generator=g) * 0.02, "wpe.weight": torch.randn(P, C, generator=g) * 0.01,
           "ln_f.weight": torch.ones(C), "ln_f.bias": torch.zeros(C)}
for i in range(L):
    p = f"h.{i}."
    for name, shape in (("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)), ("mlp.c_fc", (C, 4 * C)),
                        ("mlp.c_proj", (4 * C, C))):
        tensors[p + name + ".weight"] = torch.randn(*shape, generator=g) * 0.02
        tensors[p + name + ".bias"] = torch.zeros(shape[1])
    for ln in ("ln_1", "ln_2"):
        tensors[p + ln + ".weight"], tensors[p + ln + ".bias"] = torch.ones(C), torch.zeros(C)
header, blobs, offset = {}, [], 0
for name, t in tensors.items():
    data = t.contiguous().numpy().astype("<f4").tobytes()
    header["transformer." + name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
raw = json.dumps(header).encode()
raw += b" " * (-len(raw) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw)
    for b in blobs:
        f.write(b)
json.dump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": P, "n_ctx": P,
           "n_embd": C, "n_layer": L, "n_head": 12, "n_inner": None, "layer_norm_epsilon": 1e-5,
           "activation_function": "gelu_new", "bos_token_id": 50256, "eos_token_id": 50256,
           "tie_word_embeddings": True}, open(os.path.join(out, "config.json"), "w"), indent=1)
for name in ("encoder.json", "vocab.bpe"):
    shutil.copy(os.path.join(vocab_dir, name), os.path.join(out, name))
print(out)
