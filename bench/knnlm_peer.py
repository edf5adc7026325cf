#!/usr/bin/python3
"""What a user would write instead of `mnemo eval ppl --datastore`: a kNN-LM scorer in PyTorch + FAISS.

A benchmark peer only (never part of the product). It runs on Debian's python3-torch and python3-faiss
(/usr/bin/python3, not a pyenv). It reads the same GPT-2 checkpoint (HF safetensors) and the same datastore
(keys.f16 + values.i32, put into a faiss.IndexFlatL2), scores the text with mnemo's windows (window
n_positions, stride window/2, the first window scores all its tokens) and interpolates like mnemo:
p = lambda * p_kNN + (1 - lambda) * p_LM, p_kNN = softmax(-squared L2 distance / T) over the k neighbours.
Token ids come from `mnemo tokenize`, before the clock starts.

Usage: bench/knnlm_peer.py --mnemo build/mnemo --model M --datastore DS --text-file T [--k 64]
       [--lambda 0.25] [--batch 1] [--threads N]
Prints one JSON line: tokens, perplexity (base and knn), seconds, tokens_per_second.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import time

import faiss
import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", f"{name}: {meta['dtype']} (the peer reads F32 checkpoints)"
        a, b = meta["data_offsets"]
        out[name.removeprefix("transformer.")] = torch.from_numpy(
            np.frombuffer(data[a:b], dtype=np.float32).reshape(meta["shape"]).copy())
    return out


class Gpt:
    """nanoGPT's forward on HF GPT-2 weights (Conv1D layout: x @ W + b)."""

    def __init__(self, model_dir):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.eps = self.cfg.get("layer_norm_epsilon", 1e-5)

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def lin(self, x, name):
        return torch.addmm(self.w[name + ".bias"], x.reshape(-1, x.shape[-1]), self.w[name + ".weight"]).view(
            *x.shape[:-1], -1)

    @torch.no_grad()
    def forward(self, idx):
        """Returns (log-probs [B, T, V], keys [B, T, C]): keys are the last block's ln_2 output."""
        w, c = self.w, self.cfg
        B, T = idx.shape
        nh, C = c["n_head"], c["n_embd"]
        x = w["wte.weight"][idx] + w["wpe.weight"][:T]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        key = None
        for i in range(c["n_layer"]):
            p = f"h.{i}."
            q, k, v = self.lin(self.ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
            q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // nh))
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            x = x + self.lin(y, p + "attn.c_proj")
            h = self.ln(x, p + "ln_2")
            if i == c["n_layer"] - 1:
                key = h
            x = x + self.lin(F.gelu(self.lin(h, p + "mlp.c_fc"), approximate="tanh"), p + "mlp.c_proj")
        logits = self.ln(x, "ln_f") @ w["wte.weight"].t()
        return logits.log_softmax(-1), key


def mnemo_token_ids(mnemo, model_dir, text_file):
    """The text's token ids from `mnemo tokenize` (so both sides score the same tokens)."""
    text = open(text_file, encoding="utf-8").read()
    tok = subprocess.run([mnemo, "tokenize", "--tokenizer", model_dir], input=json.dumps({"text": text}) + "\n",
                         capture_output=True, text=True, check=True)
    return json.loads(tok.stdout)["ids"]


def windows(n, window):
    """mnemo's plan: stride window/2, consecutive windows share a token, token 0 is never scored."""
    step, out, scored_until, begin = max(1, window // 2), [], 1, 0
    while scored_until < n:
        end = min(begin + window, n)
        out.append((begin, end, end - scored_until))
        scored_until, begin = end, begin + step
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnemo", default="build/mnemo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--datastore", required=True)
    ap.add_argument("--text-file", required=True)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--lambda", dest="lam", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=1, help="windows per forward pass and search call")
    ap.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: their defaults)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
        faiss.omp_set_num_threads(a.threads)

    ids = mnemo_token_ids(a.mnemo, a.model, a.text_file)
    model = Gpt(a.model)
    manifest = json.load(open(os.path.join(a.datastore, "manifest.json")))
    keys = np.fromfile(os.path.join(a.datastore, "keys.f16"), dtype=np.float16).astype(np.float32)
    keys = keys.reshape(-1, manifest["dim"])
    values = np.fromfile(os.path.join(a.datastore, "values.i32"), dtype=np.int32)
    index = faiss.IndexFlatL2(manifest["dim"])
    index.add(keys)

    plan = windows(len(ids), model.cfg["n_positions"])
    log1m_lam, log_lam = math.log1p(-a.lam), math.log(a.lam)
    nll_base = nll_knn = 0.0
    scored = 0
    start = time.perf_counter()
    first = 0
    while first < len(plan):  # batches of consecutive windows of equal length, like mnemo's scorer
        last = first + 1
        while last < len(plan) and last - first < a.batch and plan[last][1] - plan[last][0] == plan[first][1] - plan[first][0]:
            last += 1
        group, first = plan[first:last], last
        idx = torch.tensor([ids[b:e] for b, e, _ in group], dtype=torch.long)
        logp, key = model.forward(idx)
        qs, lps, targets = [], [], []
        for r, (b, e, n_scored) in enumerate(group):
            t0 = e - b - n_scored  # positions t0-1 .. T-2 predict tokens t0 .. T-1
            qs.append(key[r, t0 - 1:e - b - 1])
            lps.append(logp[r, t0 - 1:e - b - 1])
            targets.extend(ids[b + t0:e])
        q = torch.cat(qs).contiguous().numpy()
        lp = torch.cat(lps)
        tgt = torch.tensor(targets, dtype=torch.long)
        dist, nb = index.search(q, a.k)
        dist = torch.from_numpy(dist).double()
        w = torch.softmax(-dist, dim=1)
        hit = torch.from_numpy(values[nb]).long() == tgt[:, None]
        p_knn = (w * hit).sum(1)
        lp_lm = lp.gather(1, tgt[:, None]).squeeze(1).double()
        lp_mix = torch.logaddexp(log1m_lam + lp_lm, log_lam + p_knn.log())
        nll_base -= lp_lm.sum().item()
        nll_knn -= lp_mix.sum().item()
        scored += len(targets)
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": scored, "base_perplexity": math.exp(nll_base / scored),
                      "knn_perplexity": math.exp(nll_knn / scored), "k": a.k, "lambda": a.lam, "batch": a.batch,
                      "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
                      "seconds": seconds, "tokens_per_second": scored / seconds}))


if __name__ == "__main__":
    main()
