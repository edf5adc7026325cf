#!/usr/bin/python3
"""What a user would write instead of `mnemo eval ppl` (no datastore): nanoGPT's forward in PyTorch over the
same checkpoint and mnemo's windows (bench/knnlm_peer.py's model and window plan), one window per forward
pass. Also times PyTorch's sgemm on this machine at a GPT-2 layer's shape, so a run can state what the
linear layers' FLOPs allow. A benchmark peer only; Debian's python3-torch (/usr/bin/python3).
Usage: bench/lm_peer.py --model M --text-file T [--mnemo build/mnemo] [--threads N] [--batch 1]
Prints one JSON line."""
import argparse, json, math, os, sys, time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from knnlm_peer import Gpt, mnemo_token_ids, windows  # noqa: E402


def sgemm_gflops(n=1024, c=768):
    """GFLOP/s of x[n, c] @ w[c, 4c] (a GPT-2 MLP product), best of 5 after a warm-up."""
    x, w = torch.randn(n, c), torch.randn(c, 4 * c)
    x @ w
    best = float("inf")
    for _ in range(5):
        a = time.perf_counter()
        for _ in range(10):
            x @ w
        best = min(best, (time.perf_counter() - a) / 10)
    return 2 * n * c * 4 * c / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnemo", default="build/mnemo")
    ap.add_argument("--model", required=True)
    ap.add_argument("--text-file", required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    ap.add_argument("--batch", type=int, default=1, help="windows per forward pass")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ids = mnemo_token_ids(a.mnemo, a.model, a.text_file)
    model = Gpt(a.model)
    plan = windows(len(ids), model.cfg["n_positions"])
    nll, scored = 0.0, 0
    start = time.perf_counter()
    first = 0
    while first < len(plan):
        last = first + 1
        while last < len(plan) and last - first < a.batch and plan[last][1] - plan[last][0] == plan[first][1] - plan[first][0]:
            last += 1
        group, first = plan[first:last], last
        logp, _ = model.forward(torch.tensor([ids[b:e] for b, e, _ in group], dtype=torch.long))
        for r, (b, e, n_scored) in enumerate(group):
            t0 = e - b - n_scored
            tgt = torch.tensor(ids[b + t0:e], dtype=torch.long)
            nll -= logp[r, t0 - 1:e - b - 1].gather(1, tgt[:, None]).sum().item()
            scored += len(tgt)
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": scored, "perplexity": math.exp(nll / scored), "seconds": seconds,
                      "tokens_per_second": scored / seconds, "torch_threads": torch.get_num_threads(),
                      "sgemm_gflops": sgemm_gflops()}))


if __name__ == "__main__":
    main()
