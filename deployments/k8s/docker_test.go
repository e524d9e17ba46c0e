package k8s

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDockerPods runs the base's pods as Docker containers, each the way
// its manifest configures it: the image, args and env (the downward API's
// pod name and namespace filled in, $(VAR) expanded), the tokens as
// read-only files, a read-only root as user 65532 without capabilities,
// the Services' DNS names as network aliases (slotkv-storage-0.slotkv-storage,
// etcd-client...). Then: etcd forms its cluster from the static initial
// cluster, every probe answers 200, slotkvctl (as slotkvctl.sh configures
// it) bootstraps the topology into etcd, and a value written through the
// router reads back. One replica of each Deployment. It needs Docker and
// the images (make test-k8s builds them and runs it), so it runs only with
// SLOTKV_K8S_DOCKER=1; SLOTKV_IMAGE_TAG replaces the images' tag (dev),
// and with SLOTKV_BIN set, that directory's binaries replace the images'
// (a tree newer than its images).
func TestDockerPods(t *testing.T) {
	if os.Getenv("SLOTKV_K8S_DOCKER") == "" {
		t.Skip("SLOTKV_K8S_DOCKER=1 runs the base's pods in Docker (needs make etcd images)")
	}
	r, err := render("base")
	if err != nil {
		t.Fatal(err)
	}
	d := newDockerPods(t, r)
	ws := map[string]workload{}
	for _, w := range r.workloads() {
		ws[w.name] = w
	}
	var started []string
	for _, name := range []string{"etcd", "slotkv-storage"} {
		w := ws[name]
		for i := range w.replicas {
			pod := fmt.Sprintf("%s-%d", w.name, i)
			d.run(w, pod)
			started = append(started, pod)
		}
	}
	// etcd-0 is ready only once the members found one another.
	for _, pod := range started {
		d.waitProbes(pod, true)
	}
	deployments := []string{"slotkv-router", "slotkv-migrator", "slotkv-downloader", "slotkv-console"}
	for _, name := range deployments {
		d.run(ws[name], name)
		// Live, not yet ready: the router is ready with a topology.
		d.waitProbes(name, false)
	}

	var seeds []string
	for i := range ws["slotkv-storage"].replicas {
		seeds = append(seeds, fmt.Sprintf("slotkv-storage-%d.slotkv-storage:7100", i))
	}
	out := d.slotkvctl("bootstrap", "--storage", strings.Join(seeds, ","))
	t.Logf("slotkvctl bootstrap:\n%s", out)
	nodes := d.slotkvctl("nodes")
	t.Logf("slotkvctl nodes:\n%s", nodes)
	if want := fmt.Sprintf("%d live, 0 dead", len(seeds)); !strings.Contains(nodes, want) {
		t.Errorf("slotkvctl nodes does not say %q", want)
	}
	for _, s := range seeds {
		id := strings.Split(s, ".")[0]
		if !strings.Contains(nodes, id+".slotkv-storage."+dockerNamespace+".svc:7100") {
			t.Errorf("slotkvctl nodes does not list %s at its advertised name", id)
		}
	}
	for _, name := range deployments {
		d.waitProbes(name, true)
	}

	router := "http://" + d.hostPort("slotkv-router", 8080)
	do := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, router+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(http.MethodPut, "/v1/kv/k8s", d.dataToken, `{"text":"pods"}`); code != http.StatusOK {
		t.Fatalf("PUT through the router: %d %s", code, body)
	}
	if code, body := do(http.MethodGet, "/v1/kv/k8s", d.dataToken, ""); code != http.StatusOK || !strings.Contains(body, `"text":"pods"`) {
		t.Errorf("GET through the router: %d %s", code, body)
	}
	if code, _ := do(http.MethodGet, "/v1/kv/k8s", "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET without the token: %d, want 401", code)
	}
}

// dockerNamespace stands for the pods' namespace.
const dockerNamespace = "slotkv"

// dockerPods runs pods of a rendered kustomization on one Docker network,
// removed (containers, volumes, network) in t.Cleanup.
type dockerPods struct {
	t                   *testing.T
	r                   *rendered
	prefix, network     string
	tokens, bin         string
	dataToken           string
	pods                map[string]corev1.Container // pod name: its container
	containers, volumes []string
}

func newDockerPods(t *testing.T, r *rendered) *dockerPods {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("SLOTKV_K8S_DOCKER is set but docker is not installed")
	}
	d := &dockerPods{t: t, r: r, prefix: fmt.Sprintf("slotkv-k8s-%d", os.Getpid()), pods: map[string]corev1.Container{}}
	d.network = d.prefix + "-net"
	d.dataToken = "k8s-test-data-token"
	d.tokens = t.TempDir()
	for name, tok := range map[string]string{"data-token": d.dataToken, "admin-token": "k8s-test-admin-token"} {
		// 0444: Docker has no fsGroup to give the image's user the group.
		if err := os.WriteFile(filepath.Join(d.tokens, name), []byte(tok+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(d.tokens, 0o755); err != nil {
		t.Fatal(err)
	}
	if bin := os.Getenv("SLOTKV_BIN"); bin != "" {
		d.bin, _ = filepath.Abs(bin)
	}
	d.docker("network", "create", d.network)
	t.Cleanup(func() {
		for _, c := range d.containers {
			if t.Failed() {
				out, _ := exec.Command("docker", "logs", "--tail", "40", c).CombinedOutput()
				t.Logf("docker logs %s:\n%s", c, out)
			}
			_ = exec.Command("docker", "rm", "-f", c).Run()
		}
		for _, v := range d.volumes {
			_ = exec.Command("docker", "volume", "rm", "-f", v).Run()
		}
		_ = exec.Command("docker", "network", "rm", d.network).Run()
	})
	return d
}

func (d *dockerPods) docker(args ...string) string {
	d.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// binary returns the -v that puts SLOTKV_BIN's build of the image's
// binary over the image's, or nothing.
func (d *dockerPods) binary(path string) []string {
	if d.bin == "" {
		return nil
	}
	b := filepath.Join(d.bin, filepath.Base(path))
	if _, err := os.Stat(b); err != nil {
		return nil
	}
	return []string{"-v", b + ":" + path + ":ro"}
}

// run starts pod (of workload w) as a container.
func (d *dockerPods) run(w workload, pod string) {
	d.t.Helper()
	spec := w.template.Spec
	if len(spec.Containers) != 1 {
		d.t.Fatalf("%s: %d containers; this test runs one per pod", w, len(spec.Containers))
	}
	c := spec.Containers[0]
	name := d.prefix + "-" + pod
	args := []string{"run", "-d", "--name", name, "--network", d.network,
		"--read-only", "--user", "65532:65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"}
	for _, svc := range d.r.services {
		if ok, _ := matches(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, w.template.Labels); !ok {
			continue
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone && w.kind == "StatefulSet" {
			args = append(args, "--network-alias", pod+"."+svc.Name, "--network-alias", pod+"."+svc.Name+"."+dockerNamespace+".svc")
		} else {
			args = append(args, "--network-alias", svc.Name)
		}
	}
	env := map[string]string{}
	expand := func(s string) string {
		return varRef.ReplaceAllStringFunc(s, func(m string) string {
			if v, ok := env[m[2:len(m)-1]]; ok {
				return v
			}
			return m
		})
	}
	for _, e := range c.Env {
		v := expand(e.Value)
		if e.ValueFrom != nil {
			switch f := e.ValueFrom.FieldRef; {
			case f != nil && f.FieldPath == "metadata.name":
				v = pod
			case f != nil && f.FieldPath == "metadata.namespace":
				v = dockerNamespace
			default:
				d.t.Fatalf("%s: env %s: only the pod's name and namespace are filled in here", w, e.Name)
			}
		}
		env[e.Name] = v
		args = append(args, "-e", e.Name+"="+v)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		switch {
		case ok && v.Secret != nil:
			args = append(args, "-v", d.tokens+":"+m.MountPath+":ro")
		case ok && v.EmptyDir != nil && m.MountPath == "/tmp":
			args = append(args, "--tmpfs", "/tmp:mode=1777")
		default:
			// A claim or a data emptyDir: a volume, which Docker creates
			// owned by 65532 from the image's /data (Kubernetes: fsGroup).
			vol := d.prefix + "-" + pod + "-" + m.Name
			d.volumes = append(d.volumes, vol)
			args = append(args, "-v", vol+":"+m.MountPath)
		}
	}
	for _, p := range c.Ports {
		args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d", p.ContainerPort))
	}
	args = append(args, d.binary("/"+imageName(c.Image))...)
	args = append(args, d.image(c.Image))
	for _, a := range c.Args {
		args = append(args, expand(a))
	}
	d.docker(args...)
	d.containers = append(d.containers, name)
	d.pods[pod] = c
}

// image is ref with its tag replaced by $SLOTKV_IMAGE_TAG, when set.
func (d *dockerPods) image(ref string) string {
	tag := os.Getenv("SLOTKV_IMAGE_TAG")
	if tag == "" {
		return ref
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref + ":" + tag
}

func (d *dockerPods) hostPort(pod string, port int32) string {
	d.t.Helper()
	out := d.docker("port", d.prefix+"-"+pod, fmt.Sprintf("%d/tcp", port))
	return strings.Split(out, "\n")[0]
}

// waitProbes waits until the pod's liveness probe, and its readiness
// probe when ready, answer 200 (as the kubelet would see them), failing
// after a minute.
func (d *dockerPods) waitProbes(pod string, ready bool) {
	d.t.Helper()
	c := d.pods[pod]
	probes := []*corev1.Probe{c.LivenessProbe}
	if ready {
		probes = append(probes, c.ReadinessProbe)
	}
	for _, p := range probes {
		port, ok := containerPort(c, p.HTTPGet.Port)
		if !ok {
			d.t.Fatalf("%s: probe port %s", pod, p.HTTPGet.Port.String())
		}
		url := "http://" + d.hostPort(pod, port) + p.HTTPGet.Path
		var last string
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
			resp, err := http.Get(url)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				last = fmt.Sprintf("%d %s", resp.StatusCode, b)
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				d.t.Fatalf("%s: GET %s (probe port %d): %s", pod, p.HTTPGet.Path, port, last)
			}
		}
	}
}

// slotkvctl runs slotkvctl in the tools image of the router's registry and
// tag, configured as slotkvctl.sh configures its pod: the admin token
// file and the router's etcd.
func (d *dockerPods) slotkvctl(args ...string) string {
	d.t.Helper()
	router := d.pods["slotkv-router"]
	etcd, _ := envValue(router, "SLOTKV_ETCD_ENDPOINTS")
	image := d.image(strings.Replace(router.Image, "slotkv-router", "slotkv-tools", 1))
	run := []string{"run", "--rm", "--network", d.network, "--read-only", "--user", "65532:65532", "--cap-drop", "ALL",
		"-v", d.tokens + ":/etc/slotkv/tokens:ro", "-e", "SLOTKV_ADMIN_TOKEN_FILE=/etc/slotkv/tokens/admin-token",
		"-e", "SLOTKV_ETCD_ENDPOINTS=" + etcd.Value}
	run = append(run, d.binary("/slotkvctl")...)
	run = append(run, image, "/slotkvctl")
	return d.docker(append(run, args...)...)
}
