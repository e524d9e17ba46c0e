// Package k8s holds slotkv's Kubernetes manifests: a kustomize base (base/)
// and an example overlay (overlays/example/). It has no code: its tests
// render every kustomization with kustomize's own library, decode each
// resource strictly into the Kubernetes API types, and check the invariants
// the services rely on (probes, security context, disruption budgets,
// stable storage node names, flags that exist) without a cluster.
package k8s
