package k8s

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
)

// fakeKubectl answers slotkvctl.sh's three `kubectl get` queries with
// $FAKE_IMAGE, $FAKE_SECRET and $FAKE_ETCD, and records the arguments of
// `kubectl run`, NUL-separated, in $FAKE_ARGS (there is no cluster here;
// what the pod would be is in those arguments).
const fakeKubectl = `#!/usr/bin/env bash
case "$*" in
  *" get deployment slotkv-router "*"containers[0].image"*) printf '%s' "$FAKE_IMAGE" ;;
  *" get deployment slotkv-router "*"volumes"*) printf '%s' "$FAKE_SECRET" ;;
  *" get deployment slotkv-router "*"SLOTKV_ETCD_ENDPOINTS"*) printf '%s' "$FAKE_ETCD" ;;
  *" run "*) printf '%s\0' "$@" > "$FAKE_ARGS" ;;
  *) echo "fake kubectl: unexpected: $*" >&2; exit 3 ;;
esac
`

// TestSlotkvctlScript runs slotkvctl.sh against a kubectl that answers
// with the rendered overlay's router (image, tokens Secret, etcd) and
// checks the pod it asks for: the tools image of the router's registry and
// tag, slotkvctl with the given arguments, and a spec laid over kubectl
// run's that is a valid Pod (strictly decoded: kubectl would drop a
// misspelt field), meets the workloads' security checks, mounts the admin
// token file it names and sets only slotkvctl's variables.
func TestSlotkvctlScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	r, err := render("overlays/example")
	if err != nil {
		t.Fatal(err)
	}
	var router corev1.PodSpec
	for _, d := range r.deployments {
		if d.Name == "slotkv-router" {
			router = d.Spec.Template.Spec
		}
	}
	if len(router.Containers) == 0 {
		t.Fatal("no slotkv-router Deployment in the overlay")
	}
	var secret string
	for _, v := range router.Volumes {
		if v.Name == "tokens" && v.Secret != nil {
			secret = v.Secret.SecretName
		}
	}
	etcd, _ := envValue(router.Containers[0], "SLOTKV_ETCD_ENDPOINTS")

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(fakeKubectl), 0o755); err != nil {
		t.Fatal(err)
	}
	argsFile := filepath.Join(dir, "args")
	cmd := exec.Command("bash", "slotkvctl.sh", "nodes", "--json")
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FAKE_IMAGE="+router.Containers[0].Image, "FAKE_SECRET="+secret, "FAKE_ETCD="+etcd.Value, "FAKE_ARGS="+argsFile,
		"SLOTKV_NAMESPACE=slotkv", "SLOTKV_TOOLS_IMAGE=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("slotkvctl.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	flag := func(name string) string {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
		return ""
	}
	if got, want := flag("--image"), strings.Replace(router.Containers[0].Image, "slotkv-router", "slotkv-tools", 1); got != want {
		t.Errorf("--image %q, want %q", got, want)
	}
	if i := slices.Index(args, "--command"); i < 0 || !slices.Equal(args[i+1:], []string{"--", "/slotkvctl", "nodes", "--json"}) {
		t.Errorf("command: %q, want --command -- /slotkvctl nodes --json", args)
	}
	if !slices.Contains(args, "--rm") || flag("--restart") != "Never" || flag("--override-type") != "strategic" {
		t.Errorf("args %q: want --rm --restart=Never --override-type=strategic", args)
	}
	if !slices.Equal(args[:2], []string{"-n", "slotkv"}) {
		t.Errorf("args %q: want -n slotkv first", args)
	}
	name := args[3]
	if args[2] != "run" || !strings.HasPrefix(name, "slotkvctl-") {
		t.Fatalf("args %q: want run slotkvctl-PID", args)
	}

	// kubectl run's own part (kind, name) and the overrides.
	overrides := strings.TrimSpace(flag("--overrides"))
	pod := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "` + name + `"}, ` + strings.TrimPrefix(overrides, "{")
	// JSON, not YAML: kubectl parses --overrides as JSON.
	strictJSON := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Strict: true})
	obj, _, err := strictJSON.Decode([]byte(pod), nil, nil)
	if err != nil {
		t.Fatalf("slotkvctl.sh --overrides: %v\n%s", err, overrides)
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		t.Fatalf("decoded a %T, want a Pod", obj)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Name != name {
		t.Fatalf("containers %v: want one named %s (kubectl run's container, merged by name)", p.Spec.Containers, name)
	}
	c := p.Spec.Containers[0]
	checkSecurity(t, "slotkvctl.sh pod", p.Spec, c)
	w := workload{kind: "Pod", name: p.Name, template: corev1.PodTemplateSpec{Spec: p.Spec}}
	checkVolumes(t, "slotkvctl.sh pod", w, c)
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range p.Spec.Volumes {
		if v.Secret != nil {
			vols[v.Name] = v.Secret
			if v.Secret.SecretName != secret {
				t.Errorf("Secret %s mounted, want the router's %s", v.Secret.SecretName, secret)
			}
		}
	}
	tokenFile, _ := envValue(c, "SLOTKV_ADMIN_TOKEN_FILE")
	if !fileInSecret(tokenFile.Value, c, vols) {
		t.Errorf("SLOTKV_ADMIN_TOKEN_FILE %q is not a file of the mounted Secret", tokenFile.Value)
	}
	if e, _ := envValue(c, "SLOTKV_ETCD_ENDPOINTS"); e.Value != etcd.Value || e.Value == "" {
		t.Errorf("SLOTKV_ETCD_ENDPOINTS %q, want the router's %q", e.Value, etcd.Value)
	}
	known, err := envNames(sharedFlagsDir, "cmd/slotkvctl")
	if err != nil {
		t.Fatal(err)
	}
	if !known["SLOTKV_ETCD_ENDPOINTS"] || !known["SLOTKV_ADMIN_TOKEN_FILE"] {
		t.Fatal("slotkvctl's flags, as scanned, lack SLOTKV_ETCD_ENDPOINTS or SLOTKV_ADMIN_TOKEN_FILE: the source scan is broken")
	}
	for _, e := range c.Env {
		if !known[e.Name] {
			t.Errorf("env %s is no flag of slotkvctl", e.Name)
		}
	}
	if !bytes.Contains(b, []byte("--labels=app.kubernetes.io/part-of=slotkv")) {
		t.Errorf("args %q: want the part-of label (etcd's NetworkPolicy)", args)
	}
}
