# Sourced by the bench scripts that serve: start_server PREFIX STATE LOG starts `$PREFIX $MNEMO serve`
# on a free port (PREFIX: empty, or an mpirun command) and waits until /health answers; it sets
# SERVER_JOB (wait on it after kill -TERM) and SERVER_PORT. Fails when the server does not come up.
start_server() {
  $1 $MNEMO serve --state "$2" --port 0 --no-log 2> "$3" &
  SERVER_JOB=$!
  SERVER_PORT=""
  for i in $(seq 600); do
    SERVER_PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$3")
    [ -n "$SERVER_PORT" ] && curl -sf "localhost:$SERVER_PORT/health" >/dev/null && return 0
    sleep 0.2
  done
  echo "the server did not start; its log: $3" >&2
  return 1
}
