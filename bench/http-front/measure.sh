#!/bin/bash
# measure.sh MNEMO_BINARY WORKDIR: a tiny model and state (made once), then the attacks and a SIGTERM with
# a half-open connection, against `mnemo serve` with default options and a read key.
set -u
bin=$1; w=$2; here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$w"
if [ ! -d "$w/state" ]; then
  cp /usr/share/common-licenses/GPL-3 "$w/train.txt"
  "$bin" train --corpus "$w/train.txt" --valid "$w/train.txt" --out "$w/model" --config tiny --vocab-size 300 \
      --steps 2 --batch-size 4 --seq-len 32 --quiet && "$bin" init --state "$w/state" --model "$w/model" || exit 1
  echo "read read-key-0123456789" > "$w/keys"
fi
start() {
  "$bin" serve --state "$w/state" --port 0 --api-key-file "$w/keys" --no-log 2> "$w/log" & pid=$!
  port=
  for i in $(seq 300); do
    port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$w/log")
    [ -n "$port" ] && curl -sf "localhost:$port/health" > /dev/null && break; sleep 0.1
  done
}
stop() { kill -TERM $pid; wait $pid; }
for attack in chunked gzip; do  # a fresh server each: freed memory the allocator keeps would hide the next peak
  start; python3 "$here/attacks.py" "$port" "$pid" read-key-0123456789 $attack; stop
done
start; python3 "$here/attacks.py" "$port" "$pid" read-key-0123456789 rest
# A half-open connection (a request line, no end of head), then SIGTERM: how long until the process exits?
rm -f "$w/held"
python3 -c "import socket,time; s=socket.create_connection(('127.0.0.1',$port)); s.sendall(b'GET /health HTTP/1.1\r\n'); open('$w/held','w').close(); time.sleep(60)" & holder=$!
while [ ! -e "$w/held" ]; do sleep 0.05; done; sleep 0.2
t0=$(date +%s.%N); kill -TERM $pid; wait $pid; code=$?; t1=$(date +%s.%N)
echo "SIGTERM with a half-open connection open: exit $code after $(echo "$t1 - $t0" | bc) s"
kill $holder; wait $holder 2>/dev/null
