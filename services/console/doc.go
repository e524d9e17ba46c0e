// Package console is slotkv-console, the operator's web console: the slot
// map and the nodes, live migrations and bulk loads, and per-node traffic,
// served by a small service of its own.
//
// The console is a client of the other services, never a part of them: it
// reads the topology and the node registrations in etcd, calls their gRPC
// APIs (GetNodeInfo, the migrator's and the downloader's List/Watch RPCs) with the
// admin token it is given, and scrapes the storage nodes' /metrics for
// request latencies. Background loops keep the latest view of each part
// (cluster, traffic, migrations, bulk loads) in a hub; every open page gets
// them as server-sent events from /events, so a browser holds one
// connection however many jobs run, and the services see one watcher per
// job however many browsers are open.
//
// The console finds the cluster in the control plane (pkg/topostore;
// --etcd-endpoints is required): the topology is watched, so
// the slot map shows a migration's commit as soon as etcd has it; the node
// list is the nodes registered under a lease (live) and the topology's
// nodes without a registration (dead: shown as such on the cluster page,
// and listed in the view's "dead"). Each node's figures still come from its
// GetNodeInfo at its registered address.
//
// The pages are hand-written HTML, CSS and a little JavaScript embedded
// with go:embed (no toolchain, no CDN); charts and the slot bar are inline
// SVG drawn by that script. Actions (start, rate, cancel, pause, resume)
// are JSON POSTs to /api/...; a refused call answers with the service's own
// error message, which the page shows as it is.
//
// Auth: when the console has a token (the cluster's --admin-token), every
// page and API needs a session, opened by a login form that takes the admin
// token and kept in an HttpOnly, SameSite=Strict cookie holding a random
// session id: the token is never put in a URL nor given back to the
// browser. Without a token (an open cluster on loopback) no login is asked.
package console
