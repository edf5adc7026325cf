#!/usr/bin/env python3
"""Memories over HTTP, measured through the server (docs/RESULTS.md and docs/PERFORMANCE.md, "Memories over HTTP").

Starts `mnemo serve` on a scratch state of MODEL (a model with a memory layer and, for IVF, a memory index:
bench/memory-quality.sh makes data/bench-memory/finetuned) and measures:
  quality   one long held-out document: its first part read into a memory; /v1/score of (a) the rest of it
            and (b) a passage of the part that was read (content far beyond the 128-token window), with the
            memory and without; greedy completions of a few lines from the read part, memory on and off;
  latency   reading a ~10K-token document; completion ms/token with a 64K-token memory vs none (exact search
            and IVF); deleting one document (unbounded memory: in place; FIFO: rebuilt).
Prints one JSON object. Usage: bench/memory-server.py [--model DIR] [--docs TEST.jsonl] [--port P] [--runs N]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: HTTP {e.code}: {e.read().decode()[:300]}")


class Server:
    def __init__(self, state, port, extra):
        self.port = port
        log = open(os.path.join(state, "serve.log"), "w")
        self.proc = subprocess.Popen([os.path.join(ROOT, "build/mnemo"), "serve", "--state", state, "--port", str(port),
                                      "--max-score-tokens", "16384"] + extra,
                                     stdout=log, stderr=subprocess.STDOUT)
        for _ in range(600):
            try:
                if call(port, "GET", "/health").get("status") == "ok":
                    return
            except (Exception, SystemExit):
                pass
            time.sleep(0.1)
        raise SystemExit("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "data/bench-memory/finetuned"))
    ap.add_argument("--docs", default=os.path.join(ROOT, "data/bench-memory/corpus/python-stdlib/test.jsonl"))
    ap.add_argument("--port", type=int, default=18321)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    docs = [json.loads(l)["text"] for l in open(a.docs) if l.strip()]
    docs.sort(key=len, reverse=True)
    tmp = tempfile.mkdtemp(prefix="mnemo-memory-server-")
    state = os.path.join(tmp, "state")
    subprocess.run([os.path.join(ROOT, "build/mnemo"), "init", "--state", state, "--model", a.model], check=True,
                   stdout=subprocess.DEVNULL)
    out = {"model": a.model}
    srv = None
    try:
        srv = Server(state, a.port, [])
        p = a.port
        model = call(p, "GET", "/v1/models")["data"][0]["id"]
        tok = lambda text: len(call(p, "POST", "/tokenize", {"model": model, "text": text})["tokens"])

        # Quality: the longest held-out document, its first 60% read into a memory.
        doc = docs[0]
        cut = int(len(doc) * 0.6)
        read_part, rest = doc[:cut], doc[cut:]
        m = call(p, "POST", "/v1/memories", {"name": "quality"})["id"]
        d, secs = timed(lambda: call(p, "POST", f"/v1/memories/{m}/documents", {"text": read_part}))
        out["quality_document"] = {"chars": len(doc), "read_tokens": d["tokens"], "read_seconds": round(secs, 3)}

        def score(text, mem):
            r = call(p, "POST", "/v1/score", {"model": model, "text": text, "memory": mem})
            return {"tokens": r["tokens_scored"], "perplexity": round(r["perplexity_lm"], 4)}

        rest_text = rest[:24000]
        passage = read_part[len(read_part) // 3: len(read_part) // 3 + 3000]
        out["score_rest_of_document"] = {"without": score(rest_text, None), "with_memory": score(rest_text, {"id": m})}
        out["score_passage_already_read"] = {"without": score(passage, None), "with_memory": score(passage, {"id": m})}
        examples = []
        lines = [l for l in read_part.splitlines() if l.strip().startswith("def ") and len(l) > 20]
        for line in lines[1:4]:
            at = read_part.index(line)
            prompt = read_part[max(0, at - 120): at + len(line) + 1]
            truth = read_part[at + len(line) + 1: at + len(line) + 121]
            ex = {"prompt_tail": prompt[-80:], "document_continues": truth}
            for label, mem in (("without", None), ("with_memory", {"id": m})):
                r = call(p, "POST", "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 32,
                                                        "temperature": 0, "memory": mem, "truncate_prompt": True})
                ex[label] = r["choices"][0]["text"]
            examples.append(ex)
        out["completion_examples"] = examples

        # Latency: a ~10K-token document; a 64K-token memory.
        big = call(p, "POST", "/v1/memories", {"name": "64k"})["id"]
        reads = []
        held = 0
        for text in docs[1:]:
            if held >= 65536:
                break
            text = text[:20000]
            r, secs = timed(lambda: call(p, "POST", f"/v1/memories/{big}/documents", {"text": text}))
            reads.append((r["tokens"], secs, r["id"]))
            held += r["tokens"]
        ten_k = [x for x in reads if x[0] >= 9000]
        out["read_document"] = {"documents": len(reads), "tokens": [x[0] for x in reads],
                                "seconds": [round(x[1], 3) for x in reads],
                                "tokens_per_second": round(sum(x[0] for x in reads) / sum(x[1] for x in reads), 1)}
        out["memory_tokens"] = call(p, "GET", f"/v1/memories/{big}")["resident_tokens"]

        def per_token(mem):
            body = {"model": model, "prompt": "import os\n", "max_tokens": 128, "temperature": 0, "ignore_eos": True,
                    "memory": mem}
            call(p, "POST", "/v1/completions", body)  # warm
            best = []
            for _ in range(a.runs):
                r, secs = timed(lambda: call(p, "POST", "/v1/completions", body))
                best.append(secs / r["usage"]["completion_tokens"] * 1000)
            best.sort()
            return round(best[len(best) // 2], 3)

        base_ms = per_token(None)
        ivf_ms = per_token({"id": big})
        out["completion_ms_per_token"] = {"no_memory": base_ms, "memory_64k_ivf": ivf_ms,
                                          "ratio_ivf": round(ivf_ms / base_ms, 3)}
        fifo = call(p, "POST", "/v1/memories", {"name": "fifo", "capacity": 32768})["id"]
        fifo_ids = [call(p, "POST", f"/v1/memories/{fifo}/documents", {"text": t[:40000]})["id"] for t in docs[1:5]]
        _, del_secs = timed(lambda: call(p, "DELETE", f"/v1/memories/{big}/documents/{reads[len(reads) // 2][2]}"))
        _, fifo_secs = timed(lambda: call(p, "DELETE", f"/v1/memories/{fifo}/documents/{fifo_ids[1]}"))
        out["delete_seconds"] = {"unbounded_64k": round(del_secs, 4), "fifo_32k_rebuild": round(fifo_secs, 4)}
        srv.stop()
        srv = None

        # The same memory searched exactly (no IVF).
        srv = None
        srv = Server(state, p, ["--memory-ivf-from", "0"])
        base2 = per_token(None)
        exact_ms = per_token({"id": big})
        out["completion_ms_per_token"].update({"no_memory_exact_run": base2, "memory_64k_exact": exact_ms,
                                               "ratio_exact": round(exact_ms / base2, 3)})
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
