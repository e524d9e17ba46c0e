#!/usr/bin/env bash
# Runs slotkvctl inside the cluster, in a one-shot pod that is deleted when
# it ends: the storage nodes' names (slotkv-storage-N.slotkv-storage) and
# etcd resolve only there. The pod mounts the admin token from the Secret
# the router mounts (so the token never leaves the cluster), dials the
# router's etcd (SLOTKV_ETCD_ENDPOINTS), runs the tools image of the
# router's registry and tag, and passes the namespace's restricted Pod
# Security level.
#
#   deployments/k8s/slotkvctl.sh bootstrap --storage slotkv-storage-0.slotkv-storage:7100,slotkv-storage-1.slotkv-storage:7100,slotkv-storage-2.slotkv-storage:7100
#   deployments/k8s/slotkvctl.sh nodes
#
# SLOTKV_NAMESPACE (default slotkv) is the namespace, SLOTKV_TOOLS_IMAGE the
# image (default: the router's, slotkv-router replaced by slotkv-tools).
set -euo pipefail

ns=${SLOTKV_NAMESPACE:-slotkv}
if [ $# -eq 0 ]; then
  echo "usage: $0 SLOTKVCTL-ARGS... (e.g. nodes)" >&2
  exit 2
fi
router_image=$(kubectl -n "$ns" get deployment slotkv-router -o jsonpath='{.spec.template.spec.containers[0].image}')
image=${SLOTKV_TOOLS_IMAGE:-${router_image/slotkv-router/slotkv-tools}}
secret=$(kubectl -n "$ns" get deployment slotkv-router -o jsonpath='{.spec.template.spec.volumes[?(@.name=="tokens")].secret.secretName}')
if [ -z "$secret" ]; then
  echo "$0: the router in namespace $ns mounts no tokens Secret" >&2
  exit 1
fi
# The router's etcd: bootstrap writes the first topology there (the nodes
# install it from their watch), topology and nodes read the records there.
etcd=$(kubectl -n "$ns" get deployment slotkv-router -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="SLOTKV_ETCD_ENDPOINTS")].value}')
etcd_env=""
if [ -n "$etcd" ]; then
  etcd_env=", {\"name\": \"SLOTKV_ETCD_ENDPOINTS\", \"value\": \"$etcd\"}"
fi
name=slotkvctl-$$
# 288 = 0440: readable by the image's user through fsGroup.
overrides=$(cat <<JSON
{"spec": {
  "automountServiceAccountToken": false,
  "enableServiceLinks": false,
  "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                      "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{
    "name": "$name",
    "env": [{"name": "SLOTKV_ADMIN_TOKEN_FILE", "value": "/etc/slotkv/tokens/admin-token"}$etcd_env],
    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]}},
    "volumeMounts": [{"name": "tokens", "mountPath": "/etc/slotkv/tokens", "readOnly": true}]
  }],
  "volumes": [{"name": "tokens", "secret": {"secretName": "$secret", "defaultMode": 288,
                                           "items": [{"key": "admin-token", "path": "admin-token"}]}}]
}}
JSON
)
# The label lets the pod through etcd's NetworkPolicy (slotkvctl's etcd
# commands).
exec kubectl -n "$ns" run "$name" --image="$image" --restart=Never --rm --attach --quiet \
  --labels=app.kubernetes.io/part-of=slotkv \
  --override-type=strategic --overrides="$overrides" \
  --command -- /slotkvctl "$@"
