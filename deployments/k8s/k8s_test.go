package k8s

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The kustomizations under test. The base leaves the tokens Secret to its
// overlays; a deployable overlay must render every Secret it mounts.
var kustomizations = []struct {
	name, dir string
	// deployable: every referenced Secret is rendered, every object is in
	// namespace.
	deployable bool
	namespace  string
}{
	{name: "base", dir: "base"},
	{name: "overlay-example", dir: "overlays/example", deployable: true, namespace: "slotkv"},
}

// The users and paths the images and binaries define.
const (
	imageUser    = 65532
	healthzPath  = "/healthz" // pkg/server.HealthzPath
	readyzPath   = "/readyz"  // pkg/server.ReadyzPath
	etcdImage    = "etcd"
	etcdLivePath = "/livez"
)

// etcdFlags are the etcd server flags the manifests may use, checked
// against etcd v3.7.3's embed/config.go and etcdmain/config.go (the
// version tools/go.mod pins); extend it only after checking there.
var etcdFlags = map[string]bool{
	"name": true, "data-dir": true, "wal-dir": true,
	"listen-client-urls": true, "advertise-client-urls": true,
	"listen-peer-urls": true, "initial-advertise-peer-urls": true,
	"initial-cluster": true, "initial-cluster-state": true, "initial-cluster-token": true,
	"auto-compaction-mode": true, "auto-compaction-retention": true,
	"quota-backend-bytes": true, "listen-metrics-urls": true,
	"snapshot-count": true, "heartbeat-interval": true, "election-timeout": true,
	"log-level": true, "logger": true,
}

// workload is what the checks need of a StatefulSet or a Deployment.
type workload struct {
	kind, namespace, name string
	replicas              int32
	selector              *metav1.LabelSelector
	template              corev1.PodTemplateSpec
	claims                []corev1.PersistentVolumeClaim
	serviceName           string
}

func (w workload) String() string { return w.kind + " " + w.name }

func (r *rendered) workloads() []workload {
	var ws []workload
	for _, s := range r.statefulSets {
		ws = append(ws, workload{kind: "StatefulSet", namespace: s.Namespace, name: s.Name, replicas: replicas(s.Spec.Replicas),
			selector: s.Spec.Selector, template: s.Spec.Template, claims: s.Spec.VolumeClaimTemplates, serviceName: s.Spec.ServiceName})
	}
	for _, d := range r.deployments {
		ws = append(ws, workload{kind: "Deployment", namespace: d.Namespace, name: d.Name, replicas: replicas(d.Spec.Replicas),
			selector: d.Spec.Selector, template: d.Spec.Template})
	}
	return ws
}

// replicas is the count a nil field means (1, the API's default).
func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func (r *rendered) service(namespace, name string) *corev1.Service {
	for _, s := range r.services {
		if s.Namespace == namespace && s.Name == name {
			return s
		}
	}
	return nil
}

func (r *rendered) statefulSet(namespace, name string) *appsv1.StatefulSet {
	for _, s := range r.statefulSets {
		if s.Namespace == namespace && s.Name == name {
			return s
		}
	}
	return nil
}

func (r *rendered) secret(namespace, name string) *corev1.Secret {
	for _, s := range r.secrets {
		if s.Namespace == namespace && s.Name == name {
			return s
		}
	}
	return nil
}

// imageName is an image reference's last path element without tag or
// digest: registry.example.com/slotkv/slotkv-storage:0.1.0 is
// slotkv-storage.
func imageName(ref string) string {
	ref = ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.IndexAny(ref, ":@"); i >= 0 {
		ref = ref[:i]
	}
	return ref
}

func envValue(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// matches reports whether a selector (Service or PodDisruptionBudget)
// selects pods with these labels; an empty selector selects nothing here,
// since none of ours means "every pod".
func matches(sel *metav1.LabelSelector, l map[string]string) (bool, error) {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(l)), nil
}

func TestKustomizations(t *testing.T) {
	envs, err := binaryEnv()
	if err != nil {
		t.Fatal(err)
	}
	// The extraction must find the flags these manifests are about, or
	// every name check below would pass for nothing.
	for _, want := range []string{"SLOTKV_GRPC_ADDR", "SLOTKV_ETCD_ENDPOINTS", "SLOTKV_ADMIN_TOKEN_FILE"} {
		if !envs["slotkv-router"][want] {
			t.Fatalf("no flagenv binding of %s found under %s: the source scan is broken", want, sharedFlagsDir)
		}
	}
	if !envs["slotkv-storage"]["SLOTKV_NODE_ID"] || envs["slotkv-router"]["SLOTKV_NODE_ID"] {
		t.Fatalf("SLOTKV_NODE_ID should be the storage binary's alone: the source scan is broken")
	}
	for _, k := range kustomizations {
		t.Run(k.name, func(t *testing.T) {
			r, err := render(k.dir)
			if err != nil {
				t.Fatal(err)
			}
			ws := r.workloads()
			names := func(kind string) []string {
				var out []string
				for _, w := range ws {
					if w.kind == kind {
						out = append(out, w.name)
					}
				}
				slices.Sort(out)
				return out
			}
			if got, want := names("StatefulSet"), []string{"etcd", "slotkv-storage"}; !slices.Equal(got, want) {
				t.Errorf("StatefulSets %v, want %v", got, want)
			}
			if got, want := names("Deployment"), []string{"slotkv-console", "slotkv-downloader", "slotkv-migrator", "slotkv-router"}; !slices.Equal(got, want) {
				t.Errorf("Deployments %v, want %v", got, want)
			}
			for _, c := range checks(r, envs, k.deployable, k.namespace) {
				t.Run(c.name, func(t *testing.T) { c.run(t) })
			}
		})
	}
}

// reporter is where the checks report: a *testing.T, or a collector for
// the tests of the checks themselves.
type reporter interface {
	Errorf(format string, args ...any)
}

// check is one named check of a rendered kustomization.
type check struct {
	name string
	run  func(reporter)
}

// checks are every check of r; deployable and namespace as in
// kustomizations.
func checks(r *rendered, envs map[string]map[string]bool, deployable bool, namespace string) []check {
	ws := r.workloads()
	cs := []check{
		{"containers", func(t reporter) { checkContainers(t, r, ws, envs) }},
		{"disruption-budgets", func(t reporter) { checkPDBs(t, r, ws) }},
		{"replicas", func(t reporter) { checkReplicas(t, ws) }},
		{"statefulsets", func(t reporter) { checkStatefulSets(t, r) }},
		{"services", func(t reporter) { checkServices(t, r, ws) }},
		{"addresses", func(t reporter) { checkAddresses(t, r, ws) }},
		{"etcd", func(t reporter) { checkEtcd(t, r, ws) }},
		{"secrets", func(t reporter) { checkSecrets(t, r, ws, deployable) }},
		{"network-policies", func(t reporter) { checkNetworkPolicies(t, r, ws) }},
	}
	if namespace != "" {
		cs = append(cs, check{"namespace", func(t reporter) { checkNamespace(t, r, namespace) }})
	}
	return cs
}

// checkContainers: probes, security context, resources, variable
// references, and for slotkv's binaries configuration by environment
// variables that exist.
func checkContainers(t reporter, r *rendered, ws []workload, envs map[string]map[string]bool) {
	for _, w := range ws {
		// The API server refuses a workload whose selector does not
		// select its own template.
		if ok, err := matches(w.selector, w.template.Labels); !ok || err != nil {
			t.Errorf("%s: selector %v does not select its pod template's labels %v", w, w.selector, w.template.Labels)
		}
		pod := w.template.Spec
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken must be false (no service uses the Kubernetes API)", w)
		}
		// Service links put SLOTKV_STORAGE_PORT, ETCD_PORT... into the
		// environment, a namespace the binaries read flags from.
		if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
			t.Errorf("%s: enableServiceLinks must be false", w)
		}
		if len(pod.InitContainers) > 0 || len(pod.EphemeralContainers) > 0 {
			t.Errorf("%s: init or ephemeral containers have no checks yet", w)
		}
		if len(pod.Containers) == 0 {
			t.Errorf("%s: no containers", w)
		}
		for _, c := range pod.Containers {
			where := fmt.Sprintf("%s container %s", w, c.Name)
			image := imageName(c.Image)
			switch {
			case image == etcdImage:
				checkProbes(t, where, c, readyzPath, etcdLivePath)
			case binaries[image] != "":
				checkProbes(t, where, c, readyzPath, healthzPath)
				checkSlotkvEnv(t, where, c, envs[image])
			default:
				t.Errorf("%s: image %s is not one of slotkv's (%v) or etcd", where, c.Image, binaries)
			}
			checkSecurity(t, where, pod, c)
			checkResources(t, where, c)
			checkVolumes(t, where, w, c)
			checkReferences(t, where, c)
		}
	}
}

func checkProbes(t reporter, where string, c corev1.Container, ready, live string) {
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"readinessProbe", ready, c.ReadinessProbe}, {"livenessProbe", live, c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: %s: want an HTTP GET of %s", where, p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: %s path %q, want %q", where, p.name, p.probe.HTTPGet.Path, p.path)
		}
		port, ok := containerPort(c, p.probe.HTTPGet.Port)
		if !ok {
			t.Errorf("%s: %s port %s is none of the container's ports", where, p.name, p.probe.HTTPGet.Port.String())
			continue
		}
		// The probes hit the HTTP listener, wherever SLOTKV_HTTP_ADDR puts it.
		if e, ok := envValue(c, "SLOTKV_HTTP_ADDR"); ok {
			if _, hp, err := net.SplitHostPort(e.Value); err != nil || hp != strconv.Itoa(int(port)) {
				t.Errorf("%s: %s probes port %d, but SLOTKV_HTTP_ADDR is %q", where, p.name, port, e.Value)
			}
		}
	}
}

// containerPort resolves a port by name or number to a declared port.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func checkSecurity(t reporter, where string, pod corev1.PodSpec, c corev1.Container) {
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		t.Errorf("%s: runAsNonRoot must be true", where)
	}
	user := sc.RunAsUser
	if user == nil {
		user = psc.RunAsUser
	}
	if user == nil || *user != imageUser {
		t.Errorf("%s: runAsUser must be %d (the images' user, who owns their /data and /tmp)", where, imageUser)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities must drop ALL and add none", where)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile must be RuntimeDefault", where)
	}
}

func checkResources(t reporter, where string, c corev1.Container) {
	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := req[name]; !ok || q.Sign() <= 0 {
			t.Errorf("%s: no %s request", where, name)
		}
	}
	mem, ok := lim[corev1.ResourceMemory]
	if !ok {
		t.Errorf("%s: no memory limit", where)
	} else if r := req[corev1.ResourceMemory]; mem.Cmp(r) < 0 {
		t.Errorf("%s: memory limit %s below its request %s", where, mem.String(), r.String())
	}
}

// checkVolumes: with a read-only root, the writable places are volumes;
// each mount names a volume of the pod, and Secrets are mounted read-only.
func checkVolumes(t reporter, where string, w workload, c corev1.Container) {
	vols := map[string]corev1.Volume{}
	for _, v := range w.template.Spec.Volumes {
		vols[v.Name] = v
	}
	claims := map[string]bool{}
	for _, pvc := range w.claims {
		claims[pvc.Name] = true
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		switch {
		case claims[m.Name]:
			if ok {
				t.Errorf("%s: %s is both a volume and a claim template", where, m.Name)
			}
		case !ok:
			t.Errorf("%s: mount %s names no volume or claim template", where, m.Name)
		case v.Secret != nil && !m.ReadOnly:
			t.Errorf("%s: Secret volume %s mounted writable", where, m.Name)
		case v.Secret != nil:
			// The files are root's: the image's user reads them through
			// fsGroup, and nobody else should.
			psc := w.template.Spec.SecurityContext
			mode := v.Secret.DefaultMode
			if mode == nil || *mode&0o007 != 0 || *mode&0o040 == 0 || psc == nil || psc.FSGroup == nil || *psc.FSGroup != imageUser {
				t.Errorf("%s: Secret volume %s: want defaultMode readable by the group and not by others, and fsGroup %d", where, m.Name, imageUser)
			}
		case v.Secret == nil && v.EmptyDir == nil && v.PersistentVolumeClaim == nil:
			t.Errorf("%s: volume %s is neither a Secret, an emptyDir nor a claim", where, m.Name)
		}
	}
}

var varRef = regexp.MustCompile(`\$\(([^)]*)\)`)

// checkReferences: Kubernetes expands $(NAME) in env values (names
// defined earlier in the list), args and command (any env name) and
// leaves an unknown reference as it is, silently; here it is an error.
func checkReferences(t reporter, where string, c corev1.Container) {
	refs := func(s string) []string {
		var out []string
		for _, m := range varRef.FindAllStringSubmatch(strings.ReplaceAll(s, "$$", ""), -1) {
			out = append(out, m[1])
		}
		return out
	}
	defined := map[string]bool{}
	for _, e := range c.Env {
		for _, ref := range refs(e.Value) {
			if !defined[ref] {
				t.Errorf("%s: env %s refers to $(%s), not defined before it", where, e.Name, ref)
			}
		}
		defined[e.Name] = true
	}
	for _, s := range slices.Concat(c.Command, c.Args) {
		for _, ref := range refs(s) {
			if !defined[ref] {
				t.Errorf("%s: %q refers to $(%s), which the container's env does not define", where, s, ref)
			}
		}
	}
}

// fieldRefEnv reports whether name is set from the pod's field path.
func fieldRefEnv(c corev1.Container, name, path string) bool {
	e, ok := envValue(c, name)
	return ok && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == path
}

// checkSlotkvEnv: a slotkv binary is configured by SLOTKV_* variables
// only (no args to get out of step with them), each one its flags define;
// it knows etcd, and it does not listen beyond loopback without a token.
func checkSlotkvEnv(t reporter, where string, c corev1.Container, known map[string]bool) {
	if len(c.Command) > 0 || len(c.Args) > 0 {
		t.Errorf("%s: command %q args %q: configure slotkv binaries by SLOTKV_* variables (checked against the flags) instead", where, c.Command, c.Args)
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "SLOTKV_") && !known[e.Name] {
			t.Errorf("%s: env %s is no flag of %s (flagenv bindings under %s and %s)", where, e.Name, imageName(c.Image), sharedFlagsDir, binaries[imageName(c.Image)])
		}
	}
	if e, ok := envValue(c, "SLOTKV_ETCD_ENDPOINTS"); !ok || e.Value == "" {
		t.Errorf("%s: SLOTKV_ETCD_ENDPOINTS is not set", where)
	}
	set := func(name string) bool {
		e, ok := envValue(c, name)
		return ok && (e.Value != "" || e.ValueFrom != nil)
	}
	hasToken := set("SLOTKV_TOKEN") || set("SLOTKV_ADMIN_TOKEN") || set("SLOTKV_ADMIN_TOKEN_FILE")
	if (set("SLOTKV_DATA_TOKEN") || set("SLOTKV_DATA_TOKEN_FILE")) && !hasToken {
		t.Errorf("%s: a data token without an admin token is refused at start (auth.Tokens.Validate)", where)
	}
	insecure := false
	if e, ok := envValue(c, "SLOTKV_INSECURE"); ok {
		insecure, _ = strconv.ParseBool(e.Value)
	}
	for _, name := range []string{"SLOTKV_GRPC_ADDR", "SLOTKV_HTTP_ADDR", "SLOTKV_RESP_ADDR"} {
		e, ok := envValue(c, name)
		if !ok || e.Value == "" {
			if name != "SLOTKV_RESP_ADDR" {
				// The default is loopback: nothing in the cluster could reach it.
				t.Errorf("%s: %s is not set", where, name)
			}
			continue
		}
		host, port, err := net.SplitHostPort(e.Value)
		if err != nil {
			t.Errorf("%s: %s %q: %v", where, name, e.Value, err)
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			continue
		}
		// server.CheckExposure refuses this at start.
		if !hasToken && !insecure {
			t.Errorf("%s: %s %s is beyond loopback without a token or SLOTKV_INSECURE", where, name, e.Value)
		}
		n, _ := strconv.Atoi(port)
		if _, ok := containerPort(c, intstr.FromInt32(int32(n))); !ok {
			t.Errorf("%s: %s listens on port %s, which the container does not declare", where, name, port)
		}
	}
}

func checkPDBs(t reporter, r *rendered, ws []workload) {
	for _, w := range ws {
		var found bool
		for _, p := range r.pdbs {
			ok, err := matches(p.Spec.Selector, w.template.Labels)
			if err != nil {
				t.Errorf("PodDisruptionBudget %s: %v", p.Name, err)
			}
			if !ok || p.Namespace != w.namespace {
				continue
			}
			found = true
			if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
				t.Errorf("PodDisruptionBudget %s (%s): neither maxUnavailable nor minAvailable", p.Name, w)
			}
			// A storage node owns its slots alone and etcd keeps its
			// quorum with one member down: one pod at a time.
			if w.kind == "StatefulSet" && (p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() != "1") {
				t.Errorf("PodDisruptionBudget %s (%s): maxUnavailable must be 1", p.Name, w)
			}
		}
		if !found {
			t.Errorf("%s: no PodDisruptionBudget selects its pods", w)
		}
	}
}

func checkReplicas(t reporter, ws []workload) {
	for _, w := range ws {
		// More than one replica is for availability: spread over nodes.
		if w.replicas > 1 && !spreads(w) {
			t.Errorf("%s: %d replicas without a podAntiAffinity term on kubernetes.io/hostname selecting its own pods", w, w.replicas)
		}
		for _, c := range w.template.Spec.Containers {
			switch imageName(c.Image) {
			case "slotkv-migrator", "slotkv-downloader":
				// Leader election: a standby takes over the jobs.
				if w.replicas < 2 {
					t.Errorf("%s: %d replicas, want at least 2 (a standby for leader election)", w, w.replicas)
				}
			case "slotkv-storage", etcdImage:
				if w.kind != "StatefulSet" {
					t.Errorf("%s: %s needs a StatefulSet (stable names and volumes)", w, imageName(c.Image))
				}
				if w.replicas < 3 {
					t.Errorf("%s: %d replicas, want at least 3", w, w.replicas)
				}
			}
		}
	}
}

// checkStatefulSets: a volume per pod, and a headless Service for the
// stable names.
func checkStatefulSets(t reporter, r *rendered) {
	for _, s := range r.statefulSets {
		where := "StatefulSet " + s.Name
		if len(s.Spec.VolumeClaimTemplates) == 0 {
			t.Errorf("%s: no volumeClaimTemplates", where)
		}
		for _, pvc := range s.Spec.VolumeClaimTemplates {
			if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
				t.Errorf("%s: claim %s requests no storage", where, pvc.Name)
			}
			mounted := false
			for _, c := range s.Spec.Template.Spec.Containers {
				for _, m := range c.VolumeMounts {
					mounted = mounted || m.Name == pvc.Name
				}
			}
			if !mounted {
				t.Errorf("%s: claim %s is mounted by no container", where, pvc.Name)
			}
		}
		svc := r.service(s.Namespace, s.Spec.ServiceName)
		if svc == nil {
			t.Errorf("%s: serviceName %q names no Service", where, s.Spec.ServiceName)
			continue
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s: Service %s is not headless (clusterIP: None)", where, svc.Name)
		}
		if ok, _ := matches(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, s.Spec.Template.Labels); !ok {
			t.Errorf("%s: its Service %s does not select its pods", where, svc.Name)
		}
		if !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("%s: Service %s must publish not-ready addresses (peers resolve one another before they are ready)", where, svc.Name)
		}
		for _, c := range s.Spec.Template.Spec.Containers {
			if imageName(c.Image) != "slotkv-storage" {
				continue
			}
			// The node id is the pod name, so it stays with the volume.
			if !fieldRefEnv(c, "SLOTKV_NODE_ID", "metadata.name") {
				t.Errorf("%s: SLOTKV_NODE_ID must come from metadata.name", where)
			}
			// The data directory is on the claim.
			dir, _ := envValue(c, "SLOTKV_DATA_DIR")
			onClaim := false
			for _, m := range c.VolumeMounts {
				if slices.ContainsFunc(s.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name }) &&
					(dir.Value == m.MountPath || strings.HasPrefix(dir.Value, strings.TrimSuffix(m.MountPath, "/")+"/")) {
					onClaim = true
				}
			}
			if !onClaim {
				t.Errorf("%s: SLOTKV_DATA_DIR %q is not on a volumeClaimTemplate", where, dir.Value)
			}
			// Advertised addresses: $(SLOTKV_NODE_ID).<headless service>...,
			// on the port the node listens on.
			for adv, listen := range map[string]string{
				"SLOTKV_ADVERTISE_GRPC": "SLOTKV_GRPC_ADDR", "SLOTKV_ADVERTISE_HTTP": "SLOTKV_HTTP_ADDR", "SLOTKV_ADVERTISE_RESP": "SLOTKV_RESP_ADDR",
			} {
				a, _ := envValue(c, adv)
				l, _ := envValue(c, listen)
				host, port, err := net.SplitHostPort(a.Value)
				_, lport, lerr := net.SplitHostPort(l.Value)
				if err != nil || lerr != nil {
					t.Errorf("%s: %s %q and %s %q must both be host:port", where, adv, a.Value, listen, l.Value)
					continue
				}
				if !strings.HasPrefix(host, "$(SLOTKV_NODE_ID)."+s.Spec.ServiceName+".") && host != "$(SLOTKV_NODE_ID)."+s.Spec.ServiceName {
					t.Errorf("%s: %s %q is not the pod's DNS name under %s", where, adv, a.Value, s.Spec.ServiceName)
				}
				if port != lport {
					t.Errorf("%s: %s port %s, but %s listens on %s", where, adv, port, listen, lport)
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
					t.Errorf("%s: %s port %s is not a port of Service %s", where, adv, port, svc.Name)
				}
			}
		}
	}
}

// checkServices: every Service selects some pods and targets ports they
// declare.
func checkServices(t reporter, r *rendered, ws []workload) {
	for _, svc := range r.services {
		where := "Service " + svc.Name
		var selected []workload
		for _, w := range ws {
			if ok, _ := matches(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, w.template.Labels); ok && w.namespace == svc.Namespace {
				selected = append(selected, w)
			}
		}
		if len(selected) == 0 {
			t.Errorf("%s: selector %v matches no pod template", where, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			for _, w := range selected {
				if !slices.ContainsFunc(w.template.Spec.Containers, func(c corev1.Container) bool { _, ok := containerPort(c, target); return ok }) {
					t.Errorf("%s: port %s targets %s, which %s does not declare", where, p.Name, target.String(), w)
				}
			}
		}
	}
}

// checkAddresses: the addresses slotkv services dial name a Service, or a
// pod of a StatefulSet under its headless Service, on one of its ports.
func checkAddresses(t reporter, r *rendered, ws []workload) {
	lists := map[string]bool{"SLOTKV_STORAGE": true, "SLOTKV_ETCD_ENDPOINTS": true}
	for _, w := range ws {
		for _, c := range w.template.Spec.Containers {
			for _, e := range c.Env {
				switch e.Name {
				case "SLOTKV_STORAGE", "SLOTKV_ETCD_ENDPOINTS", "SLOTKV_ROUTER", "SLOTKV_MIGRATOR", "SLOTKV_DOWNLOADER":
				default:
					continue
				}
				addrs := []string{e.Value}
				if lists[e.Name] {
					addrs = strings.Split(e.Value, ",")
				}
				for _, a := range addrs {
					if err := r.checkAddr(w.namespace, a); err != nil {
						t.Errorf("%s container %s: %s: %v", w, c.Name, e.Name, err)
					}
				}
			}
		}
	}
}

func (r *rendered) checkAddr(namespace, addr string) error {
	hostPort := strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	hasPort := func(svc *corev1.Service) error {
		if slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			return nil
		}
		return fmt.Errorf("%q: port %s is not a port of Service %s", addr, port, svc.Name)
	}
	label := strings.Split(host, ".")
	if svc := r.service(namespace, label[0]); svc != nil {
		return hasPort(svc)
	}
	if len(label) >= 2 {
		svc := r.service(namespace, label[1])
		for _, s := range r.statefulSets {
			if s.Namespace != namespace || s.Spec.ServiceName != label[1] || svc == nil {
				continue
			}
			ord, ok := strings.CutPrefix(label[0], s.Name+"-")
			n, err := strconv.Atoi(ord)
			if !ok || err != nil || n < 0 || n >= int(replicas(s.Spec.Replicas)) {
				return fmt.Errorf("%q: %s is no pod of StatefulSet %s (%d replicas)", addr, label[0], s.Name, replicas(s.Spec.Replicas))
			}
			return hasPort(svc)
		}
	}
	return fmt.Errorf("%q names neither a Service nor a StatefulSet pod under its headless Service", addr)
}

// checkEtcd: the static initial cluster names exactly the StatefulSet's
// pods, at their DNS names, and every flag is etcd's.
func checkEtcd(t reporter, r *rendered, ws []workload) {
	seen := false
	for _, w := range ws {
		for _, c := range w.template.Spec.Containers {
			if imageName(c.Image) != etcdImage {
				continue
			}
			seen = true
			where := fmt.Sprintf("%s container %s", w, c.Name)
			if w.kind != "StatefulSet" {
				t.Errorf("%s: etcd needs a StatefulSet", where)
				continue
			}
			flags := map[string]string{}
			for _, a := range c.Args {
				name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.HasPrefix(a, "--") || !ok {
					t.Errorf("%s: arg %q: want --flag=value", where, a)
					continue
				}
				if !etcdFlags[name] {
					t.Errorf("%s: --%s is not an etcd flag this test knows (etcdFlags)", where, name)
				}
				flags[name] = value
			}
			if !fieldRefEnv(c, "POD_NAME", "metadata.name") || flags["name"] != "$(POD_NAME)" {
				t.Errorf("%s: --name must be $(POD_NAME), from metadata.name", where)
			}
			for _, f := range []string{"data-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state"} {
				if flags[f] == "" {
					t.Errorf("%s: --%s is not set", where, f)
				}
			}
			var members []string
			for _, m := range strings.Split(flags["initial-cluster"], ",") {
				name, url, _ := strings.Cut(m, "=")
				members = append(members, name)
				if !strings.HasPrefix(url, "http://"+name+"."+w.serviceName+".") || !strings.HasSuffix(url, ":2380") {
					t.Errorf("%s: --initial-cluster member %s at %q, want http://%s.%s...:2380", where, name, url, name, w.serviceName)
				}
			}
			var want []string
			for i := range w.replicas {
				want = append(want, fmt.Sprintf("%s-%d", w.name, i))
			}
			if !slices.Equal(members, want) {
				t.Errorf("%s: --initial-cluster members %v, want the StatefulSet's pods %v", where, members, want)
			}
			if p := flags["initial-advertise-peer-urls"]; !strings.HasPrefix(p, "http://$(POD_NAME)."+w.serviceName+".") {
				t.Errorf("%s: --initial-advertise-peer-urls %q is not the pod's DNS name", where, p)
			}
			if p := flags["advertise-client-urls"]; !strings.HasPrefix(p, "http://$(POD_NAME)."+w.serviceName+".") {
				t.Errorf("%s: --advertise-client-urls %q is not the pod's DNS name", where, p)
			}
			dataOnClaim := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return slices.ContainsFunc(w.claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name }) &&
					strings.HasPrefix(flags["data-dir"], strings.TrimSuffix(m.MountPath, "/")+"/")
			})
			if !dataOnClaim {
				t.Errorf("%s: --data-dir %q is not in a subdirectory of a volumeClaimTemplate", where, flags["data-dir"])
			}
		}
	}
	if !seen {
		t.Errorf("no etcd container")
	}
}

// checkSecrets: every Secret a pod mounts exists (where the kustomization
// is deployable) with the keys it mounts, and the token files the
// services read are files of a mounted Secret.
func checkSecrets(t reporter, r *rendered, ws []workload, deployable bool) {
	for _, w := range ws {
		secretVols := map[string]*corev1.SecretVolumeSource{}
		for _, v := range w.template.Spec.Volumes {
			if v.Secret == nil {
				continue
			}
			secretVols[v.Name] = v.Secret
			s := r.secret(w.namespace, v.Secret.SecretName)
			if s == nil {
				if deployable && (v.Secret.Optional == nil || !*v.Secret.Optional) {
					t.Errorf("%s: volume %s mounts Secret %s, which is not rendered", w, v.Name, v.Secret.SecretName)
				}
				continue
			}
			for _, it := range v.Secret.Items {
				if _, ok := s.Data[it.Key]; !ok {
					if _, ok := s.StringData[it.Key]; !ok {
						t.Errorf("%s: volume %s mounts key %s, which Secret %s lacks", w, v.Name, it.Key, s.Name)
					}
				}
			}
		}
		for _, c := range w.template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					t.Errorf("%s container %s: env %s from a Secret: mount it and use the _FILE variable instead (no tokens in the environment)", w, c.Name, e.Name)
				}
				if !strings.HasSuffix(e.Name, "_TOKEN_FILE") {
					continue
				}
				if !fileInSecret(e.Value, c, secretVols) {
					t.Errorf("%s container %s: %s %q is not a file of a mounted Secret", w, c.Name, e.Name, e.Value)
				}
			}
		}
	}
}

// fileInSecret reports whether path is a file that a Secret volume mount
// of c provides.
func fileInSecret(path string, c corev1.Container, vols map[string]*corev1.SecretVolumeSource) bool {
	for _, m := range c.VolumeMounts {
		src, ok := vols[m.Name]
		if !ok {
			continue
		}
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		if m.SubPath != "" {
			continue
		}
		if len(src.Items) == 0 {
			return !strings.Contains(rel, "/") // a key of the Secret
		}
		for _, it := range src.Items {
			if it.Path == rel {
				return true
			}
		}
	}
	return false
}

func checkNamespace(t reporter, r *rendered, ns string) {
	if !slices.ContainsFunc(r.namespaces, func(n *corev1.Namespace) bool { return n.Name == ns }) {
		t.Errorf("Namespace %s is not rendered", ns)
	}
	objs := []metav1.Object{}
	for _, o := range r.statefulSets {
		objs = append(objs, o)
	}
	for _, o := range r.deployments {
		objs = append(objs, o)
	}
	for _, o := range r.services {
		objs = append(objs, o)
	}
	for _, o := range r.secrets {
		objs = append(objs, o)
	}
	for _, o := range r.configMaps {
		objs = append(objs, o)
	}
	for _, o := range r.pdbs {
		objs = append(objs, o)
	}
	for _, o := range r.netpols {
		objs = append(objs, o)
	}
	for _, o := range objs {
		if o.GetNamespace() != ns {
			t.Errorf("%s: namespace %q, want %q", o.GetName(), o.GetNamespace(), ns)
		}
	}
}

// checkNetworkPolicies: a policy selects pods, its peers and ports exist,
// and every slotkv pod configured with etcd may reach the client port of
// the etcd pods (a policy that selects a pod denies what it does not
// allow).
func checkNetworkPolicies(t reporter, r *rendered, ws []workload) {
	selects := func(sel metav1.LabelSelector, namespace string) []workload {
		var out []workload
		for _, w := range ws {
			if ok, _ := matches(&sel, w.template.Labels); ok && w.namespace == namespace {
				out = append(out, w)
			}
		}
		return out
	}
	for _, np := range r.netpols {
		where := "NetworkPolicy " + np.Name
		targets := selects(np.Spec.PodSelector, np.Namespace)
		if len(targets) == 0 {
			t.Errorf("%s: podSelector matches no pod template", where)
		}
		for _, rule := range np.Spec.Ingress {
			for _, from := range rule.From {
				if from.PodSelector != nil && from.NamespaceSelector == nil && len(selects(*from.PodSelector, np.Namespace)) == 0 {
					t.Errorf("%s: peer %v matches no pod template", where, from.PodSelector.MatchLabels)
				}
			}
			for _, p := range rule.Ports {
				for _, w := range targets {
					if p.Port != nil && !slices.ContainsFunc(w.template.Spec.Containers, func(c corev1.Container) bool { _, ok := containerPort(c, *p.Port); return ok }) {
						t.Errorf("%s: port %s is not declared by %s", where, p.Port.String(), w)
					}
				}
			}
		}
	}
	for _, w := range ws {
		for _, c := range w.template.Spec.Containers {
			e, ok := envValue(c, "SLOTKV_ETCD_ENDPOINTS")
			if !ok {
				continue
			}
			for _, ep := range strings.Split(e.Value, ",") {
				host, port, err := net.SplitHostPort(strings.TrimPrefix(ep, "http://"))
				if err != nil {
					continue // checkAddresses reports it
				}
				svc := r.service(w.namespace, strings.Split(host, ".")[0])
				if svc == nil {
					continue
				}
				for _, etcd := range selects(metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, w.namespace) {
					var target intstr.IntOrString
					for _, sp := range svc.Spec.Ports {
						if strconv.Itoa(int(sp.Port)) == port {
							target = sp.TargetPort
						}
					}
					if !r.ingressAllowed(w, etcd, target) {
						t.Errorf("%s container %s: the network policies of %s do not let it reach %s port %s", w, c.Name, etcd, ep, target.String())
					}
				}
			}
		}
	}
}

// ingressAllowed reports whether the policies selecting to's pods let
// from's pods in on port (allowed when none selects them).
func (r *rendered) ingressAllowed(from, to workload, port intstr.IntOrString) bool {
	selected := false
	for _, np := range r.netpols {
		if ok, _ := matches(&np.Spec.PodSelector, to.template.Labels); !ok || np.Namespace != to.namespace {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			portOK := len(rule.Ports) == 0 || slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool {
				return p.Port != nil && *p.Port == port
			})
			fromOK := len(rule.From) == 0 || slices.ContainsFunc(rule.From, func(peer networkingv1.NetworkPolicyPeer) bool {
				ok, _ := matches(peer.PodSelector, from.template.Labels)
				return ok && peer.NamespaceSelector == nil
			})
			if portOK && fromOK {
				return true
			}
		}
	}
	return !selected
}

// spreads reports whether w's pods keep apart on kubernetes.io/hostname
// (a required or preferred anti-affinity term that selects them).
func spreads(w workload) bool {
	a := w.template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		return false
	}
	terms := slices.Clone(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
	for _, p := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, p.PodAffinityTerm)
	}
	return slices.ContainsFunc(terms, func(term corev1.PodAffinityTerm) bool {
		ok, _ := matches(term.LabelSelector, w.template.Labels)
		return ok && term.TopologyKey == "kubernetes.io/hostname"
	})
}
