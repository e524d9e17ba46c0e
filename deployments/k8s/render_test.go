package k8s

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// scheme knows the API groups the manifests may use. Decoding goes
// through it, so a kind outside them fails ("no kind ... is registered"),
// and decode below accepts only the kinds the checks know.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictYAML is apimachinery's strict decoder, the one the API server uses
// for fieldValidation=Strict: an unknown field, a field spelled with the
// wrong case and a duplicate field are errors that name the field's path.
var strictYAML = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// rendered is a kustomization's output, decoded into the API types.
type rendered struct {
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	secrets      []*corev1.Secret
	configMaps   []*corev1.ConfigMap
	namespaces   []*corev1.Namespace
	pdbs         []*policyv1.PodDisruptionBudget
	netpols      []*networkingv1.NetworkPolicy
}

// render builds the kustomization in dir (a directory on disk, as
// `kubectl apply -k` would) and decodes every resource strictly.
func render(dir string) (*rendered, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	r := &rendered{}
	var errs []string
	for _, res := range m.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", res.GetKind(), res.GetName(), err)
		}
		if err := r.decode(y); err != nil {
			errs = append(errs, fmt.Sprintf("%s %s: %v", res.GetKind(), res.GetName(), err))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("kustomize build %s:\n%s", dir, strings.Join(errs, "\n"))
	}
	return r, nil
}

// decode decodes one YAML document strictly into its API type and files
// it; a kind the checks do not know is an error, so a new kind gets checks
// before it gets deployed.
func (r *rendered) decode(y []byte) error {
	obj, gvk, err := strictYAML.Decode(y, nil, nil)
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case *appsv1.StatefulSet:
		r.statefulSets = append(r.statefulSets, o)
	case *appsv1.Deployment:
		r.deployments = append(r.deployments, o)
	case *corev1.Service:
		r.services = append(r.services, o)
	case *corev1.Secret:
		r.secrets = append(r.secrets, o)
	case *corev1.ConfigMap:
		r.configMaps = append(r.configMaps, o)
	case *corev1.Namespace:
		r.namespaces = append(r.namespaces, o)
	case *policyv1.PodDisruptionBudget:
		r.pdbs = append(r.pdbs, o)
	case *networkingv1.NetworkPolicy:
		r.netpols = append(r.netpols, o)
	default:
		return fmt.Errorf("kind %s is not one the checks know: add it to rendered.decode and check it", gvk)
	}
	return nil
}
