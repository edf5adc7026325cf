#!/usr/bin/python3
"""What a user would write instead of `mnemo generate` (no datastore): greedy decoding in PyTorch on the same
checkpoint and prompt ids, two ways: nanoGPT's generate (the whole context through the model at every step)
and incremental decoding with a key/value cache (what Hugging Face's generate does). The model is
bench/knnlm_peer.py's nanoGPT forward. A benchmark peer only; Debian's python3-torch (/usr/bin/python3).
Usage: bench/generate_peer.py --model M --prompt TEXT [--max-tokens 128] [--mnemo build/mnemo] [--threads N]
Prints one JSON line: ms per generated token for each way, and the generated ids (the same for both)."""
import argparse, json, math, os, subprocess, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from knnlm_peer import Gpt  # noqa: E402


class CachedGpt(Gpt):
    """nanoGPT's blocks, one new position at a time over cached keys and values."""

    @torch.no_grad()
    def step(self, ids, cache):
        """Log-probs of the next token after `ids` (new positions only), appending their k/v to `cache`."""
        w, c = self.w, self.cfg
        T = len(ids)
        past = 0 if not cache else cache[0][0].shape[2]
        nh, C = c["n_head"], c["n_embd"]
        idx = torch.tensor([ids], dtype=torch.long)
        x = w["wte.weight"][idx] + w["wpe.weight"][past:past + T]
        for i in range(c["n_layer"]):
            p = f"h.{i}."
            q, k, v = self.lin(self.ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=2)
            q, k, v = (t.view(1, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
            if len(cache) > i:
                k = torch.cat([cache[i][0], k], dim=2)
                v = torch.cat([cache[i][1], v], dim=2)
                cache[i] = (k, v)
            else:
                cache.append((k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // nh))
            mask = torch.ones(T, past + T, dtype=torch.bool).tril(diagonal=past)
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(1, T, C)
            x = x + self.lin(y, p + "attn.c_proj")
            h = self.ln(x, p + "ln_2")
            x = x + self.lin(F.gelu(self.lin(h, p + "mlp.c_fc"), approximate="tanh"), p + "mlp.c_proj")
        return (self.ln(x[:, -1], "ln_f") @ w["wte.weight"].t()).log_softmax(-1)[0]


def prompt_ids(mnemo, model_dir, prompt):
    tok = subprocess.run([mnemo, "tokenize", "--tokenizer", model_dir], input=json.dumps({"text": prompt}) + "\n",
                         capture_output=True, text=True, check=True)
    return json.loads(tok.stdout)["ids"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnemo", default="build/mnemo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ids = prompt_ids(a.mnemo, a.model, a.prompt)
    model = CachedGpt(a.model)
    n_ctx = model.cfg["n_positions"]

    out_full, seq = [], list(ids)
    start = time.perf_counter()
    for _ in range(a.max_tokens):
        logp, _ = model.forward(torch.tensor([seq[-n_ctx:]], dtype=torch.long))
        seq.append(int(logp[0, -1].argmax()))
        out_full.append(seq[-1])
    full_ms = (time.perf_counter() - start) * 1000 / a.max_tokens

    out_cached, cache = [], []
    start = time.perf_counter()
    logp = model.step(ids, cache)
    for i in range(a.max_tokens):
        token = int(logp.argmax())
        out_cached.append(token)
        if i + 1 < a.max_tokens:
            logp = model.step([token], cache)
    cached_ms = (time.perf_counter() - start) * 1000 / a.max_tokens
    print(json.dumps({"prompt_tokens": len(ids), "generated": a.max_tokens, "ms_per_token_full": full_ms,
                      "ms_per_token_cached": cached_ms, "ids_full": out_full, "ids_cached": out_cached,
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
