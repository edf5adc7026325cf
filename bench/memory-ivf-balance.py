#!/usr/bin/env python3
"""How the memory index splits a real memory into inverted lists (docs/PERFORMANCE.md, "Memories over HTTP").

Reads the keys of every document of a state's memories.db (fp32 [heads, n, head_dim] blobs, in document order),
takes the first N tokens as the memory and 300 keys from after them as stand-in queries (the layer's real
queries are not stored; a key is scored against the others by inner product, as queries are), and for each
memory index given reports per head: non-empty lists, the largest list, the keys a query scans (its nprobe
lists ranked by inner product with the centroids) and recall@k against exact search. The keys are assigned
to lists by L2 (KvRing::Assign) or, with --ip NAME, by inner product (the assignment before the change).

Needs python3-numpy (benchmarks only). Usage:
  bench/memory-ivf-balance.py STATE/memories.db [--tokens 67582] [--k 32] [--nprobe 8] \
      --index new=MODEL/memory_index.safetensors [--index old=OLD.safetensors --ip old]
Make the state with `mnemo init` + `mnemo memory create` + `mnemo memory read --documents TEST.jsonl`.
"""
import argparse, json, sqlite3, struct

import numpy as np


def centroids(path):
    raw = open(path, "rb").read()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    begin, end = header["centroids"]["data_offsets"]
    return np.frombuffer(raw[8 + size + begin:8 + size + end], dtype="<f4").reshape(header["centroids"]["shape"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--tokens", type=int, default=67582)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--index", action="append", required=True, help="NAME=PATH of a memory_index.safetensors")
    ap.add_argument("--ip", action="append", default=[], help="NAME of an index whose keys go by inner product")
    a = ap.parse_args()
    indexes = [(spec.split("=", 1)[0], centroids(spec.split("=", 1)[1])) for spec in a.index]
    heads, dim = indexes[0][1].shape[0], indexes[0][1].shape[2]
    per_head = [[] for _ in range(heads)]
    for n, blob in sqlite3.connect(a.db).execute("SELECT num_tokens, keys FROM documents ORDER BY id"):
        k = np.frombuffer(blob, dtype="<f4").reshape(heads, n, dim)
        for h in range(heads):
            per_head[h].append(k[h])
    keys = [np.concatenate(k) for k in per_head]
    total = keys[0].shape[0]
    if total < a.tokens + a.queries:
        raise SystemExit(f"the memories hold {total} tokens; need {a.tokens} + {a.queries}")
    rng = np.random.default_rng(0)
    picked = rng.choice(np.arange(a.tokens, total), a.queries, replace=False)
    out = {"tokens": a.tokens, "queries": a.queries, "k": a.k, "nprobe": a.nprobe, "heads": []}
    for h in range(heads):
        memory, queries = keys[h][:a.tokens], keys[h][picked]
        scores = queries @ memory.T
        truth = np.argsort(-scores, axis=1)[:, :a.k]
        row = {}
        for name, c in indexes:
            c = c[h]
            if name in a.ip:
                lists = np.argmax(memory @ c.T, axis=1)
            else:
                lists = np.argmin((c * c).sum(1)[None, :] - 2 * memory @ c.T, axis=1)
            probes = np.argsort(-(queries @ c.T), axis=1)[:, :a.nprobe]
            sizes = np.bincount(lists, minlength=c.shape[0])
            scanned = found = 0
            for i in range(a.queries):
                candidates = np.nonzero(np.isin(lists, probes[i]))[0]
                scanned += len(candidates)
                top = candidates[np.argsort(-scores[i, candidates])[:a.k]]
                found += len(np.intersect1d(top, truth[i]))
            row[name] = {"nonempty_lists": int((sizes > 0).sum()), "largest_list": int(sizes.max()),
                         "scanned_per_query": round(scanned / a.queries), "recall": round(found / a.queries / a.k, 3)}
        out["heads"].append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
