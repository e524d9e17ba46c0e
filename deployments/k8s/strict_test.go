package k8s

import (
	"io/fs"
	"os"
	"path/filepath"
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
