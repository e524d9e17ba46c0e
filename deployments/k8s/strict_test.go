package k8s

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// copyTree copies this module's manifests (base and overlays) to a
// temporary directory, keeping their relative paths.
func copyTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	for _, top := range []string{"base", "overlays"} {
		err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dst, path), 0o755)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dst, path), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// edit replaces the one occurrence of old in the file.
func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), old); n != 1 {
		t.Fatalf("%s: %q occurs %d times, want once", path, old, n)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRenderRejects: a copy of the manifests with one mistake fails to
// render, and the error names the mistake. The unmodified copy renders, so
// each failure is the mistake's.
func TestRenderRejects(t *testing.T) {
	tests := []struct {
		name     string
		dir      string // kustomization, relative to the copy
		file     string // edited file, relative to the copy
		old, new string
		wantErr  []string
	}{
		{
			name: "unknown field in a StatefulSet spec",
			dir:  "base", file: "base/storage.yaml",
			old:     "  podManagementPolicy: Parallel\n",
			new:     "  podManagementPolicy: Parallel\n  podManagmentPolicy: Parallel\n",
			wantErr: []string{"StatefulSet slotkv-storage", `unknown field "spec.podManagmentPolicy"`},
		},
		{
			// encoding/json would take this for readOnlyRootFilesystem.
			name: "field with the wrong case in a container",
			dir:  "overlays/example", file: "base/router.yaml",
			old:     "            readOnlyRootFilesystem: true\n",
			new:     "            readOnlyRootFileSystem: true\n",
			wantErr: []string{"Deployment slotkv-router", `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"`},
		},
		{
			name: "duplicate field",
			dir:  "base", file: "base/etcd.yaml",
			old:     "  serviceName: etcd\n",
			new:     "  serviceName: etcd\n  serviceName: etcd-peers\n",
			wantErr: []string{"StatefulSet etcd", `serviceName`},
		},
		{
			name: "unknown kind",
			dir:  "base", file: "base/kustomization.yaml",
			old:     "  - console.yaml\n",
			new:     "  - console.yaml\n  - extra.yaml\n",
			wantErr: []string{"FrobnicatorConfig extra", "no kind"},
		},
		{
			name: "kind outside the checked ones",
			dir:  "base", file: "base/kustomization.yaml",
			old:     "  - console.yaml\n",
			new:     "  - console.yaml\n  - pod.yaml\n",
			wantErr: []string{"Pod stray", "not one the checks know"},
		},
	}
	base, err := render(filepath.Join(copyTree(t), "overlays/example"))
	if err != nil || len(base.statefulSets) == 0 {
		t.Fatalf("the unmodified copy: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyTree(t)
			extra := "apiVersion: example.com/v1\nkind: FrobnicatorConfig\nmetadata:\n  name: extra\n"
			if err := os.WriteFile(filepath.Join(dir, "base/extra.yaml"), []byte(extra), 0o644); err != nil {
				t.Fatal(err)
			}
			pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\nspec:\n  containers:\n    - name: c\n      image: busybox\n"
			if err := os.WriteFile(filepath.Join(dir, "base/pod.yaml"), []byte(pod), 0o644); err != nil {
				t.Fatal(err)
			}
			edit(t, filepath.Join(dir, tt.file), tt.old, tt.new)
			_, err := render(filepath.Join(dir, tt.dir))
			if err == nil {
				t.Fatal("rendered without error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// collector is a reporter that keeps what the checks report.
type collector struct{ errs []string }

func (c *collector) Errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// TestChecksCatch: each check fails on a copy of the manifests with the
// mistake it is there for, naming it; the unmodified copy passes them all.
func TestChecksCatch(t *testing.T) {
	envs, err := binaryEnv()
	if err != nil {
		t.Fatal(err)
	}
	const overlay = "overlays/example"
	tests := []struct {
		name, file, old, new, wantErr string
	}{
		{"env name typo", "base/storage.yaml",
			"- name: SLOTKV_ADVERTISE_GRPC\n", "- name: SLOTKV_ADVERTISE_GPRC\n",
			"env SLOTKV_ADVERTISE_GPRC is no flag of slotkv-storage"},
		{"flag of another binary", "base/router.yaml",
			"- name: SLOTKV_RESP_ADDR\n", "- name: SLOTKV_DATA_DIR\n",
			"env SLOTKV_DATA_DIR is no flag of slotkv-router"},
		{"slotkv flags in args", "base/console.yaml",
			"          imagePullPolicy: IfNotPresent\n", "          imagePullPolicy: IfNotPresent\n          args: [\"--sesion-ttl=1h\"]\n",
			"configure slotkv binaries by SLOTKV_* variables"},
		{"no etcd endpoints", "base/migrator.yaml",
			"- name: SLOTKV_ETCD_ENDPOINTS\n", "- name: SLOTKV_ETCD_PREFIX\n",
			"SLOTKV_ETCD_ENDPOINTS is not set"},
		{"readiness path", "base/router.yaml",
			"path: /readyz\n", "path: /ready\n",
			`readinessProbe path "/ready", want "/readyz"`},
		{"no liveness probe", "base/console.yaml",
			"          livenessProbe:\n", "          startupProbe:\n",
			"livenessProbe: want an HTTP GET of /healthz"},
		{"probe on another port", "base/migrator.yaml",
			"            - name: http\n              containerPort: 8070\n", "            - name: http\n              containerPort: 8071\n",
			"SLOTKV_HTTP_ADDR"},
		{"writable root", "base/console.yaml",
			"readOnlyRootFilesystem: true\n", "readOnlyRootFilesystem: false\n",
			"readOnlyRootFilesystem must be true"},
		{"root user", "base/router.yaml",
			"        runAsUser: 65532\n", "        runAsUser: 0\n",
			"runAsUser must be 65532"},
		{"no requests", "base/console.yaml",
			"              cpu: 100m\n", "",
			"no cpu request"},
		{"service links", "base/router.yaml",
			"enableServiceLinks: false\n", "enableServiceLinks: true\n",
			"enableServiceLinks must be false"},
		{"unresolved reference", "base/storage.yaml",
			"$(SLOTKV_NODE_ID).slotkv-storage.$(POD_NAMESPACE).svc:8100", "$(SLOTKV_NODE_ID).slotkv-storage.$(POD_NAMSPACE).svc:8100",
			"refers to $(POD_NAMSPACE)"},
		{"no PDB", "base/downloader.yaml",
			"kind: PodDisruptionBudget\nmetadata:\n  name: slotkv-downloader\nspec:\n  # Keeps one replica (the leader or its successor) through a drain.\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: slotkv-downloader\n",
			"kind: PodDisruptionBudget\nmetadata:\n  name: slotkv-downloader\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: slotkv-downloadr\n",
			"Deployment slotkv-downloader: no PodDisruptionBudget selects its pods"},
		{"one migrator", "base/migrator.yaml",
			"  replicas: 2\n", "  replicas: 1\n",
			"Deployment slotkv-migrator: 1 replicas, want at least 2"},
		{"storage service not headless", "base/storage.yaml",
			"  clusterIP: None\n", "",
			"Service slotkv-storage is not headless"},
		{"node id not the pod name", "base/storage.yaml",
			"            - name: SLOTKV_NODE_ID\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.name\n",
			"            - name: SLOTKV_NODE_ID\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.uid\n",
			"SLOTKV_NODE_ID must come from metadata.name"},
		{"data dir off the claim", "base/storage.yaml",
			"value: /data/badger\n", "value: /tmp/badger\n",
			`SLOTKV_DATA_DIR "/tmp/badger" is not on a volumeClaimTemplate`},
		{"advertised port", "base/storage.yaml",
			"$(SLOTKV_NODE_ID).slotkv-storage.$(POD_NAMESPACE).svc:6379", "$(SLOTKV_NODE_ID).slotkv-storage.$(POD_NAMESPACE).svc:6380",
			"SLOTKV_ADVERTISE_RESP port 6380, but SLOTKV_RESP_ADDR listens on 6379"},
		{"service of nobody", "base/console.yaml",
			"      targetPort: http\n", "      targetPort: web\n",
			"Service slotkv-console: port http targets web"},
		{"address of no service", "base/console.yaml",
			"value: \"slotkv-migrator:7020\"", "value: \"slotkv-migrater:7020\"",
			`"slotkv-migrater:7020" names neither a Service`},
		{"etcd member missing", "base/etcd.yaml",
			",etcd-2=http://etcd-2.etcd.$(POD_NAMESPACE).svc:2380\n", "\n",
			"--initial-cluster members [etcd-0 etcd-1], want the StatefulSet's pods [etcd-0 etcd-1 etcd-2]"},
		{"etcd flag typo", "base/etcd.yaml",
			"--initial-cluster-token=slotkv-etcd", "--initial-cluster-tokn=slotkv-etcd",
			"--initial-cluster-tokn is not an etcd flag"},
		{"secret key missing", "overlays/example/kustomization.yaml",
			"- admin-token=tokens/admin-token\n", "- admin_token=tokens/admin-token\n",
			"mounts key admin-token, which Secret slotkv-tokens"},
		{"token file not mounted", "base/router.yaml",
			"value: /etc/slotkv/tokens/data-token\n", "value: /etc/slotkv/data-token\n",
			`SLOTKV_DATA_TOKEN_FILE "/etc/slotkv/data-token" is not a file of a mounted Secret`},
		{"etcd closed to the services", "base/networkpolicy.yaml",
			"app.kubernetes.io/part-of: slotkv\n", "app.kubernetes.io/part-of: other\n",
			"the network policies of StatefulSet etcd do not let it reach http://etcd-client:2379 port client"},
		{"world-readable token", "base/migrator.yaml",
			"            defaultMode: 0440\n", "            defaultMode: 0444\n",
			"Secret volume tokens: want defaultMode readable by the group and not by others"},
		{"selector off its template", "base/router.yaml",
			"  selector:\n    matchLabels:\n      app.kubernetes.io/name: slotkv-router\n  template:\n",
			"  selector:\n    matchLabels:\n      app.kubernetes.io/name: router\n  template:\n",
			"Deployment slotkv-router: selector"},
		{"replicas on one node", "base/downloader.yaml",
			"                    app.kubernetes.io/name: slotkv-downloader\n      containers:", "                    app.kubernetes.io/name: slotkv-migrator\n      containers:",
			"Deployment slotkv-downloader: 2 replicas without a podAntiAffinity term"},
		{"open cluster beyond loopback", "base/console.yaml",
			"            - name: SLOTKV_ADMIN_TOKEN_FILE\n              value: /etc/slotkv/tokens/admin-token\n", "",
			"SLOTKV_HTTP_ADDR 0.0.0.0:8060 is beyond loopback without a token"},
	}
	clean, err := render(filepath.Join(copyTree(t), overlay))
	if err != nil {
		t.Fatal(err)
	}
	var c collector
	for _, ch := range checks(clean, envs, true, "slotkv") {
		ch.run(&c)
	}
	if len(c.errs) > 0 {
		t.Fatalf("the unmodified copy fails the checks:\n%s", strings.Join(c.errs, "\n"))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyTree(t)
			edit(t, filepath.Join(dir, tt.file), tt.old, tt.new)
			r, err := render(filepath.Join(dir, overlay))
			if err != nil {
				t.Fatal(err)
			}
			var c collector
			for _, ch := range checks(r, envs, true, "slotkv") {
				ch.run(&c)
			}
			if !slices.ContainsFunc(c.errs, func(e string) bool { return strings.Contains(e, tt.wantErr) }) {
				t.Errorf("no check reports %q; they report:\n%s", tt.wantErr, strings.Join(c.errs, "\n"))
			}
		})
	}
}
