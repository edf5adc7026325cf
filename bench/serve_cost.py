#!/usr/bin/env python3
"""Per generated token cost of kNN-LM against the base LM through a running `mnemo serve`: ROUNDS rounds,
each one greedy completion of MAX_TOKENS per prompt with kNN on (the server's defaults) and one with kNN
off ("knn": {"enabled": false}), alternating, one request at a time. Prints one JSON line: median ms per
generated token for each, and their ratio. Prompts: the first words of GCIDE valid's entries.
Usage: serve_cost.py PORT VALID_TXT [ROUNDS=3] [MAX_TOKENS=64] [PROMPTS=16]   (bench/serve-default.sh)"""
import json, statistics, sys, time, urllib.request

port, valid = int(sys.argv[1]), sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
count = int(sys.argv[5]) if len(sys.argv) > 5 else 16
prompts = []
for line in open(valid, encoding="utf-8"):
    words = line.split()
    if len(words) >= 6 and len(prompts) < count:
        prompts.append(" ".join(words[:6]))

def complete(prompt, knn):
    body = {"model": "default", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if not knn:
        body["knn"] = {"enabled": False}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    a = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        usage = json.load(r)["usage"]
    return (time.perf_counter() - a) * 1000, usage["completion_tokens"]

per_token = {True: [], False: []}
for _ in range(rounds):
    for prompt in prompts:
        for knn in (True, False):
            ms, tokens = complete(prompt, knn)
            per_token[knn].append(ms / max(1, tokens))
on, off = statistics.median(per_token[True]), statistics.median(per_token[False])
print(json.dumps({"requests_each": len(per_token[True]), "max_tokens": max_tokens,
                  "knn_ms_per_token": on, "base_ms_per_token": off, "cost": on / off}))
