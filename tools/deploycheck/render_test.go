package deploycheck_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// root is the repository root, seen from tools/deploycheck.
const root = "../.."

// rendered is one kustomization's output, decoded into typed objects.
type rendered struct {
	name         string
	namespace    string // of the namespaced objects
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	daemonSets   []*appsv1.DaemonSet
	services     []*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	accounts     map[string]*corev1.ServiceAccount
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	netpols      []*networkingv1.NetworkPolicy
	namespaces   []*corev1.Namespace
	scaled       []*scaledObject
	podMonitors  []*podMonitor
	rules        []*prometheusRule
}

// variant is a kustomization to render: an overlay of the repository, or
// base plus components, for the components no overlay uses.
type variant struct {
	name       string
	dir        string   // an overlay directory, relative to root
	components []string // or: base plus these components, relative to root
	// expect, when set, checks what this variant promises beyond what
	// every variant does.
	expect func(t *testing.T, r *rendered)
}

var variants = []variant{
	{name: "base", dir: "deploy/k8s/base"},
	{name: "dev", dir: "deploy/k8s/overlays/dev", expect: expectDev},
	{name: "prod", dir: "deploy/k8s/overlays/prod", expect: expectProd},
	{name: "hpa+ip-nodes", components: []string{
		"deploy/k8s/components/nats", "deploy/k8s/components/redis",
		"deploy/k8s/components/hpa-sender", "deploy/k8s/components/sender-ip-nodes",
	}, expect: expectHostNetworkSenders},
	{name: "external-nats+egress", components: []string{
		"deploy/k8s/components/redis-managed", "deploy/k8s/components/network-policies",
		"deploy/k8s/components/monitoring", "deploy/k8s/components/keda-sender",
		"deploy/k8s/components/nats-external", "deploy/k8s/components/sender-egress-socks",
	}},
}

func scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// render runs kustomize in process and decodes every object strictly:
// an unknown or misspelt field, a duplicate field or an unknown kind fails.
func render(t *testing.T, v variant) *rendered {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join(root, v.dir))
	if err != nil {
		t.Fatal(err)
	}
	if v.dir == "" {
		// kustomize accepts only relative paths to other kustomizations.
		dir = t.TempDir()
		rel := func(p string) string {
			abs, err := filepath.Abs(filepath.Join(root, p))
			if err != nil {
				t.Fatal(err)
			}
			r, err := filepath.Rel(dir, abs)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		var k strings.Builder
		fmt.Fprintf(&k, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: mailwave\nresources:\n  - %s\ncomponents:\n", rel("deploy/k8s/base"))
		for _, c := range v.components {
			fmt.Fprintf(&k, "  - %s\n", rel(c))
		}
		fmt.Fprintf(&k, "secretGenerator:\n  - name: mailwave-verp\n    literals: [keys=check-only-verp-key-0001]\n")
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := renderDir(v.name, dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// renderDir renders the kustomization in dir; name names it in errors.
func renderDir(name, dir string) (*rendered, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("%s: kustomize: %w", name, err)
	}
	sch, err := scheme()
	if err != nil {
		return nil, err
	}
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, sch, sch, kjson.SerializerOptions{Strict: true})
	out := &rendered{name: name, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, accounts: map[string]*corev1.ServiceAccount{}}
	for _, res := range m.Resources() {
		raw, err := res.MarshalJSON()
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%s %s/%s", name, res.GetKind(), res.GetName())
		if ns := res.GetNamespace(); ns != "" {
			out.namespace = ns
		}
		if res.GetApiVersion() == "keda.sh/v1alpha1" || res.GetApiVersion() == "monitoring.coreos.com/v1" {
			if err := out.decodeCustom(id, res.GetKind(), raw); err != nil {
				return nil, err
			}
			continue
		}
		obj, _, err := strict.Decode(raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			out.deployments = append(out.deployments, o)
		case *appsv1.StatefulSet:
			out.statefulSets = append(out.statefulSets, o)
		case *appsv1.DaemonSet:
			out.daemonSets = append(out.daemonSets, o)
		case *corev1.Service:
			out.services = append(out.services, o)
		// Generated ConfigMaps and Secrets are found by their rendered
		// name and by the name the generator gives (without the hash).
		case *corev1.ConfigMap:
			out.configMaps[o.Name] = o
			out.configMaps[hashSuffix.ReplaceAllString(o.Name, "")] = o
		case *corev1.Secret:
			out.secrets[o.Name] = o
			out.secrets[hashSuffix.ReplaceAllString(o.Name, "")] = o
		case *corev1.ServiceAccount:
			out.accounts[o.Name] = o
		case *corev1.Namespace:
			out.namespaces = append(out.namespaces, o)
		case *policyv1.PodDisruptionBudget:
			out.pdbs = append(out.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			out.hpas = append(out.hpas, o)
		case *networkingv1.NetworkPolicy:
			out.netpols = append(out.netpols, o)
		default:
			return nil, fmt.Errorf("%s: no check knows the kind %T", id, obj)
		}
	}
	return out, nil
}

// hashSuffix is the content hash kustomize appends to generated names.
var hashSuffix = regexp.MustCompile(`-[bcdfghkmnt2-9]{10}$`)

// reporter is what the checks need of a test: *testing.T, or a recorder
// that collects the errors of a check expected to fail.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Fatal(args ...any)
	TempDir() string
}

// strictJSON decodes raw into dst, refusing fields dst does not declare.
func strictJSON(raw []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

func (r *rendered) decodeCustom(id, kind string, raw []byte) error {
	var err error
	switch kind {
	case "ScaledObject":
		o := &scaledObject{}
		err = strictJSON(raw, o)
		r.scaled = append(r.scaled, o)
	case "PodMonitor":
		o := &podMonitor{}
		err = strictJSON(raw, o)
		r.podMonitors = append(r.podMonitors, o)
	case "PrometheusRule":
		o := &prometheusRule{}
		err = strictJSON(raw, o)
		r.rules = append(r.rules, o)
	default:
		return fmt.Errorf("%s: no check knows the kind", id)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	return nil
}
