#!/usr/bin/env python3
"""RetoMaton pointers in generation, through a running `mnemo serve` (bench/generate-pointers.sh): greedy
completions of MAX_TOKENS (ignore_eos) from the first six words of PROMPTS entries of each text, with the
base LM, kNN-LM searching every position, and kNN-LM following pointers ("knn": {"pointers": N}),
interleaved per prompt, ROUNDS rounds, one request at a time. Prints one markdown row per text and setting:
median ms per generated token, the searched fraction (the response's knn.searched / knn.queries), and how
much of each completion equals the one that searched every position (whole completions, and the mean
length of the common start).
Usage: generate_pointers.py PORT TEXT... [--rounds 3] [--max-tokens 64] [--prompts 16] [--pointers 1,2,4]"""
import argparse, json, statistics, time, urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("texts", nargs="+")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--max-tokens", type=int, default=64)
parser.add_argument("--prompts", type=int, default=16)
parser.add_argument("--pointers", default="1,2,4")
args = parser.parse_args()
settings = [("base LM", None), ("kNN-LM, search every position", 0)] + [
    (f"kNN-LM, pointers {p}", int(p)) for p in args.pointers.split(",")]


def complete(prompt, pointers):
    body = {"model": "default", "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0,
            "ignore_eos": True}
    body["knn"] = {"enabled": False} if pointers is None else {"pointers": pointers}
    request = urllib.request.Request(f"http://127.0.0.1:{args.port}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        response = json.load(r)
    ms = (time.perf_counter() - start) * 1000
    knn = response.get("knn", {"queries": 0, "searched": 0})
    return ms / max(1, response["usage"]["completion_tokens"]), knn, response["choices"][0]["text"]


print("| text | setting | ms/token | searched | completions equal to searching | mean common start (chars) |")
print("|---|---|---|---|---|---|")
for path in args.texts:
    prompts = []
    for line in open(path, encoding="utf-8"):
        words = line.split()
        if len(words) >= 6 and len(prompts) < args.prompts:
            prompts.append(" ".join(words[:6]))
    ms = {name: [] for name, _ in settings}
    queries = {name: 0 for name, _ in settings}
    searched = {name: 0 for name, _ in settings}
    texts = {name: {} for name, _ in settings}
    for _ in range(args.rounds):
        for i, prompt in enumerate(prompts):
            for name, pointers in settings:
                per_token, knn, text = complete(prompt, pointers)
                ms[name].append(per_token)
                queries[name] += knn["queries"]
                searched[name] += knn["searched"]
                texts[name][i] = text
    reference = texts["kNN-LM, search every position"]
    for name, pointers in settings:
        equal = sum(texts[name][i] == reference[i] for i in reference)
        common = []
        for i in reference:
            a, b = texts[name][i], reference[i]
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            common.append(n)
        fraction = f"{100 * searched[name] / queries[name]:.1f}%" if queries[name] else "-"
        print(f"| {'/'.join(path.split('/')[-2:])} | {name} | {statistics.median(ms[name]):.3f} | {fraction} | "
              f"{equal} of {len(reference)} | {statistics.mean(common):.0f} |", flush=True)
