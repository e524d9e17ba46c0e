package k8s

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestSlotkvctlPodOverrides: the pod spec slotkvctl.sh lays over kubectl
// run's is a valid Pod (strictly decoded: kubectl would ignore a misspelt
// field) that meets the same security checks as the workloads, and mounts
// the admin token file it names.
func TestSlotkvctlPodOverrides(t *testing.T) {
	b, err := os.ReadFile("slotkvctl.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	_, rest, ok := strings.Cut(s, "overrides=$(cat <<JSON\n")
	body, _, ok2 := strings.Cut(rest, "\nJSON\n)")
	if !ok || !ok2 {
		t.Fatal("slotkvctl.sh: no overrides=$(cat <<JSON ... JSON) here-document")
	}
	body = strings.NewReplacer("$name", "slotkvctl-1", "$secret", "slotkv-tokens-abc").Replace(body)
	if strings.Contains(body, "$") {
		t.Fatalf("slotkvctl.sh: the overrides expand variables this test does not know: %s", body)
	}
	// kubectl run's own part: kind, name, image, command.
	pod := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slotkvctl-1"}, ` + strings.TrimPrefix(strings.TrimSpace(body), "{")
	obj, _, err := strictYAML.Decode([]byte(pod), nil, nil)
	if err != nil {
		t.Fatalf("slotkvctl.sh overrides: %v", err)
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		t.Fatalf("decoded a %T, want a Pod", obj)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Name != "slotkvctl-1" {
		t.Fatalf("containers %v: want one named like the pod (kubectl run's container, merged by name)", p.Spec.Containers)
	}
	c := p.Spec.Containers[0]
	checkSecurity(t, "slotkvctl.sh pod", p.Spec, c)
	w := workload{kind: "Pod", name: p.Name, template: corev1.PodTemplateSpec{Spec: p.Spec}}
	checkVolumes(t, "slotkvctl.sh pod", w, c)
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range p.Spec.Volumes {
		if v.Secret != nil {
			vols[v.Name] = v.Secret
		}
	}
	e, _ := envValue(c, "SLOTKV_ADMIN_TOKEN_FILE")
	if !fileInSecret(e.Value, c, vols) {
		t.Errorf("SLOTKV_ADMIN_TOKEN_FILE %q is not a file of the mounted Secret", e.Value)
	}
	if p.Spec.SecurityContext == nil || p.Spec.SecurityContext.FSGroup == nil || *p.Spec.SecurityContext.FSGroup != imageUser {
		t.Errorf("fsGroup must be %d: the Secret's files are 0440, readable through the group only", imageUser)
	}
}
