#!/usr/bin/env python3
"""Posts a JSONL file of facts to a running `mnemo serve` in batches (POST /v1/facts {"facts": [...]}),
from CLIENTS threads at once, and prints one JSON line: facts, seconds, facts/s, per-request p50/p99 ms.
Usage: facts_http.py PORT JSONL CLIENTS [BATCH=256]   (bench/facts-ingest.sh runs it)"""
import json, sys, threading, time, urllib.request

port, path, clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 256
facts = [json.loads(line) for line in open(path, encoding="utf-8")]
batches = [facts[i:i + batch] for i in range(0, len(facts), batch)]
lock, taken, times, failures = threading.Lock(), [0], [], []

def client():
    while True:
        with lock:
            if taken[0] >= len(batches):
                return
            mine = batches[taken[0]]
            taken[0] += 1
        body = json.dumps({"facts": mine}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/facts", data=body,
                                         headers={"Content-Type": "application/json"})
        a = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=600) as r:
                ids = json.load(r)["ids"]
                assert len(ids) == len(mine), "ids missing"
        except Exception as e:  # noqa: BLE001 (reported, and the run fails)
            with lock:
                failures.append(str(e))
            return
        with lock:
            times.append((time.perf_counter() - a) * 1000)

start = time.perf_counter()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
seconds = time.perf_counter() - start
if failures:
    sys.exit("facts_http.py: " + failures[0])
times.sort()
print(json.dumps({"clients": clients, "batch": batch, "facts": len(facts), "seconds": seconds,
                  "facts_per_second": len(facts) / seconds, "request_p50_ms": times[len(times) // 2],
                  "request_p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))]}))
