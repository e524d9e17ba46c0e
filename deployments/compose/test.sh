#!/usr/bin/env bash
# `make test-compose`: starts the container stack (docker-compose.yml with
# deployments/compose/test.yml: slotkv's OTLP receiver in Jaeger's place,
# nothing pulled) under a project name of its own with free host ports, waits until every service is healthy, runs
# the checks in e2e/compose (go test -tags compose), and always removes the
# stack with its volumes. When anything fails, the stack's logs are printed
# first.
#
# Needs the images (`make images`, and slotkv/slotkv-otlpsink) and
# bin/grpcurl, bin/slotkv-dataset (`make tools build`); the Makefile target
# builds them.
#
# Environment: SLOTKV_BIN (./bin), SLOTKV_TOKEN (the stack's cluster token,
# empty: open), SLOTKV_COMPOSE_TIMEOUT (seconds to wait for health, 180),
# SLOTKV_COMPOSE_TLS (1: the stack on mutual TLS, deployments/compose/tls.yml,
# with development certificates made for this run; `make test-compose TLS=1`).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

export SLOTKV_BIN=${SLOTKV_BIN:-$root/bin}
export SLOTKV_TOKEN=${SLOTKV_TOKEN:-}
health_timeout=${SLOTKV_COMPOSE_TIMEOUT:-180}

# Compose v2 is a docker plugin; this machine may only have v1's
# docker-compose. Both read COMPOSE_PROJECT_NAME and COMPOSE_FILE.
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "test-compose: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
export SLOTKV_COMPOSE="${compose[*]}"
export COMPOSE_PROJECT_NAME=slotkv-test-$$
# Absolute paths: the Go test runs compose from its own directory.
export COMPOSE_FILE=$root/docker-compose.yml:$root/deployments/compose/test.yml
# The TLS override must stay valid whether or not this run uses it.
"${compose[@]}" -f "$root/docker-compose.yml" -f "$root/deployments/compose/tls.yml" config -q
certs=""
if [ "${SLOTKV_COMPOSE_TLS:-}" = 1 ]; then
  # Certificates of this run only; keys readable by the containers' user.
  certs=$(mktemp -d "${TMPDIR:-/tmp}/slotkv-compose-certs.XXXXXX")
  "$SLOTKV_BIN/slotkvctl" dev-certs --out "$certs" --key-perm 0644 >/dev/null
  export SLOTKV_CERTS_DIR=$certs SLOTKV_TEST_TLS_DIR=$certs
  export COMPOSE_FILE=$COMPOSE_FILE:$root/deployments/compose/tls.yml
fi
# The offline override is what users without a registry run: it must stay
# valid even though the test runs the stack with its trace receiver.
"${compose[@]}" -f "$root/docker-compose.yml" -f "$root/deployments/compose/offline.yml" config -q
# Empty host ports: Docker picks free ones, so the test never collides with
# a stack (or `make run`) already using 8080 and friends.
export SLOTKV_ROUTER_HTTP_PORT= SLOTKV_ROUTER_GRPC_PORT= SLOTKV_ROUTER_RESP_PORT= \
  SLOTKV_MIGRATOR_HTTP_PORT= SLOTKV_MIGRATOR2_HTTP_PORT= SLOTKV_DOWNLOADER_HTTP_PORT= SLOTKV_CONSOLE_HTTP_PORT= \
  SLOTKV_JAEGER_UI_PORT= SLOTKV_JAEGER_OTLP_PORT= SLOTKV_ETCD1_PORT= SLOTKV_ETCD2_PORT= SLOTKV_ETCD3_PORT=

# Stacks of earlier runs whose script is gone (killed before its teardown):
# remove them, with their volumes, so they do not pile up.
for project in $(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | grep '^slotkv-test-[0-9]*$' | sort -u); do
  pid=${project#slotkv-test-}
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "test-compose: removing $project, left by a run that is gone"
    COMPOSE_PROJECT_NAME=$project "${compose[@]}" down -v --remove-orphans --timeout 5 || true
  fi
done

# A missing image would make `up` try to pull it from Docker Hub.
for name in slotkv-storage slotkv-router slotkv-migrator slotkv-downloader slotkv-console slotkv-tools slotkv-otlpsink etcd; do
  ref=slotkv/$name:${SLOTKV_IMAGE_TAG:-dev}
  if ! docker image inspect "$ref" >/dev/null 2>&1; then
    echo "test-compose: image $ref is missing; run 'make images'" >&2
    exit 1
  fi
done

ok=0
finish() {
  local code=$?
  trap - EXIT INT TERM
  if [ "$ok" != 1 ]; then
    echo "test-compose: FAILED (exit $code); logs of $COMPOSE_PROJECT_NAME:" >&2
    "${compose[@]}" ps >&2 || true
    "${compose[@]}" logs --no-color --tail=300 >&2 || true
  fi
  echo "test-compose: removing $COMPOSE_PROJECT_NAME and its volumes"
  "${compose[@]}" down -v --remove-orphans --timeout 20 || true
  [ -n "$certs" ] && rm -rf "$certs"
  if [ "$ok" = 1 ]; then exit 0; fi
  exit $((code == 0 ? 1 : code))
}
trap finish EXIT
trap 'exit 130' INT TERM # through finish

start=$SECONDS
# up returns once the depends_on conditions hold: storage healthy, then
# bootstrap done; router, migrator, downloader and console are only started.
"${compose[@]}" up -d

# Wait until every container that has a health check is healthy.
deadline=$((SECONDS + health_timeout))
while :; do
  pending=()
  for id in $("${compose[@]}" ps -q); do
    st=$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
    case ${st#* } in
    healthy | exited) ;; # exited: the one-shot bootstrap (up checked its exit code)
    unhealthy) echo "test-compose: ${st% *} is unhealthy" >&2; exit 1 ;;
    *) pending+=("$st") ;;
    esac
  done
  [ ${#pending[@]} -eq 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "test-compose: not healthy after ${health_timeout}s: ${pending[*]}" >&2
    exit 1
  fi
  sleep 1
done
echo "test-compose: stack healthy after $((SECONDS - start))s"

port() { "${compose[@]}" port "$1" "$2"; }
SLOTKV_TEST_ROUTER_HTTP=$(port router 8080)
SLOTKV_TEST_ROUTER_GRPC=$(port router 7000)
SLOTKV_TEST_ROUTER_RESP=$(port router 6379)
SLOTKV_TEST_MIGRATOR_HTTP=$(port migrator 8070)
SLOTKV_TEST_MIGRATOR2_HTTP=$(port migrator2 8070)
SLOTKV_TEST_DOWNLOADER_HTTP=$(port downloader 8090)
SLOTKV_TEST_CONSOLE_HTTP=$(port console 8060)
SLOTKV_TEST_TRACES_HTTP=$(port jaeger 16686)
SLOTKV_TEST_STORAGE_RESP=storage1:6379=$(port storage1 6379),storage2:6379=$(port storage2 6379),storage3:6379=$(port storage3 6379)
export SLOTKV_TEST_ROUTER_HTTP SLOTKV_TEST_ROUTER_GRPC SLOTKV_TEST_ROUTER_RESP SLOTKV_TEST_MIGRATOR_HTTP SLOTKV_TEST_MIGRATOR2_HTTP \
  SLOTKV_TEST_DOWNLOADER_HTTP SLOTKV_TEST_CONSOLE_HTTP SLOTKV_TEST_TRACES_HTTP SLOTKV_TEST_STORAGE_RESP
echo "test-compose: router $SLOTKV_TEST_ROUTER_HTTP (gRPC $SLOTKV_TEST_ROUTER_GRPC, RESP $SLOTKV_TEST_ROUTER_RESP), migrator $SLOTKV_TEST_MIGRATOR_HTTP, downloader $SLOTKV_TEST_DOWNLOADER_HTTP, console $SLOTKV_TEST_CONSOLE_HTTP, traces $SLOTKV_TEST_TRACES_HTTP"

go test -tags compose -count=1 -v -timeout 10m ./e2e/compose/
ok=1
