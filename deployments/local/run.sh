#!/usr/bin/env bash
# Local stack for `make run`: a single-member etcd (the control plane: the
# topology, node registrations, hand-offs), 3 storage nodes, the router,
# downloader, migrator and console as processes on loopback, data under
# ./.data/ (kept across runs), the topology bootstrapped into etcd on first
# start. Ctrl-C stops everything by pid.
#
# Ports and the token can be changed through the environment:
#   SLOTKV_HOST (127.0.0.1), SLOTKV_ROUTER_GRPC (7000), SLOTKV_ROUTER_HTTP (8080),
#   SLOTKV_DOWNLOADER_GRPC (7010), SLOTKV_DOWNLOADER_HTTP (8090),
#   SLOTKV_MIGRATOR_GRPC (7020), SLOTKV_MIGRATOR_HTTP (8070),
#   SLOTKV_CONSOLE_GRPC (7030), SLOTKV_CONSOLE_HTTP (8060, the web console),
#   SLOTKV_STORAGE_GRPC_BASE (7100 -> 7101..7103), SLOTKV_STORAGE_HTTP_BASE (8100),
#   SLOTKV_ROUTER_RESP (6379: Redis protocol, proxy mode),
#   SLOTKV_STORAGE_RESP_BASE (7300 -> 7301..7303: Redis protocol, cluster mode),
#   SLOTKV_ETCD_CLIENT_PORT (2379), SLOTKV_ETCD_PEER_PORT (2380),
#   SLOTKV_DATA (./.data), SLOTKV_TOKEN (empty: open cluster; or
#   SLOTKV_DATA_TOKEN and SLOTKV_ADMIN_TOKEN), SLOTKV_RUN_TLS (1: every
#   service on mutual TLS with the certificates in $SLOTKV_DATA/certs, made
#   with `slotkvctl dev-certs` when missing; `make run TLS=1`).
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
CN_GRPC=${SLOTKV_CONSOLE_GRPC:-7030}
CN_HTTP=${SLOTKV_CONSOLE_HTTP:-8060}
SG=${SLOTKV_STORAGE_GRPC_BASE:-7100}
SH=${SLOTKV_STORAGE_HTTP_BASE:-8100}
ROUTER_RESP=${SLOTKV_ROUTER_RESP:-6379}
SR=${SLOTKV_STORAGE_RESP_BASE:-7300}
ETCD_CLIENT=${SLOTKV_ETCD_CLIENT_PORT:-2379}
ETCD_PEER=${SLOTKV_ETCD_PEER_PORT:-2380}
NODES=(n1 n2 n3)
export SLOTKV_TOKEN=${SLOTKV_TOKEN:-}
# Every slotkv process (and slotkvctl) finds the control plane here.
export SLOTKV_ETCD_ENDPOINTS="http://$HOST:$ETCD_CLIENT"

mkdir -p "$DATA/logs"
pids=()

# TLS: the services read SLOTKV_TLS_* from the environment (serve with the
# node certificate, require client certificates of the development CA,
# dial the storage nodes trusting it); slotkvctl, curl and grpcurl get the
# client certificate.
scheme=http; curl_tls=(); ctl_tls=(); grpcurl_tls="-plaintext"
if [ "${SLOTKV_RUN_TLS:-}" = 1 ]; then
  certs="$DATA/certs"
  if [ ! -f "$certs/ca.crt" ]; then
    "$BIN/slotkvctl" dev-certs --out "$certs"
  fi
  export SLOTKV_TLS_CERT="$certs/node.crt" SLOTKV_TLS_KEY="$certs/node.key"
  export SLOTKV_TLS_CLIENT_CA="$certs/ca.crt" SLOTKV_TLS_CA="$certs/ca.crt"
  scheme=https
  curl_tls=(--cacert "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key")
  ctl_tls=(--tls-ca "$certs/ca.crt" --tls-client-cert "$certs/client.crt" --tls-client-key "$certs/client.key")
  grpcurl_tls="-cacert $certs/ca.crt -cert $certs/client.crt -key $certs/client.key"
fi

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
    if curl -fsS "${curl_tls[@]}" "$scheme://$2/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready on $2; last log lines:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

# The control plane first: every service watches it. Its own process group
# like the rest, stopped last (pids are stopped in reverse).
"$BIN/etcd" --name slotkv-local --data-dir "$DATA/etcd" \
  --listen-client-urls "http://$HOST:$ETCD_CLIENT" --advertise-client-urls "http://$HOST:$ETCD_CLIENT" \
  --listen-peer-urls "http://$HOST:$ETCD_PEER" --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER" \
  --initial-cluster "slotkv-local=http://$HOST:$ETCD_PEER" >>"$DATA/logs/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  if "$BIN/etcd" healthcheck --url "http://$HOST:$ETCD_CLIENT/health" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"$BIN/etcd" healthcheck --url "http://$HOST:$ETCD_CLIENT/health" >/dev/null || {
  echo "etcd did not become healthy on $HOST:$ETCD_CLIENT; last log lines:" >&2
  tail -n 20 "$DATA/logs/etcd.log" >&2
  exit 1
}

storage=()
for i in "${!NODES[@]}"; do
  id=${NODES[$i]}
  g="$HOST:$((SG + i + 1))"; h="$HOST:$((SH + i + 1))"; r="$HOST:$((SR + i + 1))"
  "$BIN/slotkv-storage" --node-id "$id" --data-dir "$DATA/$id" \
    --grpc-addr "$g" --http-addr "$h" --resp-addr "$r" >>"$DATA/logs/$id.log" 2>&1 &
  pids+=($!)
  storage+=("$g")
done
for i in "${!NODES[@]}"; do
  wait_ready "${NODES[$i]}" "$HOST:$((SH + i + 1))" "$DATA/logs/${NODES[$i]}.log"
done

seeds=$(IFS=,; echo "${storage[*]}")
# Safe on every start: once etcd holds a topology, bootstrap says so and
# changes nothing. --storage only names the nodes to bootstrap; every
# service below finds the topology and the nodes in etcd
# (SLOTKV_ETCD_ENDPOINTS).
"$BIN/slotkvctl" bootstrap --storage "$seeds" "${ctl_tls[@]}"

"$BIN/slotkv-router" --grpc-addr "$HOST:$ROUTER_GRPC" \
  --http-addr "$HOST:$ROUTER_HTTP" --resp-addr "$HOST:$ROUTER_RESP" >>"$DATA/logs/router.log" 2>&1 &
pids+=($!)
wait_ready router "$HOST:$ROUTER_HTTP" "$DATA/logs/router.log"

# Bulk loads from datasets served on loopback or kept under .data/datasets.
mkdir -p "$DATA/datasets"
"$BIN/slotkv-downloader" --data-dir "$DATA/downloader" \
  --grpc-addr "$HOST:$DL_GRPC" --http-addr "$HOST:$DL_HTTP" \
  --allow-file-urls --allowed-prefixes "http://127.0.0.1:,http://localhost:,file://$DATA/datasets/" \
  >>"$DATA/logs/downloader.log" 2>&1 &
pids+=($!)
wait_ready downloader "$HOST:$DL_HTTP" "$DATA/logs/downloader.log"

"$BIN/slotkv-migrator" \
  --grpc-addr "$HOST:$MG_GRPC" --http-addr "$HOST:$MG_HTTP" >>"$DATA/logs/migrator.log" 2>&1 &
pids+=($!)
wait_ready migrator "$HOST:$MG_HTTP" "$DATA/logs/migrator.log"

# The web console, a client of all of the above.
"$BIN/slotkv-console" --router "$HOST:$ROUTER_GRPC" \
  --migrator "$HOST:$MG_GRPC" --downloader "$HOST:$DL_GRPC" \
  --router-http "$HOST:$ROUTER_HTTP" --migrator-http "$HOST:$MG_HTTP" --downloader-http "$HOST:$DL_HTTP" \
  --grpc-addr "$HOST:$CN_GRPC" --http-addr "$HOST:$CN_HTTP" >>"$DATA/logs/console.log" 2>&1 &
pids+=($!)
wait_ready console "$HOST:$CN_HTTP" "$DATA/logs/console.log"

# Hints for the message below: the data token on the router's KV API, the
# admin token elsewhere (either may be SLOTKV_TOKEN), and the TLS options.
data_tok=${SLOTKV_DATA_TOKEN:-${SLOTKV_TOKEN:-${SLOTKV_ADMIN_TOKEN:-}}}
admin_tok=${SLOTKV_ADMIN_TOKEN:-${SLOTKV_TOKEN:-}}
dauth=""; aauth=""; gdauth=""; gaauth=""; ctl_auth=""
[ -n "$data_tok" ] && dauth=" -H 'Authorization: Bearer $data_tok'" && gdauth=" -H 'authorization: Bearer $data_tok'"
[ -n "$admin_tok" ] && aauth=" -H 'Authorization: Bearer $admin_tok'" && gaauth=" -H 'authorization: Bearer $admin_tok'" && ctl_auth=" --admin-token $admin_tok"
ctls=""; [ ${#curl_tls[@]} -gt 0 ] && ctls=" ${curl_tls[*]}"
ctl_opts="$ctl_auth"; [ ${#ctl_tls[@]} -gt 0 ] && ctl_opts="$ctl_auth ${ctl_tls[*]}"
# redis-cli: the data token through AUTH (-a), TLS with the client certificate.
rcli="redis-cli -h $HOST"
[ -n "$data_tok" ] && rcli="$rcli --no-auth-warning -a $data_tok"
[ "$scheme" = https ] && rcli="$rcli --tls --cacert $certs/ca.crt --cert $certs/client.crt --key $certs/client.key"
rhint=""; command -v redis-cli >/dev/null || rhint=" (redis-cli: apt-get install redis-tools)"
cat <<MSG

slotkv is running (data in $DATA, logs in $DATA/logs$([ "$scheme" = https ] && echo ", mutual TLS with the certificates in $certs")).

  etcd       http://$HOST:$ETCD_CLIENT (control plane; data in $DATA/etcd)
  router     gRPC $HOST:$ROUTER_GRPC   REST $scheme://$HOST:$ROUTER_HTTP
  downloader gRPC $HOST:$DL_GRPC   REST $scheme://$HOST:$DL_HTTP
  migrator   gRPC $HOST:$MG_GRPC   REST $scheme://$HOST:$MG_HTTP
  console    $scheme://$HOST:$CN_HTTP$([ -n "$admin_tok" ] && echo "   (log in with the admin token)")
$(for i in "${!NODES[@]}"; do echo "  storage ${NODES[$i]} gRPC $HOST:$((SG + i + 1))   REST $scheme://$HOST:$((SH + i + 1))   RESP $HOST:$((SR + i + 1))"; done)
  Redis protocol: proxy mode on the router $HOST:$ROUTER_RESP, cluster mode on the nodes $HOST:$((SR + 1))..$((SR + ${#NODES[@]}))

Try:
  curl$ctls$dauth -X PUT $scheme://$HOST:$ROUTER_HTTP/v1/kv/hello -d '{"text":"world"}'
  curl$ctls$dauth $scheme://$HOST:$ROUTER_HTTP/v1/kv/hello
  curl$ctls$dauth -X DELETE $scheme://$HOST:$ROUTER_HTTP/v1/kv/hello
  bin/grpcurl $grpcurl_tls$gdauth -d '{"key":"greeting","text":"hi"}' $HOST:$ROUTER_GRPC slotkv.router.v1.KVService/Put
  bin/grpcurl $grpcurl_tls$gdauth -d '{"key":"greeting"}' $HOST:$ROUTER_GRPC slotkv.router.v1.KVService/Get
  bin/grpcurl $grpcurl_tls$gaauth $HOST:$((SG + 1)) slotkv.storage.v1.NodeService/GetNodeInfo
  curl$ctls$aauth $scheme://$HOST:$((SH + 1))/v1/node
  bin/slotkvctl topology --etcd-endpoints $SLOTKV_ETCD_ENDPOINTS$ctl_opts
  bin/slotkvctl nodes --etcd-endpoints $SLOTKV_ETCD_ENDPOINTS$ctl_opts

Redis clients$rhint:
  $rcli -p $ROUTER_RESP SET hello world
  $rcli -p $ROUTER_RESP GET hello
  $rcli -c -p $((SR + 1)) GET hello
  $rcli -p $((SR + 1)) CLUSTER SLOTS

Migrate slots 0-1000 from n1 to n2 while traffic flows (progress bar until done):
  bin/slotkvctl migrate --migrator $HOST:$MG_GRPC --source n1 --destination n2 --ranges 0-1000$ctl_opts
  curl$ctls$aauth $scheme://$HOST:$MG_HTTP/v1/migrations

Bulk load (build a dataset, then load it):
  bin/slotkv-dataset gen --records 100000 --value-size 100 --out $DATA/datasets/demo.jsonl
  rm -rf $DATA/datasets/demo && bin/slotkv-dataset build --input $DATA/datasets/demo.jsonl --out $DATA/datasets/demo
  bin/slotkvctl bulkload start --downloader $HOST:$DL_GRPC --manifest file://$DATA/datasets/demo/manifest.json --watch$ctl_opts
  curl$ctls$aauth $scheme://$HOST:$DL_HTTP/v1/bulkloads
  curl$ctls$dauth $scheme://$HOST:$ROUTER_HTTP/v1/count

Ctrl-C stops everything.
MSG

# Block until Ctrl-C, or until one process dies (then stop the rest).
wait -n "${pids[@]}" || true
echo "a slotkv process exited; see $DATA/logs" >&2
