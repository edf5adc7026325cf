#!/usr/bin/env python3
"""Kill campaign through HTTP (bench/crash-campaign.sh runs this; python3 standard library only).

One state under data/crash-campaign/state (mnemo init, default model, no datastore). Each round: load on
`mnemo serve` (THREADS client threads mixing fact adds, deletes of acknowledged facts and completions; on
every 20th round, counting from the 7th, a small audit POST /v1/audits) for a random 0.2-1.5 s, then SIGKILL
while requests are in flight; every FSCK_EVERY rounds `mnemo fsck --json` on the killed state; restart, time
to /health 200, then list every fact (GET /v1/facts, pages of 10,000) and compare with the ledger:

  acked add     2xx with its id: must be present with its text until a delete of it is attempted
  acked delete  2xx: must never be listed again
  unknown       no reply (the kill cut it) or a non-2xx reply: may or may not have happened; resolved by the
                listing after the restart (a present fact whose delete was cut is held to "present" from then
                on, an absent one to "deleted"; a cut add found by its unique text becomes an acked fact)
  lost          a fact that must be present is missing (or a delete of it answered 404)
  resurrected   an acknowledged delete listed again
  phantom       a listed fact whose text no add of the campaign sent (an invented or reused id)

and the searched segment after recovery (GET /metrics mnemo_fact_entries) must hold exactly the listed
facts' entries (tokens - 1 each), so a deleted fact's keys that came back with a snapshot would show.

Every FSCK_EVERY rounds and at the end the action log (`mnemo log --json --all --action facts`) must agree
with the listing; the restarted server must have removed every killed audit's scratch copy; at the end a few
acknowledged deletes get POST /v1/facts/{id}/verify-deleted with their text, the server is stopped with
SIGTERM and fsck runs once more. Everything the client learns is appended (and flushed) to
data/crash-campaign/ledger.jsonl before it counts; per-round lines go to rounds.txt, the server's stderr to
serve.log, the summary to summary.txt. Exit 1 on any lost, resurrected or phantom fact, an entries
mismatch, a failed fsck, check or verify-deleted, or a server that does not come back.

Usage: bench/crash-campaign.py [--rounds N] [--port P] [--threads T] [--fsck-every K] [--seed S]
"""
import argparse
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
# A copy of the binary the script starts with (bench/crash-campaign.sh makes it), so a rebuild of build/
# during a long campaign cannot be exec'd half-written.
MNEMO = os.environ.get("MNEMO_BINARY", os.path.join(ROOT, "build", "mnemo"))
MODEL = os.path.join(ROOT, "data", "models", "default")
OUT = os.path.join(ROOT, "data", "crash-campaign")
STATE = os.path.join(OUT, "state")
WORDS = ("harbour anchor lantern meadow quill ember saffron tundra violet willow zephyr cobalt falcon "
         "granite hazel indigo juniper kestrel lagoon marble nectar orchid pebble quartz raven sorrel "
         "thistle umber velvet walnut").split()
AUDIT_BODY = {"canaries": 2, "references": 31, "repetitions": [1, 4], "members": 40, "extraction_prefixes": [2, 4],
              "extraction_samples": 10, "forgetting_added": [0, 20], "finetune_steps": 0, "memory_capacity": 0,
              "datastore_documents": 0}
LIVE_LOW, LIVE_HIGH = 1000, 1500  # adds outnumber deletes below LOW, deletes outnumber adds above HIGH (< 2,000 live)


def now():
    return time.monotonic()


class Ledger:
    """Append-only JSON lines, flushed per record (fsynced at each kill)."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, **rec):
        line = json.dumps(rec, separators=(",", ":"))
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()

    def sync(self):
        with self.lock:
            self.f.flush()
            os.fsync(self.f.fileno())


class Model:
    """What the client knows. Guarded by lock while load threads run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.live = {}          # id -> text: must be present
        self.live_list = []     # ids in live, for random choice (lazy deletion)
        self.pend_del = {}      # id -> text: a delete was sent without a 2xx
        self.deleted = {}       # id -> text: delete acknowledged (or resolved as done)
        self.pend_add = {}      # text -> round: an add was sent without a 2xx
        self.sent_texts = set()
        self.lost_ids = set()
        self.resurrected_ids = set()
        self.phantom_ids = set()
        self.wrong_text_ids = set()

    def add_live(self, fid, text):
        self.live[fid] = text
        self.live_list.append(fid)

    def pick_for_delete(self, rng):
        # Lazy deletion from live_list: compact when it holds too many stale ids.
        if len(self.live_list) > 2 * len(self.live) + 64:
            self.live_list = [i for i in self.live_list if i in self.live]
        for _ in range(8):
            if not self.live_list:
                return None
            k = rng.randrange(len(self.live_list))
            fid = self.live_list[k]
            self.live_list[k] = self.live_list[-1]
            self.live_list.pop()
            if fid in self.live:
                return fid
        return None


class Stats:
    def __init__(self):
        self.c = {}
        self.lock = threading.Lock()

    def inc(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def get(self, key):
        return self.c.get(key, 0)


class Server:
    def __init__(self, port, log_path):
        self.port = port
        self.log_path = log_path
        self.proc = None

    def start(self, label):
        log = open(self.log_path, "ab")
        log.write(f"==== {label} {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        cmd = ["nice", "-n", "5", MNEMO, "serve", "--state", STATE, "--port", str(self.port), "--workers", "1",
               "--queue", "16", "--http-threads", "4"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
        log.close()

    def wait_ready(self, timeout=180.0):
        t0 = now()
        while now() - t0 < timeout:
            if self.proc.poll() is not None:
                return None
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return now() - t0
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def term(self, timeout=60):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return "killed after SIGTERM timeout"


def http_json(port, method, path, body=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")
    finally:
        c.close()


def http_text(port, path, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


class Client(threading.Thread):
    """One load thread: adds, deletes and completions on a keep-alive connection until stop is set."""

    def __init__(self, idx, rnd, port, model, ledger, stats, stop, inflight, rng, model_id):
        super().__init__(daemon=True)
        self.idx, self.rnd, self.port = idx, rnd, port
        self.model, self.ledger, self.stats, self.stop = model, ledger, stats, stop
        self.inflight, self.rng, self.model_id = inflight, rng, model_id
        self.conn = None
        self.i = 0

    def send(self, method, path, body):
        """(status, json) on a reply; ("refused", None) if it never reached the server; ("cut", msg) if
        it was sent (or may have been) and no reply came."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.connect()
            except OSError:
                self.conn = None
                return "refused", None
        with self.inflight[1]:
            self.inflight[0] += 1
        try:
            data = json.dumps(body) if body is not None else None
            self.conn.request(method, path, body=data,
                              headers={"Content-Type": "application/json"} if data else {})
            r = self.conn.getresponse()
            raw = r.read()
            if r.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, None
        except (OSError, http.client.HTTPException) as e:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
            return "cut", type(e).__name__
        finally:
            with self.inflight[1]:
                self.inflight[0] -= 1

    def run(self):
        m, rng = self.model, self.rng
        while not self.stop.is_set():
            with m.lock:
                n = len(m.live)
            add_share = 0.65 if n < LIVE_LOW else (0.3 if n > LIVE_HIGH else 0.5)
            x = rng.random()
            if x < 0.25:
                self.completion()
            elif x < 0.25 + 0.75 * add_share or n == 0:
                self.add()
            else:
                self.delete()

    def add(self):
        self.i += 1
        text = f"campaign fact r{self.rnd} t{self.idx} i{self.i} {self.rng.choice(WORDS)} {self.rng.randrange(10**6)}"
        with self.model.lock:
            self.model.sent_texts.add(text)
            self.model.pend_add[text] = self.rnd
        self.ledger.write(ev="add_try", r=self.rnd, text=text)
        st, body = self.send("POST", "/v1/facts", {"text": text})
        if st == "refused":
            with self.model.lock:
                del self.model.pend_add[text]
            self.ledger.write(ev="add_not_sent", text=text)
            self.stats.inc("refused")
            return
        if isinstance(st, int) and 200 <= st < 300 and isinstance(body, dict) and isinstance(body.get("id"), int):
            fid = body["id"]
            with self.model.lock:
                del self.model.pend_add[text]
                self.model.add_live(fid, text)
            self.ledger.write(ev="add_ack", id=fid, text=text)
            self.stats.inc("add_ack")
            self.stats.inc("round_add_ack")
        else:
            self.ledger.write(ev="add_unknown", text=text, why=str(st))
            self.stats.inc("add_unknown")
            self.stats.inc("round_add_unknown")
            if st != "cut":
                self.stats.inc(f"http_{st}")

    def delete(self):
        with self.model.lock:
            fid = self.model.pick_for_delete(self.rng)
            if fid is None:
                return
            text = self.model.live.pop(fid)
            self.model.pend_del[fid] = text
        self.ledger.write(ev="del_try", id=fid)
        st, body = self.send("DELETE", f"/v1/facts/{fid}", None)
        if st == "refused":
            with self.model.lock:
                del self.model.pend_del[fid]
                self.model.add_live(fid, text)
            self.ledger.write(ev="del_not_sent", id=fid)
            self.stats.inc("refused")
            return
        if isinstance(st, int) and 200 <= st < 300:
            with self.model.lock:
                del self.model.pend_del[fid]
                self.model.deleted[fid] = text
            self.ledger.write(ev="del_ack", id=fid)
            self.stats.inc("del_ack")
            self.stats.inc("round_del_ack")
        elif st == 404:
            # Only this thread ever deletes this id: a 404 means an acknowledged fact had vanished.
            with self.model.lock:
                del self.model.pend_del[fid]
                self.model.deleted[fid] = text
                self.model.lost_ids.add(fid)
            self.ledger.write(ev="del_404_LOST", id=fid, body=body)
            self.stats.inc("lost")
            print(f"LOST: DELETE /v1/facts/{fid} answered 404 for an acknowledged fact: {body}", flush=True)
        else:
            self.ledger.write(ev="del_unknown", id=fid, why=str(st))
            self.stats.inc("del_unknown")
            self.stats.inc("round_del_unknown")
            if st != "cut":
                self.stats.inc(f"http_{st}")

    def completion(self):
        prompt = f"campaign fact r{self.rng.randrange(max(1, self.rnd))} t{self.rng.randrange(4)}"
        st, _ = self.send("POST", "/v1/completions",
                          {"model": self.model_id, "prompt": prompt, "max_tokens": 8, "temperature": 0.8})
        if isinstance(st, int) and 200 <= st < 300:
            self.stats.inc("completions_ok")
            self.stats.inc("round_completions")
        elif st == "cut":
            self.stats.inc("completions_cut")
        elif st != "refused":
            self.stats.inc(f"http_{st}")


def list_all_facts(port, tokens=None):
    """Every fact through GET /v1/facts pages; returns ({id: text}, total reported). With a list `tokens`,
    appends each fact's token count."""
    facts, after, total = {}, 0, None
    while True:
        st, body = http_json(port, "GET", f"/v1/facts?limit=10000&after={after}")
        if st != 200 or not isinstance(body, dict):
            raise RuntimeError(f"GET /v1/facts after={after}: {st} {body}")
        if total is None:
            total = body.get("total")
        for f in body["data"]:
            facts[f["id"]] = f["text"]
            if tokens is not None:
                tokens.append(f["tokens"])
        nxt = body.get("next_after")
        if nxt is None:
            return facts, total
        after = nxt


def check(port, model, ledger, stats, rnd):
    """Compares the listing with the model and resolves unknown outcomes. Returns a dict of this check."""
    tokens = []
    facts, total = list_all_facts(port, tokens)
    res = {"listed": len(facts), "lost": 0, "resurrected": 0, "phantom": 0, "wrong_text": 0,
           "add_happened": 0, "add_not": 0, "del_happened": 0, "del_not": 0}
    if total != len(facts):
        res["total_mismatch"] = [total, len(facts)]
        stats.inc("total_mismatch")
    # The searched segment after recovery: a fact of n tokens has n - 1 entries (docs/ARCHITECTURE.md).
    st, text = http_text(port, "/metrics")
    seg = None
    for line in text.splitlines() if st == 200 else []:
        if line.startswith("mnemo_fact_entries "):
            seg = int(float(line.split()[1]))
    if seg != sum(t - 1 for t in tokens):
        res["entries_mismatch"] = [seg, sum(t - 1 for t in tokens)]
        stats.inc("entries_mismatch")
        print(f"ENTRIES MISMATCH after kill {rnd}: the segment holds {seg} fact entries, the listed facts "
              f"{sum(t - 1 for t in tokens)}", flush=True)
    for fid, text in list(model.live.items()):
        if fid not in facts:
            res["lost"] += 1
            model.lost_ids.add(fid)
            del model.live[fid]
            ledger.write(ev="LOST", r=rnd, id=fid, text=text)
            print(f"LOST: fact {fid} ({text!r}) acknowledged, never deleted, missing after kill {rnd}", flush=True)
        elif facts[fid] != text and fid not in model.wrong_text_ids:
            res["wrong_text"] += 1
            model.wrong_text_ids.add(fid)
            ledger.write(ev="WRONG_TEXT", r=rnd, id=fid, text=text, listed=facts[fid])
            print(f"WRONG TEXT: fact {fid}: acked {text!r}, listed {facts[fid]!r}", flush=True)
    for fid, text in list(model.pend_del.items()):
        del model.pend_del[fid]
        if fid in facts:
            res["del_not"] += 1
            model.add_live(fid, text)
        else:
            res["del_happened"] += 1
            model.deleted[fid] = text
        ledger.write(ev="del_resolved", id=fid, happened=fid not in facts)
    by_text = {t: i for i, t in facts.items()}
    for text in list(model.pend_add):
        del model.pend_add[text]
        fid = by_text.get(text)
        if fid is not None and fid not in model.live and fid not in model.deleted:
            res["add_happened"] += 1
            model.add_live(fid, text)
        else:
            res["add_not"] += 1
        ledger.write(ev="add_resolved", text=text, id=fid)
    for fid, text in facts.items():
        if fid in model.deleted:
            if fid not in model.resurrected_ids:
                res["resurrected"] += 1
                model.resurrected_ids.add(fid)
                ledger.write(ev="RESURRECTED", r=rnd, id=fid, text=text)
                print(f"RESURRECTED: fact {fid} ({text!r}) deleted with a 2xx, listed after kill {rnd}", flush=True)
        elif fid not in model.live and fid not in model.phantom_ids:
            res["phantom"] += 1
            model.phantom_ids.add(fid)
            ledger.write(ev="PHANTOM", r=rnd, id=fid, text=text)
            print(f"PHANTOM: fact {fid} ({text!r}) listed but no add sent it (or its id)", flush=True)
    for k in ("lost", "resurrected", "phantom", "wrong_text"):
        stats.inc(k, res[k])
    for k in ("add_happened", "add_not", "del_happened", "del_not"):
        stats.inc("unknown_" + k, res[k])
    ledger.write(ev="check", r=rnd, **res)
    return res


def run_fsck(label):
    t0 = now()
    p = subprocess.run([MNEMO, "fsck", "--state", STATE, "--json"], capture_output=True, text=True, cwd=ROOT)
    secs = now() - t0
    try:
        j = json.loads(p.stdout)
        ok = p.returncode == 0 and j.get("consistent") is True
    except ValueError:
        j, ok = None, False
    line = (f"fsck ({label}): {'clean' if ok else 'FAILED'} rc {p.returncode} {secs:.1f}s" +
            (f" facts {j.get('facts')} replayed {j.get('replayed_changes')} chunks_rebuilt {j.get('chunks_rebuilt')}"
             f" snapshot_problem {j.get('snapshot_problem')!r}" if j else f" {p.stdout.strip()} {p.stderr.strip()}"))
    return ok, line, (p.stdout.strip() + " " + p.stderr.strip()).strip()


def log_check(model, listed):
    """The action log (read beside the server) against the listing and the acknowledgements."""
    p = subprocess.run([MNEMO, "log", "--state", STATE, "--json", "--all", "--action", "facts"], capture_output=True,
                       text=True, cwd=ROOT)
    if p.returncode != 0:
        return False, f"mnemo log failed rc {p.returncode}: {p.stderr.strip()}"
    adds, dels = set(), set()
    for line in p.stdout.splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        ids = {int(i) for i in e.get("ids", []) if str(i).isdigit()}
        if e["action"] == "facts.add":
            adds |= ids
        elif e["action"] == "facts.delete":
            dels |= ids
    problems = []
    if adds - dels != set(listed):
        problems.append(f"log live {len(adds - dels)} != listed {len(listed)} "
                        f"(log only {sorted(adds - dels - set(listed))[:5]}, listed only {sorted(set(listed) - (adds - dels))[:5]})")
    acked_adds = set(model.live) | set(model.deleted)
    if not acked_adds <= adds:
        problems.append(f"acked adds missing from the log: {sorted(acked_adds - adds)[:5]}")
    if not set(model.deleted) - model.resurrected_ids <= dels:
        problems.append(f"acked deletes missing from the log: {sorted(set(model.deleted) - dels)[:5]}")
    return not problems, "; ".join(problems) or f"log agrees ({len(adds)} adds, {len(dels)} deletes)"


def audit_scratch_dirs():
    d = os.path.join(STATE, "audits")
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, e, "scratch") for e in sorted(os.listdir(d)) if os.path.isdir(os.path.join(d, e, "scratch"))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--port", type=int, default=8093)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--fsck-every", type=int, default=50)
    ap.add_argument("--audit-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--verify-deleted", type=int, default=3, help="acknowledged deletes verified at the end")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int(time.time()) % 1000000
    rng = random.Random(seed)

    for path, what in ((MNEMO, "the mnemo binary"), (os.path.join(MODEL, "config.json"), "the default model")):
        if not os.path.exists(path):
            sys.exit(f"crash-campaign: {what} is missing ({path})")
    try:
        http_json(a.port, "GET", "/health", timeout=1)
        sys.exit(f"crash-campaign: something already listens on port {a.port}")
    except OSError:
        pass

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    p = subprocess.run([MNEMO, "init", "--state", STATE, "--model", MODEL, "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"crash-campaign: mnemo init failed: {p.stderr}")
    ledger = Ledger(os.path.join(OUT, "ledger.jsonl"))
    rounds_log = open(os.path.join(OUT, "rounds.txt"), "w", buffering=1)
    model, stats = Model(), Stats()
    server = Server(a.port, os.path.join(OUT, "serve.log"))
    problems, fsck_lines, ready_times = [], [], []
    audits_started = audits_killed = scratch_left = 0
    t_start = now()
    ledger.write(ev="campaign", seed=seed, rounds=a.rounds, threads=a.threads)

    def say(line):
        print(line, flush=True)
        rounds_log.write(line + "\n")

    def start_server(label):
        for attempt in range(3):
            server.start(label + (f" (retry {attempt})" if attempt else ""))
            t = server.wait_ready()
            if t is not None:
                return t
            rc = server.proc.poll()
            server.kill()
            stats.inc("start_failures")
            problems.append(f"{label}: server did not become ready (exit {rc}); see serve.log")
            say(f"  server did not become ready ({label}, exit {rc}); retrying in 1 s")
            time.sleep(1)
        return None

    say(f"crash campaign: {a.rounds} kills, port {a.port}, {a.threads} client threads, seed {seed}, state {STATE}")
    if start_server("initial start") is None:
        sys.exit("crash-campaign: the server does not start; see data/crash-campaign/serve.log")
    st, body = http_json(a.port, "GET", "/v1/models")
    model_id = body["data"][0]["id"] if st == 200 else "default"

    ok_all = True
    for rnd in range(1, a.rounds + 1):
        for k in ("round_add_ack", "round_add_unknown", "round_del_ack", "round_del_unknown", "round_completions"):
            stats.c[k] = 0
        stop = threading.Event()
        inflight = [0, threading.Lock()]
        clients = [Client(i, rnd, a.port, model, ledger, stats, stop, inflight, random.Random(rng.random()), model_id)
                   for i in range(a.threads)]
        audit_note = ""
        load_s = rng.uniform(0.2, 1.5)
        t_load = now()
        for c in clients:
            c.start()
        if a.audit_every > 0 and rnd % a.audit_every == 7 % a.audit_every:
            try:
                st, body = http_json(a.port, "POST", "/v1/audits", AUDIT_BODY, timeout=10)
                audit_note = f" audit {st}"
                if st == 202:
                    audits_started += 1
                    ledger.write(ev="audit_start", r=rnd, id=body.get("id"))
            except (OSError, http.client.HTTPException) as e:
                audit_note = f" audit {type(e).__name__}"
        time.sleep(max(0.0, load_s - (now() - t_load)))
        with inflight[1]:
            in_flight_at_kill = inflight[0]
        server.kill()
        stop.set()
        for c in clients:
            c.join(60)
        ledger.write(ev="kill", r=rnd, in_flight=in_flight_at_kill)
        ledger.sync()
        scratch = audit_scratch_dirs()
        if scratch:
            audits_killed += 1
            audit_note += " (killed mid-run)"
        fsck_note = ""
        if rnd % a.fsck_every == 0 or rnd == a.rounds:
            ok, line, raw = run_fsck(f"after kill {rnd}")
            fsck_lines.append(line)
            fsck_note = " fsck ok" if ok else " FSCK FAILED"
            if not ok:
                problems.append(line + " :: " + raw)
        ready = start_server(f"restart after kill {rnd}")
        if ready is None:
            problems.append(f"server did not come back after kill {rnd}")
            ok_all = False
            break
        ready_times.append(ready)
        left = audit_scratch_dirs()
        if left:
            scratch_left += len(left)
            problems.append(f"after kill {rnd} the restarted server kept audit scratch copies: {left}")
        try:
            res = check(a.port, model, ledger, stats, rnd)
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            problems.append(f"check after kill {rnd} failed: {e}")
            stats.inc("check_failures")
            say(f"round {rnd}: CHECK FAILED: {e}")
            continue
        log_note = ""
        if rnd % a.fsck_every == 0:
            ok, msg = log_check(model, list_all_facts(a.port)[0])
            log_note = " log ok" if ok else " LOG MISMATCH"
            if not ok:
                problems.append(f"action log after kill {rnd}: {msg}")
        s = stats
        bad = "".join(f" {k.upper()} {res[k]}" for k in ("lost", "resurrected", "phantom", "wrong_text") if res[k])
        for k in ("entries_mismatch", "total_mismatch"):
            if k in res:
                bad += f" {k.upper()} {res[k]}"
                problems.append(f"after kill {rnd}: {k} {res[k]}")
        say(f"round {rnd}/{a.rounds}: load {load_s:.2f}s +{s.get('round_add_ack')}/{s.get('round_add_unknown')}? "
            f"-{s.get('round_del_ack')}/{s.get('round_del_unknown')}? cmpl {s.get('round_completions')} "
            f"inflight {in_flight_at_kill}{audit_note}{fsck_note} | ready {ready:.2f}s listed {res['listed']} "
            f"unknown add {res['add_happened']}y/{res['add_not']}n del {res['del_happened']}y/{res['del_not']}n"
            f"{log_note}{bad or ' ok'}")

    # The end: log check, verify-deleted on a few acknowledged deletes, a clean stop, fsck.
    verify_lines = []
    if server.proc is not None and server.proc.poll() is None:
        try:
            listed, _ = list_all_facts(a.port)
            ok, msg = log_check(model, listed)
            verify_lines.append(f"action log: {msg}")
            if not ok:
                problems.append(f"action log at the end: {msg}")
            population = sorted(set(model.deleted) - model.resurrected_ids)
            sample = rng.sample(population, min(a.verify_deleted, len(population)))
            for fid in sample:
                st, body = http_json(a.port, "POST", f"/v1/facts/{fid}/verify-deleted",
                                     {"text": model.deleted[fid]}, timeout=300)
                passed = st == 200 and isinstance(body, dict) and body.get("passed") is True
                verify_lines.append(f"verify-deleted {fid}: {st} {body.get('verdict') if isinstance(body, dict) else body}")
                if not passed:
                    problems.append(f"verify-deleted {fid}: {st} {body}")
                    stats.inc("verify_failures")
            for fid in rng.sample(sorted(model.deleted), min(5, len(model.deleted))):
                st, body = http_json(a.port, "GET", f"/v1/facts/{fid}")
                if st != 404:
                    problems.append(f"GET /v1/facts/{fid} of an acknowledged delete: {st} {body}")
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            problems.append(f"final checks failed: {e}")
        rc = server.term()
        verify_lines.append(f"SIGTERM stop: exit {rc}")
        if rc != 0:
            problems.append(f"the server's SIGTERM stop exited {rc}")
        ok, line, raw = run_fsck("after SIGTERM stop")
        fsck_lines.append(line)
        if not ok:
            problems.append(line + " :: " + raw)
    else:
        server.kill()

    total_s = now() - t_start
    kills = len(ready_times)
    s = stats
    fsck_ok = all("clean" in l for l in fsck_lines)
    failed = (s.get("lost") or s.get("resurrected") or s.get("phantom") or s.get("wrong_text") or not fsck_ok or
              problems or not ok_all)
    ready_mean = sum(ready_times) / len(ready_times) if ready_times else float("nan")
    http_errors = ", ".join(f"{k[5:]}: {v}" for k, v in sorted(s.c.items()) if k.startswith("http_")) or "none"
    summary = [
        f"crash campaign (bench/crash-campaign.sh), {time.strftime('%Y-%m-%d %H:%M:%S')}, seed {seed}",
        f"kills: {kills} of {a.rounds}, {a.threads} client threads, server --workers 1 --queue 16 --http-threads 4",
        f"acked adds: {s.get('add_ack')}, acked deletes: {s.get('del_ack')}, completions: {s.get('completions_ok')} "
        f"(+{s.get('completions_cut')} cut)",
        f"unknown: {s.get('add_unknown') + s.get('del_unknown')} (adds {s.get('add_unknown')}: "
        f"{s.get('unknown_add_happened')} happened, {s.get('unknown_add_not')} not; deletes {s.get('del_unknown')}: "
        f"{s.get('unknown_del_happened')} happened, {s.get('unknown_del_not')} not); non-2xx replies: {http_errors}",
        f"lost: {s.get('lost')}, resurrected: {s.get('resurrected')}, phantom: {s.get('phantom')}, "
        f"wrong text: {s.get('wrong_text')}; segment entries != listed facts' entries: {s.get('entries_mismatch')} "
        f"times; GET /v1/facts total != listed: {s.get('total_mismatch')} times",
        f"live facts at the end: {len(model.live)}, deleted: {len(model.deleted)}",
        f"audits: {audits_started} started, {audits_killed} killed mid-run, scratch copies left after a restart: "
        f"{scratch_left}",
        *fsck_lines,
        *verify_lines,
        f"restart to ready: mean {ready_mean:.2f} s, max {max(ready_times, default=float('nan')):.2f} s; "
        f"start failures: {s.get('start_failures')}",
        f"total time: {total_s:.1f} s, {total_s / max(1, kills):.2f} s per round",
        *(f"PROBLEM: {p}" for p in problems),
        f"result: {'FAIL' if failed else 'PASS'}",
    ]
    with open(os.path.join(OUT, "summary.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    print("\n".join(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
