// Command etcd is etcd's own server, built from go.etcd.io/etcd/server/v3 at
// the version pinned in tools/go.mod. That module has no main package (etcd's
// is in its repository's root module), so this one calls the same entry
// point: every flag, the version output and the behaviour are etcd's.
//
// `make etcd` builds it into bin/etcd; pkg/etcdtest starts it for tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
