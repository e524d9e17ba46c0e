#!/usr/bin/env bash
# Local stack for `make run`: 3 storage nodes and the router as processes on
# loopback, data under ./.data/ (kept across runs), the topology bootstrapped
# on first start. Ctrl-C stops everything by pid.
#
# Ports and the token can be changed through the environment:
#   SLOTKV_HOST (127.0.0.1), SLOTKV_ROUTER_GRPC (7000), SLOTKV_ROUTER_HTTP (8080),
#   SLOTKV_DOWNLOADER_GRPC (7010), SLOTKV_DOWNLOADER_HTTP (8090),
#   SLOTKV_MIGRATOR_GRPC (7020), SLOTKV_MIGRATOR_HTTP (8070),
#   SLOTKV_STORAGE_GRPC_BASE (7100 -> 7101..7103), SLOTKV_STORAGE_HTTP_BASE (8100),
#   SLOTKV_DATA (./.data), SLOTKV_TOKEN (empty: open cluster).
set -euo pipefail
# Job control: each child gets its own process group, so Ctrl-C reaches only
# this script, which then stops the children itself (router first).
set -m

BIN=${SLOTKV_BIN:-$(pwd)/bin}
HOST=${SLOTKV_HOST:-127.0.0.1}
DATA=${SLOTKV_DATA:-$(pwd)/.data}
ROUTER_GRPC=${SLOTKV_ROUTER_GRPC:-7000}
ROUTER_HTTP=${SLOTKV_ROUTER_HTTP:-8080}
DL_GRPC=${SLOTKV_DOWNLOADER_GRPC:-7010}
DL_HTTP=${SLOTKV_DOWNLOADER_HTTP:-8090}
MG_GRPC=${SLOTKV_MIGRATOR_GRPC:-7020}
MG_HTTP=${SLOTKV_MIGRATOR_HTTP:-8070}
SG=${SLOTKV_STORAGE_GRPC_BASE:-7100}
SH=${SLOTKV_STORAGE_HTTP_BASE:-8100}
NODES=(n1 n2 n3)
export SLOTKV_TOKEN=${SLOTKV_TOKEN:-}

mkdir -p "$DATA/logs"
pids=()

stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping slotkv (pids ${pids[*]:-none})..."
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  echo "stopped; data kept in $DATA"
}
trap 'stop; exit 0' INT TERM  # Ctrl-C is how the stack is meant to stop
trap stop EXIT

wait_ready() { # name http-addr log
  for _ in $(seq 1 200); do
    if curl -fsS "http://$2/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready on $2; last log lines:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

storage=()
for i in "${!NODES[@]}"; do
  id=${NODES[$i]}
  g="$HOST:$((SG + i + 1))"; h="$HOST:$((SH + i + 1))"
  "$BIN/slotkv-storage" --node-id "$id" --data-dir "$DATA/$id" \
    --grpc-addr "$g" --http-addr "$h" >>"$DATA/logs/$id.log" 2>&1 &
  pids+=($!)
  storage+=("$g")
done
for i in "${!NODES[@]}"; do
  wait_ready "${NODES[$i]}" "$HOST:$((SH + i + 1))" "$DATA/logs/${NODES[$i]}.log"
done

seeds=$(IFS=,; echo "${storage[*]}")
# Safe on every start: a node that holds the same or a newer topology keeps it.
"$BIN/slotkvctl" bootstrap --storage "$seeds"

"$BIN/slotkv-router" --storage "$seeds" --grpc-addr "$HOST:$ROUTER_GRPC" \
  --http-addr "$HOST:$ROUTER_HTTP" >>"$DATA/logs/router.log" 2>&1 &
pids+=($!)
wait_ready router "$HOST:$ROUTER_HTTP" "$DATA/logs/router.log"

# Bulk loads from datasets served on loopback or kept under .data/datasets.
mkdir -p "$DATA/datasets"
"$BIN/slotkv-downloader" --storage "$seeds" --data-dir "$DATA/downloader" \
  --grpc-addr "$HOST:$DL_GRPC" --http-addr "$HOST:$DL_HTTP" \
  --allow-file-urls --allowed-prefixes "http://127.0.0.1:,http://localhost:,file://$DATA/datasets/" \
  >>"$DATA/logs/downloader.log" 2>&1 &
pids+=($!)
wait_ready downloader "$HOST:$DL_HTTP" "$DATA/logs/downloader.log"

"$BIN/slotkv-migrator" --storage "$seeds" --data-dir "$DATA/migrator" \
  --grpc-addr "$HOST:$MG_GRPC" --http-addr "$HOST:$MG_HTTP" >>"$DATA/logs/migrator.log" 2>&1 &
pids+=($!)
wait_ready migrator "$HOST:$MG_HTTP" "$DATA/logs/migrator.log"

auth=""; gauth=""
if [ -n "$SLOTKV_TOKEN" ]; then
  auth=" -H 'Authorization: Bearer $SLOTKV_TOKEN'"
  gauth=" -H 'authorization: Bearer $SLOTKV_TOKEN'"
fi
cat <<MSG

slotkv is running (data in $DATA, logs in $DATA/logs).

  router     gRPC $HOST:$ROUTER_GRPC   REST http://$HOST:$ROUTER_HTTP
  downloader gRPC $HOST:$DL_GRPC   REST http://$HOST:$DL_HTTP
  migrator   gRPC $HOST:$MG_GRPC   REST http://$HOST:$MG_HTTP
$(for i in "${!NODES[@]}"; do echo "  storage ${NODES[$i]} gRPC $HOST:$((SG + i + 1))   REST http://$HOST:$((SH + i + 1))"; done)

Try:
  curl$auth -X PUT http://$HOST:$ROUTER_HTTP/v1/kv/hello -d '{"text":"world"}'
  curl$auth http://$HOST:$ROUTER_HTTP/v1/kv/hello
  curl$auth -X DELETE http://$HOST:$ROUTER_HTTP/v1/kv/hello
  bin/grpcurl -plaintext$gauth -d '{"key":"greeting","text":"hi"}' $HOST:$ROUTER_GRPC slotkv.router.v1.KVService/Put
  bin/grpcurl -plaintext$gauth -d '{"key":"greeting"}' $HOST:$ROUTER_GRPC slotkv.router.v1.KVService/Get
  bin/grpcurl -plaintext$gauth $HOST:$((SG + 1)) slotkv.storage.v1.NodeService/GetNodeInfo
  curl$auth http://$HOST:$((SH + 1))/v1/node
  bin/slotkvctl topology --storage $seeds

Migrate slots 0-1000 from n1 to n2 while traffic flows (progress bar until done):
  bin/slotkvctl migrate --migrator $HOST:$MG_GRPC --source n1 --destination n2 --ranges 0-1000
  curl$auth http://$HOST:$MG_HTTP/v1/migrations

Bulk load (build a dataset, then load it):
  bin/slotkv-dataset gen --records 100000 --value-size 100 --out $DATA/datasets/demo.jsonl
  rm -rf $DATA/datasets/demo && bin/slotkv-dataset build --input $DATA/datasets/demo.jsonl --out $DATA/datasets/demo
  curl$auth -X POST http://$HOST:$DL_HTTP/v1/bulkloads -d '{"manifest_url":"file://$DATA/datasets/demo/manifest.json"}'
  curl$auth http://$HOST:$DL_HTTP/v1/bulkloads
  curl$auth http://$HOST:$ROUTER_HTTP/v1/count

Ctrl-C stops everything.
MSG

# Block until Ctrl-C, or until one process dies (then stop the rest).
wait -n "${pids[@]}" || true
echo "a slotkv process exited; see $DATA/logs" >&2
