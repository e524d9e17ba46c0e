#!/usr/bin/env bash
# redis-benchmark against slotkv, in one run: the router's RESP (proxy mode),
# the storage nodes' RESP with --cluster (cluster mode), and a redis-server
# started here on the same machine as the yardstick. Prints requests/s per
# test and the ratio of each slotkv mode to redis-server. `make bench` runs
# it; installs Debian's redis-tools and redis-server when missing.
#
#   SLOTKV_BIN (./bin, with etcd: make etcd), REDIS_BENCH_ETCD_PORT
#   (23790; the peer port is the next one), REDIS_BENCH_N (200000 requests per test),
#   REDIS_BENCH_TESTS (set,get,incr,mset), REDIS_BENCH_ARGS (-P 16 -c 50)
set -euo pipefail
set -m

BIN=${SLOTKV_BIN:-$(pwd)/bin}
N=${REDIS_BENCH_N:-200000}
TESTS=${REDIS_BENCH_TESTS:-set,get,incr,mset}
read -r -a ARGS <<<"${REDIS_BENCH_ARGS:--P 16 -c 50}"

if ! command -v redis-benchmark >/dev/null || ! command -v redis-server >/dev/null; then
  echo "redis-benchmark or redis-server missing: installing Debian's redis-tools and redis-server" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq redis-tools redis-server >/dev/null
  else
    echo "run as root, or: sudo apt-get install redis-tools redis-server" >&2
    exit 1
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/slotkv-redis-bench.XXXXXX")
pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap stop INT TERM EXIT

# listen FILE KEY: the address a process wrote to its --listen-file.
listen() {
  local f=$1 key=$2
  for _ in $(seq 1 600); do
    if [ -s "$f" ]; then
      sed -n "s/.*\"$key\":\"\\([^\"]*\\)\".*/\\1/p" "$f"
      return
    fi
    sleep 0.05
  done
  echo "no listen file $f; log:" >&2
  tail -20 "$WORK"/*.log >&2
  exit 1
}

# The control plane: an etcd of its own (its ports are fixed: etcd does
# not report a port the kernel chose).
EP=${REDIS_BENCH_ETCD_PORT:-23790}
"$BIN/etcd" --name slotkv-bench --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
  --listen-peer-urls "http://127.0.0.1:$((EP + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((EP + 1))" \
  --initial-cluster "slotkv-bench=http://127.0.0.1:$((EP + 1))" >"$WORK/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  if "$BIN/etcd" healthcheck --url "http://127.0.0.1:$EP/health" >/dev/null 2>&1; then break; fi
  sleep 0.05
done
export SLOTKV_ETCD_ENDPOINTS="http://127.0.0.1:$EP"

# Three storage nodes and a router, every other port chosen by the kernel.
seeds=(); resp=()
for id in n1 n2 n3; do
  "$BIN/slotkv-storage" --node-id "$id" --data-dir "$WORK/$id" --grpc-addr 127.0.0.1:0 \
    --http-addr 127.0.0.1:0 --resp-addr 127.0.0.1:0 --listen-file "$WORK/$id.json" \
    --log-level warn >"$WORK/$id.log" 2>&1 &
  pids+=($!)
done
for id in n1 n2 n3; do
  seeds+=("$(listen "$WORK/$id.json" grpc)")
  resp+=("$(listen "$WORK/$id.json" resp)")
done
seedlist=$(IFS=,; echo "${seeds[*]}")
"$BIN/slotkvctl" bootstrap --storage "$seedlist" >/dev/null
"$BIN/slotkv-router" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
  --resp-addr 127.0.0.1:0 --listen-file "$WORK/router.json" --log-level warn >"$WORK/router.log" 2>&1 &
pids+=($!)
router=$(listen "$WORK/router.json" resp)
for _ in $(seq 1 200); do
  redis-cli -h "${router%:*}" -p "${router##*:}" SET bench:ready 1 >/dev/null 2>&1 && break
  sleep 0.1
done

# redis-server: in memory only, on a port of its own.
rport=$(( (RANDOM % 20000) + 30000 ))
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --dir "$WORK" >"$WORK/redis-server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.05; done

# bench NAME HOST PORT [extra args]: writes "NAME TEST rps" lines (the
# CSV rows of redis-benchmark; --cluster also prints its node list).
bench() {
  local name=$1 host=$2 port=$3; shift 3
  redis-benchmark -h "$host" -p "$port" -t "$TESTS" -n "$N" "${ARGS[@]}" --csv "$@" 2>"$WORK/bench-$name.err" |
    awk -F'","' -v n="$name" '/^"/ && !/^"test"/ { gsub(/"/, "", $1); gsub(/ /, "_", $1); print n, $1, $2 }' >"$WORK/bench-$name.txt"
  if [ ! -s "$WORK/bench-$name.txt" ]; then
    echo "redis-benchmark against $name gave no result:" >&2
    cat "$WORK/bench-$name.err" >&2
    exit 1
  fi
}

echo "redis-benchmark -t $TESTS -n $N ${ARGS[*]} (slotkv: 3 storage nodes and a router on this machine)"
bench redis-server 127.0.0.1 "$rport"
bench router "${router%:*}" "${router##*:}"
bench cluster "${resp[0]%:*}" "${resp[0]##*:}" --cluster
cat "$WORK/bench-redis-server.txt" "$WORK/bench-router.txt" "$WORK/bench-cluster.txt" | awk '
  { rps[$1 " " $2] = $3; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
  END {
    printf "%-16s %14s %14s %14s %14s %14s\n", "test", "redis-server", "router", "router/redis", "nodes", "nodes/redis"
    for (i = 1; i <= n; i++) {
      t = order[i]; r = rps["redis-server " t]; p = rps["router " t]; c = rps["cluster " t]
      printf "%-16s %14.0f %14.0f %14.3f %14.0f %14.3f\n", t, r, p, (r > 0 ? p / r : 0), c, (r > 0 ? c / r : 0)
    }
  }'
