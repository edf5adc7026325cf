#!/usr/bin/env python3
"""Writes the seeds of the `routes` fuzz target (fuzz/routes_fuzz.cc) into fuzz/corpus/routes/.

    python3 fuzz/make_routes_seeds.py            # rewrites fuzz/corpus/routes/

Each seed is: a route byte (the index in routes_fuzz.cc's kRoutes; 32 is the raw target), a flags byte
(bits 0-2 the caller: 0 admin, 4 admin by X-Api-Key, 5 read, 6 no key, 7 a wrong key; bit 3 a streaming
client that leaves; bits 4-6 the raw route's method), then "ARGS\\n" and the body. Deterministic; rerun after
changing the routes' order or the input format, and commit the result.
"""
import json
import os
import shutil
import sys

ROUTES = [
    "GET /health", "GET /v1/models", "GET /metrics", "POST /tokenize", "POST /detokenize",
    "POST /v1/completions", "POST /v1/score", "POST /v1/facts", "GET /v1/facts", "POST /v1/facts/delete",
    "GET /v1/log", "POST /v1/audits", "GET /v1/audits", "GET /v1/audits/{}", "DELETE /v1/audits/{}",
    "GET /v1/audits/{}/report.{}", "POST /v1/memories", "GET /v1/memories", "GET /v1/memories/{}",
    "DELETE /v1/memories/{}", "POST /v1/memories/{}/documents", "GET /v1/memories/{}/documents",
    "GET /v1/memories/{}/documents/{}", "DELETE /v1/memories/{}/documents/{}",
    "POST /v1/memories/{}/documents/{}/verify-deleted", "GET /v1/datastore/documents",
    "POST /v1/datastore/documents/{}/verify-deleted", "GET /v1/datastore/documents/{}",
    "DELETE /v1/datastore/documents/{}", "GET /v1/facts/{}", "DELETE /v1/facts/{}",
    "POST /v1/facts/{}/verify-deleted",
]
RAW = len(ROUTES)
ADMIN, ADMIN_X, READ, NONE, WRONG = 0, 4, 5, 6, 7


def j(v):
    return json.dumps(v, separators=(",", ":"))


def seeds():
    r = {name: i for i, name in enumerate(ROUTES)}
    m = {"model": "model"}
    yield "health", r["GET /health"], NONE, "", ""
    yield "models", r["GET /v1/models"], READ, "", ""
    yield "metrics", r["GET /metrics"], ADMIN, "", ""
    yield "tokenize", r["POST /tokenize"], READ, "", j({"text": "The cat sees the bridge."})
    yield "tokenize-not-string", r["POST /tokenize"], ADMIN, "", j({"text": 5})
    yield "tokenize-deep", r["POST /tokenize"], ADMIN, "", "[" * 40 + "]" * 40
    yield "tokenize-bad-utf8", r["POST /tokenize"], ADMIN, "", b'{"text": "\xff\xfe"}'
    yield "detokenize", r["POST /detokenize"], READ, "", j({"tokens": [1, 2, 3, 299]})
    yield "detokenize-out-of-range", r["POST /detokenize"], ADMIN, "", j({"tokens": [-1, 300, 18446744073709551615]})
    c = dict(m, prompt="The cat", max_tokens=4, temperature=0, logprobs=2, echo=True, return_neighbors=2,
             knn={"enabled": True, "k": 4, "lambda": 0.5, "temperature": 1.0, "nprobe": 1, "recompute": True},
             stop=["."], seed=1, n=2, best_of=2)
    yield "completion", r["POST /v1/completions"], READ, "", j(c)
    yield "completion-stream", r["POST /v1/completions"], ADMIN, "", j(dict(m, prompt=[5, 6, 7], max_tokens=3, stream=True,
                                                                        logprobs=1, return_neighbors=True))
    yield "completion-stream-leaves", r["POST /v1/completions"], ADMIN | 8, "", j(dict(m, prompt="A dog", stream=True))
    yield "completion-memory", r["POST /v1/completions"], ADMIN, "", j(dict(m, prompt="The old sailor", max_tokens=2,
                                                                        memory={"id": 2, "topk": 4}, return_neighbors=1))
    yield "completion-truncate", r["POST /v1/completions"], ADMIN, "", j(dict(m, prompt=list(range(1, 80)),
                                                                          truncate_prompt=True, max_tokens=1))
    yield "completion-bad", r["POST /v1/completions"], ADMIN, "", j(dict(m, prompt=["a", "b"], n=0, logit_bias={"1": 2},
                                                                     suffix="x", presence_penalty=1))
    yield "completion-no-model", r["POST /v1/completions"], ADMIN, "", j({"prompt": "x", "model": "other"})
    yield "score", r["POST /v1/score"], READ, "", j({"text": "The cat sees the bridge.", "knn": {"enabled": True, "k": 4}})
    yield "score-ids-long", r["POST /v1/score"], ADMIN, "", j({"ids": list(range(1, 100)), "memory": {"id": 2}})
    yield "score-bad", r["POST /v1/score"], ADMIN, "", j({"ids": [1], "model": 3, "memory": {"id": 9, "x": 1}})
    yield "facts-add", r["POST /v1/facts"], ADMIN, "", j({"text": "Carol owns a red boat.", "client_id": "c3",
                                                         "metadata": {"topic": "boats", "n": 1}})
    yield "facts-add-many", r["POST /v1/facts"], ADMIN, "", j({"facts": [{"text": "One."}, {"text": "Two.", "metadata": None}]})
    yield "facts-add-bad", r["POST /v1/facts"], ADMIN, "", j({"facts": [{"text": "ok"}, 5, {"metadata": []}]})
    yield "facts-list", r["GET /v1/facts"], ADMIN, "?after=0&limit=2&client_id=c1&metadata.topic=home", ""
    yield "facts-list-json-value", r["GET /v1/facts"], ADMIN, "?metadata.n=2&limit=99999", ""
    yield "facts-delete-filter", r["POST /v1/facts/delete"], ADMIN, "", j({"metadata": {"topic": "boats"}})
    yield "facts-delete-bad", r["POST /v1/facts/delete"], ADMIN, "", j({"metadata": {"a": 1, "b": 2}, "client_id": 1})
    yield "log", r["GET /v1/log"], ADMIN, "?after=0&limit=5&action=facts.add&actor=admin&id=1", ""
    yield "log-bad", r["GET /v1/log"], ADMIN, "?limit=0&after=-1", ""
    yield "audit-start", r["POST /v1/audits"], ADMIN, "", j({"canaries": 1, "references": 7, "repetitions": [1],
                                                            "members": 10, "extraction_prefixes": [2],
                                                            "extraction_samples": 1, "forgetting_added": [0],
                                                            "memory_capacity": 0, "datastore_documents": 0,
                                                            "finetune_steps": 0, "seed": 3, "knn": {"k": 4}})
    yield "audit-start-bad", r["POST /v1/audits"], ADMIN, "", j({"canaries": 0, "repetitions": [1, 1], "bogus": 1})
    yield "audit-list", r["GET /v1/audits"], ADMIN, "", ""
    yield "audit-get", r["GET /v1/audits/{}"], ADMIN, "audit-1-1", ""
    yield "audit-get-interrupted", r["GET /v1/audits/{}"], ADMIN, "audit-2-2", ""
    yield "audit-cancel", r["DELETE /v1/audits/{}"], ADMIN, "audit-9-9", ""
    yield "audit-report-json", r["GET /v1/audits/{}/report.{}"], ADMIN, "audit-1-1 json", ""
    yield "audit-report-html", r["GET /v1/audits/{}/report.{}"], ADMIN, "audit-1-1 html", ""
    yield "audit-report-interrupted", r["GET /v1/audits/{}/report.{}"], ADMIN, "audit-2-2 json", ""
    yield "memory-create", r["POST /v1/memories"], ADMIN, "", j({"name": "m", "capacity": 128})
    yield "memory-create-bad", r["POST /v1/memories"], ADMIN, "", j({"name": 1, "capacity": -1})
    yield "memory-list", r["GET /v1/memories"], READ, "", ""
    yield "memory-get", r["GET /v1/memories/{}"], READ, "2", ""
    yield "memory-get-huge", r["GET /v1/memories/{}"], ADMIN, "99999999999999999999", ""
    yield "memory-delete", r["DELETE /v1/memories/{}"], ADMIN, "3", ""
    yield "memory-read", r["POST /v1/memories/{}/documents"], ADMIN, "2", j({"text": "The river crosses the long road.",
                                                                            "metadata": {"src": "fuzz"}})
    yield "memory-read-bad", r["POST /v1/memories/{}/documents"], ADMIN, "2", j({"text": ["x"], "metadata": 1})
    yield "memory-documents", r["GET /v1/memories/{}/documents"], ADMIN, "2?after=0&limit=1", ""
    yield "memory-document", r["GET /v1/memories/{}/documents/{}"], ADMIN, "2 4", ""
    yield "memory-document-deleted", r["GET /v1/memories/{}/documents/{}"], ADMIN, "2 5", ""
    yield "memory-document-delete", r["DELETE /v1/memories/{}/documents/{}"], ADMIN, "2 4", ""
    yield "memory-verify", r["POST /v1/memories/{}/documents/{}/verify-deleted"], ADMIN, "2 5", j({"text": "A dog finds a red ball."})
    yield "memory-verify-empty", r["POST /v1/memories/{}/documents/{}/verify-deleted"], ADMIN, "2 5", ""
    yield "datastore-list", r["GET /v1/datastore/documents"], ADMIN, "?offset=1&limit=3", ""
    yield "datastore-list-far", r["GET /v1/datastore/documents"], ADMIN, "?offset=9223372036854775000&limit=10000", ""
    yield "datastore-verify", r["POST /v1/datastore/documents/{}/verify-deleted"], ADMIN, "p7", j({"text": "The cat"})
    yield "datastore-get", r["GET /v1/datastore/documents/{}"], ADMIN, "secret%20doc%2F1", ""
    yield "datastore-delete", r["DELETE /v1/datastore/documents/{}"], ADMIN, "p3", ""
    yield "fact-get", r["GET /v1/facts/{}"], ADMIN, "1", ""
    yield "fact-get-deleted", r["GET /v1/facts/{}"], ADMIN, "3", ""
    yield "fact-delete", r["DELETE /v1/facts/{}"], ADMIN, "2", ""
    yield "fact-verify", r["POST /v1/facts/{}/verify-deleted"], ADMIN, "3", j({"text": "The harbour opens at six.",
                                                                              "knn": {"k": 4}})
    yield "fact-verify-empty", r["POST /v1/facts/{}/verify-deleted"], ADMIN, "3", ""
    yield "raw-405", RAW, ADMIN | (3 << 4), "/v1/facts", ""
    yield "raw-404", RAW, READ, "/nope?x=1", ""
    yield "raw-no-key", RAW, NONE | (1 << 4), "/v1/completions", j({"prompt": "x"})
    yield "raw-wrong-key", RAW, WRONG, "/v1/models", ""
    yield "raw-head", RAW, ADMIN_X | (6 << 4), "/v1/memories/2", ""


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "routes")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    total = 0
    for name, route, flags, args, body in seeds():
        data = bytes([route, flags]) + args.encode() + b"\n" + (body if isinstance(body, bytes) else body.encode())
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        total += len(data)
    print(f"{out}: {len(os.listdir(out))} seeds, {total} bytes")


if __name__ == "__main__":
    main()
