#!/usr/bin/env python3
"""Soak test of `mnemo serve` under mixed load (bench/soak.sh runs this; python3 standard library only).

A fresh state under data/soak/state (mnemo init, the default model, no datastore); the binary is copied to
data/soak/mnemo so a rebuild of build/mnemo during the run does not touch the server under test. One
`mnemo serve --workers 1` (niced by 5, as this script), then for SECONDS THREADS client threads, each on a
keep-alive connection with THINK seconds between requests, mix:

  completion   30%  8-16 tokens, temperature 0.8, prompt from a fixed set or a live fact's first words;
                    15% with logprobs 2, 10% n=2, 15% stream (must end with `data: [DONE]`)
  score        15%  a short text or a live fact's text
  facts        35%  add a unique text (a third with metadata) or delete an acknowledged live fact; adds
                    dominate below LIVE_LOW live facts, deletes above LIVE_HIGH
  list          6%  GET /v1/facts?limit=1..200&after=<random id>
  get           5%  GET /v1/facts/{live id}: 200 with the acknowledged text (404 only if it was deleted since)
  get deleted   1%  GET /v1/facts/{acknowledged delete}: 404 expected
  metrics       3%  GET /metrics
  tokenize      3%  POST /tokenize
  health        1%  GET /health
  verify        0.5% POST /v1/facts/{id}/verify-deleted with its text: 200, "passed": true

and the main thread every SAMPLE_EVERY s reads /proc/<pid>/status (VmRSS, VmHWM, Threads), counts
/proc/<pid>/fd, GETs /metrics (mnemo_facts) and writes a row to data/soak/samples.csv; it starts a small
audit (POST /v1/audits, AUDIT_BODY) at 40% of the warm-up and then every AUDIT_EVERY s, and follows it to
its end. Warm-up: max(30 s, min(10% of the run, 300 s)). After the load: a quiesced sample, every fact is
listed and compared with the acknowledgements (lost: acknowledged and never deleted but missing; phantom:
listed but never acknowledged), SIGTERM (must exit 0 within 60 s), the summary to data/soak/summary.txt.

Expected non-2xx replies (not errors): 404 for GET of an acknowledged delete, 404 for a GET of a live fact
another thread deleted meanwhile, 409 for GET /v1/memories on a model without a memory layer, 409 for an
audit started while one runs. Everything else that is not 2xx, and every cut or timed-out request, is an
unexpected error.

Outputs go to --out (default data/soak), emptied first; OUT/.lock is held for the run, so a second run on the
same folder exits 2 instead of deleting the first one's state under its server.

Usage: bench/soak.py [--seconds S] [--port P] [--threads T] [--think S] [--audit-every S]
                     [--sample-every S] [--fd-slack N] [--seed N] [--out DIR]
"""
import argparse
import collections
import fcntl
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNEMO = os.path.join(ROOT, "build", "mnemo")
MODEL = os.path.join(ROOT, "data", "models", "default")
OUT = os.path.join(ROOT, "data", "soak")  # --out; STATE and BIN follow it
STATE = os.path.join(OUT, "state")
BIN = os.path.join(OUT, "mnemo")
WORDS = ("harbour anchor lantern meadow quill ember saffron tundra violet willow zephyr cobalt falcon "
         "granite hazel indigo juniper kestrel lagoon marble nectar orchid pebble quartz raven sorrel "
         "thistle umber velvet walnut").split()
PLACES = "quillon lindau marsden tarrow elmsby caldor wexham brightwater".split()
PROMPTS = ["Harbour, n. A place", "Quillon, n.", "The access code of", "Lantern, n. Something",
           "Anchor, v. t. To", "Meadow, n.", "soak fact", "The harbour master of"]
SCORE_TEXTS = ["Quillon, n. The harbour town.", "Anchor, n. A heavy iron instrument.",
               "Lantern, n. Something inclosing a light.", "Meadow, n. A tract of low land.",
               "The harbour of Quillon opens at dawn.", "Willow, n. A tree of the genus Salix."]
AUDIT_BODY = {"canaries": 2, "references": 31, "repetitions": [1, 4], "members": 40, "extraction_prefixes": [2, 4],
              "extraction_samples": 10, "forgetting_added": [0, 20], "finetune_steps": 0, "memory_capacity": 0,
              "datastore_documents": 0}
LIVE_LOW, LIVE_HIGH = 600, 900
RACE_REASON = "the live memory differs from one rebuilt without the fact"
KINDS = ["completion", "completion_logprobs", "completion_n2", "completion_stream", "score", "fact_add",
         "fact_delete", "fact_list", "fact_get", "fact_get_deleted", "metrics", "tokenize", "health",
         "verify_deleted", "verify_deleted_quiet", "audit_start", "audit_status", "memories", "models", "final_list"]


def now():
    return time.monotonic()


class Stats:
    """Per kind: ok count, latencies (of every reply), expected non-2xx, unexpected errors."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = collections.Counter()
        self.expected = collections.Counter()     # (kind, status)
        self.errors = collections.Counter()       # (kind, status or "cut:<exc>" or a check)
        self.lat = collections.defaultdict(list)  # kind -> seconds
        self.first_errors = []
        self.total = 0
        self.verify_race = 0          # NOT deleted under concurrent writes, passed when re-run with none
        self.verify_race_example = ""
        self.errors_file = None       # every unexpected error in full

    def log_error(self, line):
        if len(self.first_errors) < 20:
            self.first_errors.append(line[:400])
        if self.errors_file is not None:
            self.errors_file.write(line + "\n")
            self.errors_file.flush()

    def record(self, kind, dt, outcome, status=None, detail=""):
        with self.lock:
            self.total += 1
            self.lat[kind].append(dt)
            if outcome == "ok":
                self.ok[kind] += 1
            elif outcome == "expected":
                self.expected[(kind, status)] += 1
            else:
                self.errors[(kind, status)] += 1
                self.log_error(f"{time.strftime('%H:%M:%S')} {kind} {status} {detail}")

    def error(self, kind, what, detail=""):
        """An error found by a check of a reply that was already recorded as ok."""
        with self.lock:
            self.ok[kind] -= 1
            self.errors[(kind, what)] += 1
            self.log_error(f"{time.strftime('%H:%M:%S')} {kind} {what} {detail}")

    def n_errors(self):
        with self.lock:
            return sum(self.errors.values())


class Facts:
    """What the clients know about facts. Guarded by lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.live = {}                                  # id -> text: acknowledged, no delete attempted
        self.live_list = []                             # ids (lazy deletion)
        self.deleted = {}                               # id -> text: delete acknowledged
        self.recent_deleted = collections.deque(maxlen=500)
        self.pend_add = set()                           # texts of adds without a reply
        self.pend_del = {}                              # id -> text: deletes without a reply
        self.max_id = 0

    def add_live(self, fid, text):
        self.live[fid] = text
        self.live_list.append(fid)
        self.max_id = max(self.max_id, fid)

    def random_live(self, rng, pop=False):
        if len(self.live_list) > 2 * len(self.live) + 64:
            self.live_list = [i for i in self.live_list if i in self.live]
        for _ in range(8):
            if not self.live_list:
                return None
            k = rng.randrange(len(self.live_list))
            fid = self.live_list[k]
            if fid not in self.live:
                self.live_list[k] = self.live_list[-1]
                self.live_list.pop()
                continue
            if pop:
                self.live_list[k] = self.live_list[-1]
                self.live_list.pop()
            return fid
        return None


class Gate:
    """Fact adds and deletes pass through enter/leave; pause() waits until none is in flight and holds new
    ones back until resume() (for a verify-deleted re-run with no concurrent writes)."""

    def __init__(self):
        self.cv = threading.Condition()
        self.active = 0
        self.paused = False

    def enter(self):
        with self.cv:
            while self.paused:
                self.cv.wait()
            self.active += 1

    def leave(self):
        with self.cv:
            self.active -= 1
            self.cv.notify_all()

    def pause(self):
        with self.cv:
            while self.paused:
                self.cv.wait()
            self.paused = True
            while self.active:
                self.cv.wait()

    def resume(self):
        with self.cv:
            self.paused = False
            self.cv.notify_all()


class Conn:
    """A keep-alive connection that reconnects after a close. call() returns (status, raw) or (None, exc)."""

    def __init__(self, port, timeout=120):
        self.port, self.timeout, self.c = port, timeout, None

    def call(self, method, path, body=None):
        if self.c is None:
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body)
            self.c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = self.c.getresponse()
            raw = r.read()
            return r.status, raw
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return None, type(e).__name__

    def close(self):
        if self.c is not None:
            try:
                self.c.close()
            except Exception:
                pass
            self.c = None


def timed(stats, conn, kind, method, path, body=None, ok=(200,), expected=()):
    """One request, recorded. Returns (status, parsed JSON or raw bytes); status None if cut."""
    t0 = now()
    st, raw = conn.call(method, path, body)
    dt = now() - t0
    if st is None:
        stats.record(kind, dt, "error", f"cut:{raw}", f"{method} {path}")
        return None, None
    if st in ok:
        stats.record(kind, dt, "ok", st)
    elif st in expected:
        stats.record(kind, dt, "expected", st)
    else:
        stats.record(kind, dt, "error", st, f"{method} {path}: {raw[:2000]!r}")
    try:
        return st, json.loads(raw)
    except ValueError:
        return st, raw


class Client(threading.Thread):
    def __init__(self, idx, port, facts, stats, stop, rng, think, model_id, gate):
        super().__init__(daemon=True)
        self.idx, self.facts, self.stats, self.stop, self.gate = idx, facts, stats, stop, gate
        self.rng, self.think, self.model_id = rng, think, model_id
        self.conn = Conn(port)
        self.i = 0

    def run(self):
        ops = [(30, self.completion), (15, self.score), (35, self.churn), (6, self.list_facts), (5, self.get_live),
               (1, self.get_deleted), (3, self.metrics), (3, self.tokenize), (1, self.health),
               (0.5, self.verify)]
        total = sum(w for w, _ in ops)
        while not self.stop.is_set():
            x = self.rng.random() * total
            for w, f in ops:
                x -= w
                if x < 0:
                    f()
                    break
            if self.think > 0:
                self.stop.wait(self.rng.uniform(0, 2 * self.think))
        self.conn.close()

    def live_text(self):
        with self.facts.lock:
            fid = self.facts.random_live(self.rng)
            return self.facts.live.get(fid) if fid is not None else None

    def completion(self):
        rng = self.rng
        prompt = rng.choice(PROMPTS)
        if rng.random() < 0.3:
            t = self.live_text()
            if t:
                prompt = " ".join(t.split()[:4])
        body = {"model": self.model_id, "prompt": prompt, "max_tokens": rng.randint(8, 16), "temperature": 0.8,
                "seed": rng.randrange(1 << 30)}
        x = rng.random()
        if x < 0.15:
            body["logprobs"] = 2
            kind = "completion_logprobs"
        elif x < 0.25:
            body["n"] = 2
            kind = "completion_n2"
        elif x < 0.40:
            body["stream"] = True
            kind = "completion_stream"
        else:
            kind = "completion"
        st, resp = timed(self.stats, self.conn, kind, "POST", "/v1/completions", body)
        if st != 200:
            return
        if kind == "completion_stream":
            raw = resp if isinstance(resp, bytes) else b""
            if not raw.rstrip().endswith(b"data: [DONE]"):
                self.stats.error(kind, "stream without [DONE]", repr(raw[-200:]))
        elif not isinstance(resp, dict) or len(resp.get("choices", [])) != body.get("n", 1):
            self.stats.error(kind, "bad body", repr(resp)[:200])

    def score(self):
        text = self.live_text() if self.rng.random() < 0.3 else None
        text = text or self.rng.choice(SCORE_TEXTS)
        st, resp = timed(self.stats, self.conn, "score", "POST", "/v1/score", {"text": text})
        if st == 200 and not (isinstance(resp, dict) and "logprobs_lm" in resp):
            self.stats.error("score", "bad body", repr(resp)[:200])

    def churn(self):
        with self.facts.lock:
            n = len(self.facts.live)
        add_share = 0.7 if n < LIVE_LOW else (0.3 if n > LIVE_HIGH else 0.5)
        self.gate.enter()
        try:
            if self.rng.random() < add_share or n == 0:
                self.add()
            else:
                self.delete()
        finally:
            self.gate.leave()

    def add(self):
        rng = self.rng
        self.i += 1
        text = (f"soak fact {self.idx}-{self.i}: the {rng.choice(WORDS)} {rng.choice(WORDS)} of "
                f"{rng.choice(PLACES)} is {rng.randrange(10 ** 6)}.")
        body = {"text": text}
        if rng.random() < 0.33:
            body["metadata"] = {"src": "soak", "thread": self.idx}
        with self.facts.lock:
            self.facts.pend_add.add(text)
        st, resp = timed(self.stats, self.conn, "fact_add", "POST", "/v1/facts", body)
        if st == 200 and isinstance(resp, dict) and isinstance(resp.get("id"), int):
            with self.facts.lock:
                self.facts.pend_add.discard(text)
                self.facts.add_live(resp["id"], text)
        elif st == 200:
            self.stats.error("fact_add", "no id", repr(resp)[:200])

    def delete(self):
        with self.facts.lock:
            fid = self.facts.random_live(self.rng, pop=True)
            if fid is None:
                return
            text = self.facts.live.pop(fid)
            self.facts.pend_del[fid] = text
        st, resp = timed(self.stats, self.conn, "fact_delete", "DELETE", f"/v1/facts/{fid}")
        with self.facts.lock:
            if st == 200:
                del self.facts.pend_del[fid]
                self.facts.deleted[fid] = text
                self.facts.recent_deleted.append((fid, text))
            elif st == 404:  # only this thread deletes fid: an acknowledged fact had vanished (recorded as error)
                del self.facts.pend_del[fid]
                self.facts.deleted[fid] = text

    def list_facts(self):
        with self.facts.lock:
            after = self.rng.randrange(self.facts.max_id + 1)
        limit = self.rng.randint(1, 200)
        st, resp = timed(self.stats, self.conn, "fact_list", "GET", f"/v1/facts?limit={limit}&after={after}")
        if st == 200 and not (isinstance(resp, dict) and isinstance(resp.get("data"), list)
                              and len(resp["data"]) <= limit):
            self.stats.error("fact_list", "bad body", repr(resp)[:200])

    def get_live(self):
        with self.facts.lock:
            fid = self.facts.random_live(self.rng)
            text = self.facts.live.get(fid)
        if fid is None:
            return
        st, resp = timed(self.stats, self.conn, "fact_get", "GET", f"/v1/facts/{fid}", expected=(404,))
        if st == 200 and not (isinstance(resp, dict) and resp.get("text") == text):
            self.stats.error("fact_get", "wrong text", f"{fid}: {repr(resp)[:200]}")
        elif st == 404:
            with self.facts.lock:
                still_live = fid in self.facts.live
            if still_live:
                self.stats.error("fact_get", "404 for a live fact (lost)", str(fid))

    def get_deleted(self):
        with self.facts.lock:
            if not self.facts.recent_deleted:
                return
            fid, _ = self.rng.choice(self.facts.recent_deleted)
        timed(self.stats, self.conn, "fact_get_deleted", "GET", f"/v1/facts/{fid}", ok=(404,))

    def verify(self):
        with self.facts.lock:
            if not self.facts.recent_deleted:
                return
            fid, text = self.rng.choice(self.facts.recent_deleted)
        st, resp = timed(self.stats, self.conn, "verify_deleted", "POST", f"/v1/facts/{fid}/verify-deleted",
                         {"text": text})
        if st != 200 or (isinstance(resp, dict) and resp.get("passed") is True):
            return
        # DELETE /v1/facts/{id} runs on an HTTP thread, beside the worker that verifies: a delete between
        # the verifier's rebuild from the database and its searches of the live memory makes the two differ.
        # Such a verdict (no trace of the fact itself) is re-run with adds and deletes paused; only a second
        # failure is an error.
        racy = (isinstance(resp, dict) and resp.get("reason") == RACE_REASON
                and not any(resp.get("structural", {}).get(k) for k in ("in_database", "in_segment", "snapshots_holding"))
                and not resp.get("probe", {}).get("text_in_database_files")
                and resp.get("probe", {}).get("neighbors_from_deleted_fact") == 0)
        if racy:
            self.gate.pause()
            try:
                st2, resp2 = timed(self.stats, self.conn, "verify_deleted_quiet", "POST",
                                   f"/v1/facts/{fid}/verify-deleted", {"text": text})
            finally:
                self.gate.resume()
            if st2 == 200 and isinstance(resp2, dict) and resp2.get("passed") is True:
                with self.stats.lock:
                    self.stats.verify_race += 1
                    if not self.stats.verify_race_example:
                        self.stats.verify_race_example = json.dumps(resp, separators=(",", ":"))
                return
            if st2 == 200:
                self.stats.error("verify_deleted_quiet", "not passed", f"{fid}: {json.dumps(resp2)}")
        self.stats.error("verify_deleted", "not passed", f"{fid}: {json.dumps(resp)}")

    def metrics(self):
        timed(self.stats, self.conn, "metrics", "GET", "/metrics")

    def tokenize(self):
        timed(self.stats, self.conn, "tokenize", "POST", "/tokenize", {"text": self.rng.choice(SCORE_TEXTS)})

    def health(self):
        timed(self.stats, self.conn, "health", "GET", "/health")


def proc_sample(pid):
    """(rss_mb, hwm_mb, threads, fds, nice) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            st = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
    except (OSError, ValueError, IndexError):
        return None
    kb = lambda k: int(st[k].split()[0])  # noqa: E731
    return kb("VmRSS") / 1024.0, kb("VmHWM") / 1024.0, int(st["Threads"]), fds, nice


def dir_mb(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total / 1e6


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.rsplit(" ", 1)
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
    return out


def pct(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def slope_per_hour(ts, ys):
    n = len(ts)
    if n < 2:
        return float("nan")
    mt, my = sum(ts) / n, sum(ys) / n
    den = sum((t - mt) ** 2 for t in ts)
    return float("nan") if den == 0 else 3600.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den


def list_all(port):
    conn, facts, after = Conn(port, timeout=60), {}, 0
    try:
        while True:
            st, raw = conn.call("GET", f"/v1/facts?limit=10000&after={after}")
            if st != 200:
                raise RuntimeError(f"GET /v1/facts after={after}: {st} {raw!r:.200}")
            body = json.loads(raw)
            for f in body["data"]:
                facts[f["id"]] = f["text"]
            if body.get("next_after") is None:
                return facts, body.get("total")
            after = body["next_after"]
    finally:
        conn.close()


def main():
    global OUT, STATE, BIN
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--port", type=int, default=8094)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--think", type=float, default=0.02)
    ap.add_argument("--audit-every", type=float, default=600)
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--fd-slack", type=int, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=OUT, help="output folder (emptied first; default data/soak)")
    a = ap.parse_args()
    OUT = os.path.abspath(a.out)
    STATE, BIN = os.path.join(OUT, "state"), os.path.join(OUT, "mnemo")
    seed = a.seed if a.seed is not None else int(time.time()) % 1000000
    rng = random.Random(seed)
    warmup = max(30.0, min(0.1 * a.seconds, 300.0))
    try:
        os.nice(5)
    except OSError:
        pass

    for path, what in ((MNEMO, "build/mnemo"), (os.path.join(MODEL, "config.json"), "the default model")):
        if not os.path.exists(path):
            sys.exit(f"soak: {what} is missing ({path})")
    try:
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=1)
        c.request("GET", "/health")
        sys.exit(f"soak: something already listens on port {a.port}")
    except OSError:
        pass

    # One run per output folder: OUT/.lock is held for the whole run (a second run on the same folder would
    # delete the first one's state under its server). Everything else in OUT is removed.
    os.makedirs(OUT, exist_ok=True)
    lock = open(os.path.join(OUT, ".lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"soak: another soak run uses {OUT} (its .lock is held); give this one --out (OUT=) of its own",
              file=sys.stderr)
        sys.exit(2)
    for e in os.listdir(OUT):
        if e != ".lock":
            path = os.path.join(OUT, e)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    shutil.copy2(MNEMO, BIN)
    with open(BIN, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()[:16]
    bin_mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(MNEMO).st_mtime))
    p = subprocess.run([BIN, "init", "--state", STATE, "--model", MODEL, "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"soak: mnemo init failed: {p.stderr}")

    progress = open(os.path.join(OUT, "progress.txt"), "w", buffering=1)

    def say(line):
        print(line, flush=True)
        progress.write(line + "\n")

    serve_cmd = [BIN, "serve", "--state", STATE, "--port", str(a.port), "--workers", "1", "--no-log"]
    log = open(os.path.join(OUT, "serve.log"), "wb")
    t_launch = now()
    server = subprocess.Popen(serve_cmd, stdout=log, stderr=log, cwd=ROOT)
    log.close()
    stats, facts = Stats(), Facts()
    stats.errors_file = open(os.path.join(OUT, "errors.txt"), "w")
    ready = None
    while now() - t_launch < 180 and server.poll() is None:
        c = Conn(a.port, timeout=2)
        st, _ = c.call("GET", "/health")
        c.close()
        if st == 200:
            ready = now() - t_launch
            break
        time.sleep(0.05)
    if ready is None:
        server.kill()
        sys.exit(f"soak: the server did not become ready (exit {server.poll()}); see data/soak/serve.log")
    main_conn = Conn(a.port, timeout=30)
    st, body = timed(stats, main_conn, "models", "GET", "/v1/models")
    model_id = body["data"][0]["id"] if st == 200 else "default"
    st, body = timed(stats, main_conn, "memories", "GET", "/v1/memories", expected=(409,))
    memories_note = ("memories: not exercised (the model has no memory layer: GET /v1/memories 409)" if st == 409
                     else f"memories: not exercised (GET /v1/memories {st})")
    main_conn.close()
    say(f"soak: {a.seconds:.0f} s, port {a.port}, {a.threads} client threads (think {a.think} s), warm-up "
        f"{warmup:.0f} s, seed {seed}, server pid {server.pid} ready in {ready:.2f} s, binary sha256 {bin_sha}")

    # Load.
    stop = threading.Event()
    gate = Gate()
    clients = [Client(i, a.port, facts, stats, stop, random.Random(rng.random()), a.think, model_id, gate)
               for i in range(a.threads)]
    csv = open(os.path.join(OUT, "samples.csv"), "w", buffering=1)
    csv.write("t_s,rss_mb,hwm_mb,fds,threads,live_facts,server_facts,requests,errors,state_mb,audit_running\n")
    samples = []   # dicts
    audits = []    # dicts: id, start (t), end, status, dur
    audit_cur = None
    next_audit = 0.4 * warmup
    died = None
    nice_seen = None
    t0 = now()
    for c in clients:
        c.start()
    k = 0
    while True:
        t_target = k * a.sample_every
        if t_target > a.seconds + 1e-9:
            break
        delay = t0 + t_target - now()
        if delay > 0:
            time.sleep(delay)
        t = now() - t0
        if server.poll() is not None:
            died = f"the server exited {server.returncode} at t={t:.0f} s"
            break
        ps = proc_sample(server.pid)
        if ps is None:
            died = f"/proc/{server.pid} unreadable at t={t:.0f} s"
            break
        rss, hwm, threads, fds, nice_seen = ps
        sconn = Conn(a.port, timeout=30)  # a new connection per sample: 10 s idle is past the keep-alive timeout
        st, mtext = timed(stats, sconn, "metrics", "GET", "/metrics")
        sfacts = ""
        if st == 200:
            m = parse_metrics(mtext.decode(errors="replace") if isinstance(mtext, bytes) else str(mtext))
            sfacts = int(m.get("mnemo_facts", -1))
        # Audits: one at 40% of the warm-up, then every audit_every s; followed to their end.
        if audit_cur is not None:
            st, body = timed(stats, sconn, "audit_status", "GET", f"/v1/audits/{audit_cur['id']}")
            if st == 200 and isinstance(body, dict) and body.get("status") not in ("running", "queued", None):
                audit_cur["status"] = body.get("status")
                audit_cur["end"] = t
                if body.get("status") != "succeeded":
                    stats.error("audit_status", f"audit {body.get('status')}", repr(body)[:300])
                say(f"  t={t:.0f}s audit {audit_cur['id']} {body.get('status')} after ~{t - audit_cur['start']:.0f} s")
                audit_cur = None
        if audit_cur is None and a.audit_every > 0 and t >= next_audit:
            st, body = timed(stats, sconn, "audit_start", "POST", "/v1/audits", AUDIT_BODY, ok=(202,),
                             expected=(409,))
            if st == 202 and isinstance(body, dict):
                audit_cur = {"id": body.get("id"), "start": t, "end": None, "status": "running"}
                audits.append(audit_cur)
                say(f"  t={t:.0f}s audit {audit_cur['id']} started")
            next_audit += a.audit_every
        sconn.close()
        with facts.lock:
            live = len(facts.live)
        row = {"t": t, "rss": rss, "hwm": hwm, "fds": fds, "threads": threads, "live": live, "sfacts": sfacts,
               "req": stats.total, "err": stats.n_errors(), "state_mb": dir_mb(STATE),
               "audit": 1 if audit_cur is not None else 0}
        samples.append(row)
        csv.write(f"{t:.1f},{rss:.1f},{hwm:.1f},{fds},{threads},{live},{sfacts},{row['req']},{row['err']},"
                  f"{row['state_mb']:.1f},{row['audit']}\n")
        if k % max(1, int(round(60 / a.sample_every))) == 0 or t_target >= a.seconds:
            say(f"t={t:5.0f}s rss {rss:7.1f} MB hwm {hwm:7.1f} fds {fds:3d} threads {threads:3d} live {live:4d} "
                f"server facts {sfacts} requests {row['req']:7d} errors {row['err']} state {row['state_mb']:.1f} MB")
        k += 1
    stop.set()
    for c in clients:
        c.join(180)
    load_s = now() - t0
    stuck = sum(c.is_alive() for c in clients)

    # Let a running audit finish (it is part of the state the listing reads), then a quiesced sample.
    problems, warns = [], []
    if died is None and audit_cur is not None:
        qc = Conn(a.port, timeout=30)
        for _ in range(240):
            st, body = timed(stats, qc, "audit_status", "GET", f"/v1/audits/{audit_cur['id']}")
            if st == 200 and isinstance(body, dict) and body.get("status") not in ("running", "queued"):
                audit_cur["status"], audit_cur["end"] = body.get("status"), now() - t0
                if body.get("status") != "succeeded":
                    stats.error("audit_status", f"audit {body.get('status')}", repr(body)[:300])
                break
            time.sleep(1)
        qc.close()
    quiet = None
    if died is None and server.poll() is None:
        time.sleep(2)
        quiet = proc_sample(server.pid)

    # Every fact against the acknowledgements.
    listing_line = "final listing: not done (the server is gone)"
    if died is None and server.poll() is None:
        t1 = now()
        try:
            listed, total = list_all(a.port)
            stats.record("final_list", now() - t1, "ok", 200)
            lost = [i for i in facts.live if i not in listed]
            wrong = [i for i, tx in facts.live.items() if i in listed and listed[i] != tx]
            resurrected = [i for i in facts.deleted if i in listed]
            known_texts = set(facts.pend_add)
            phantom = [i for i, tx in listed.items()
                       if i not in facts.live and i not in facts.pend_del and tx not in known_texts]
            listing_line = (f"final listing: {len(listed)} facts (total {total}); client: {len(facts.live)} live, "
                            f"{len(facts.pend_del)} deletes and {len(facts.pend_add)} adds without a reply; "
                            f"lost {len(lost)}, wrong text {len(wrong)}, resurrected {len(resurrected)}, "
                            f"phantom {len(phantom)}")
            for name, ids in (("lost", lost), ("wrong text", wrong), ("resurrected", resurrected),
                              ("phantom", phantom)):
                if ids:
                    problems.append(f"{len(ids)} {name} facts, e.g. {sorted(ids)[:5]}")
        except (OSError, http.client.HTTPException, RuntimeError, ValueError) as e:
            stats.record("final_list", now() - t1, "error", "failed", str(e))
            listing_line = f"final listing failed: {e}"
    server_metrics = {}
    if died is None and server.poll() is None:
        mc = Conn(a.port, timeout=30)
        st, raw = mc.call("GET", "/metrics")
        mc.close()
        if st == 200:
            server_metrics = parse_metrics(raw.decode(errors="replace"))

    # SIGTERM.
    if server.poll() is None:
        t1 = now()
        os.kill(server.pid, signal.SIGTERM)
        try:
            rc = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            rc = "killed after 60 s"
        stop_line = f"SIGTERM stop: exit {rc} in {now() - t1:.2f} s"
        if rc != 0:
            problems.append(f"the server's SIGTERM stop: exit {rc}")
    else:
        rc = server.returncode
        stop_line = f"the server was already gone: exit {rc}"
    if died:
        problems.append(f"the server died: {died}")
    if stuck:
        problems.append(f"{stuck} client threads did not stop within 180 s")

    # Analysis.
    # Samples taken while an audit runs hold its transient memory (its scratch state, its model work): the
    # end of the warm-up is the first sample at or after it with no audit running, the end the last such
    # sample, and the slope is fitted to those; the max is over every sample after the warm-up.
    post = [s for s in samples if s["t"] >= warmup - 1e-6]
    calm = [s for s in post if not s["audit"]]
    base = calm[0] if calm else None
    end = calm[-1] if calm else None
    lines = [f"soak (bench/soak.sh), {time.strftime('%Y-%m-%d %H:%M:%S')}, seed {seed}",
             f"run: {a.seconds:.0f} s of load (measured {load_s:.0f} s), {a.threads} client threads, think "
             f"{a.think} s, port {a.port}; server: {' '.join(os.path.relpath(x, ROOT) if x.startswith(ROOT) else x for x in serve_cmd)}"
             f" (nice {nice_seen}); binary build/mnemo of {bin_mtime}, sha256 {bin_sha}; ready in {ready:.2f} s",
             f"samples: {len(samples)} every {a.sample_every:.0f} s; warm-up {warmup:.0f} s "
             f"(max(30 s, min(10% of the run, 300 s)))"]
    if base and end and len(calm) >= 2:
        rss_g = 100.0 * (end["rss"] / base["rss"] - 1)
        max_rss = max(s["rss"] for s in post)
        max_at = next(s["t"] for s in post if s["rss"] == max_rss)
        max_g = 100.0 * (max_rss / base["rss"] - 1)
        slope = slope_per_hour([s["t"] for s in calm], [s["rss"] for s in calm])
        fd_g = end["fds"] - base["fds"]
        max_fds = max(s["fds"] for s in post)
        lines += [
            f"RSS: end of warm-up (t={base['t']:.0f} s) {base['rss']:.1f} MB, end (t={end['t']:.0f} s) "
            f"{end['rss']:.1f} MB ({rss_g:+.2f}%), max after warm-up {max_rss:.1f} MB at t={max_at:.0f} s "
            f"({max_g:+.2f}%); first sample {samples[0]['rss']:.1f} MB; VmHWM at the end {end['hwm']:.1f} MB",
            f"RSS slope after warm-up (least squares over the {len(calm)} samples with no audit running): "
            f"{slope:+.2f} MB/hour "
            f"({100.0 * slope / base['rss']:+.2f}% of the warm-up RSS per hour)",
            f"open fds ({a.threads} client connections among them): end of warm-up {base['fds']}, end {end['fds']} ({fd_g:+d}), "
            f"max after warm-up {max_fds}, "
            f"min {min(s['fds'] for s in post)}",
            f"threads: end of warm-up {base['threads']}, end {end['threads']}, max after warm-up "
            f"{max(s['threads'] for s in post)}",
        ]
        if quiet:
            lines.append(f"quiesced (load stopped, clients disconnected, 2 s): RSS {quiet[0]:.1f} MB, fds {quiet[3]}, "
                         f"threads {quiet[2]}")
        step = a.sample_every * max(1, int(round(max(a.seconds / 12.0, a.sample_every) / a.sample_every)))
        marks, tm = [], 0.0
        while tm <= a.seconds + 1e-6:
            marks.append(tm)
            tm += step
        curve = []
        for m in marks:
            s = min(samples, key=lambda s: abs(s["t"] - m))
            curve.append((f"{s['t'] / 60:.0f}m" if step >= 60 else f"{s['t']:.0f}s") + f" {s['rss']:.0f}"
                         + ("*" if s["audit"] else ""))
        lines.append("RSS curve (MB; * audit running): " + ", ".join(curve))
        if rss_g > 5.0:
            problems.append(f"RSS grew {rss_g:+.2f}% (end vs end of warm-up) > 5%")
        if max_g > 5.0:
            warns.append(f"max RSS after warm-up {max_g:+.2f}% above the end of warm-up (> 5%) at t={max_at:.0f} s")
        if fd_g > a.fd_slack:
            problems.append(f"open fds grew by {fd_g} (> {a.fd_slack})")
        if max_fds - base["fds"] > 4 * a.fd_slack:
            warns.append(f"max fds after warm-up {max_fds} vs {base['fds']} at the end of warm-up")
        if end["threads"] > base["threads"] + 2:
            problems.append(f"threads grew from {base['threads']} to {end['threads']}")
    else:
        problems.append("too few samples after the warm-up to judge growth")
    if samples:
        lines.append(f"live facts: min/max after warm-up {min(s['live'] for s in post or samples)}/"
                     f"{max(s['live'] for s in post or samples)}, end {samples[-1]['live']} (server's mnemo_facts "
                     f"{samples[-1]['sfacts']}); acknowledged: {len(facts.live) + len(facts.deleted)} adds, "
                     f"{len(facts.deleted)} deletes; state on disk {samples[0]['state_mb']:.1f} -> "
                     f"{samples[-1]['state_mb']:.1f} MB")
    lines.append(listing_line)
    ok_total = sum(stats.ok.values())
    lines.append(f"requests: {stats.total} ({stats.total / max(1.0, load_s):.1f}/s), {ok_total} as expected 2xx/404; "
                 f"expected non-2xx: " + (", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(stats.expected.items()))
                                          or "none"))
    lines.append(f"{'kind':<20} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>1s':>5} {'>5s':>4} {'errors':>6}")
    for kind in KINDS:
        lat = stats.lat.get(kind, [])
        if not lat:
            continue
        errs = sum(n for (k2, _), n in stats.errors.items() if k2 == kind)
        lines.append(f"{kind:<20} {len(lat):>7} {1000 * pct(lat, 0.5):>8.1f} {1000 * pct(lat, 0.99):>8.1f} "
                     f"{1000 * max(lat):>8.1f} {sum(x > 1 for x in lat):>5} {sum(x > 5 for x in lat):>4} {errs:>6}")
    n_err = stats.n_errors()
    lines.append("unexpected errors: " + (f"{n_err} (" + ", ".join(f"{k} {s}: {n}" for (k, s), n in
                                                                  sorted(stats.errors.items(), key=str)) + ")"
                                          if n_err else "0"))
    lines += [f"  {e}" for e in stats.first_errors]
    n_verify = len(stats.lat.get("verify_deleted", []))
    if stats.verify_race:
        warns.append(f"verify-deleted answered NOT deleted ({RACE_REASON!r}, no trace of the fact itself) for "
                     f"{stats.verify_race} of {n_verify} verifications under concurrent fact deletes; each passed "
                     f"when re-run with adds and deletes paused (the first such reply: {stats.verify_race_example})")
    if n_err:
        problems.append(f"{n_err} unexpected errors")
    lines.append("audits: " + (", ".join(f"{x['id']} at t={x['start']:.0f} s {x['status']}"
                                        + (f" in ~{x['end'] - x['start']:.0f} s" if x['end'] is not None else "")
                                        for x in audits) or "none"))
    if any(x["status"] != "succeeded" for x in audits):
        problems.append("an audit did not succeed")
    srv_bad = {k: v for k, v in server_metrics.items()
               if k.startswith("mnemo_http_requests_total") and 'status="2' not in k and v > 0}
    refused = {k: v for k, v in server_metrics.items() if k.startswith("mnemo_http_refused_total") and v > 0}
    lines.append("server-side non-2xx (/metrics): " + (", ".join(f"{k[len('mnemo_http_requests_total'):]} {v:.0f}"
                                                               for k, v in sorted(srv_bad.items())) or "none")
                 + "; refused by the front: " + (", ".join(f"{k} {v:.0f}" for k, v in refused.items()) or "none"))
    lines.append(memories_note)
    lines.append(stop_line)
    try:
        with open(os.path.join(OUT, "serve.log"), errors="replace") as f:
            slog = f.read().splitlines()
        odd = [l for l in slog if not any(w in l for w in ("no API keys", "listening on", "ready:", "SIGTERM:",
                                                            "stopped"))]
        lines.append(f"serve.log: {len(slog)} lines" + (f", {len(odd)} other than start/stop, e.g.: " +
                                                         " | ".join(odd[:5]) if odd else ""))
    except OSError:
        pass
    lines += [f"WARN: {w}" for w in warns]
    lines += [f"PROBLEM: {p}" for p in problems]
    lines.append(f"result: {'FAIL' if problems else 'PASS'}")
    with open(os.path.join(OUT, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    say("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
