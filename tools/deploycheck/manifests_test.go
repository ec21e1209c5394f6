package deploycheck_test

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// workload is a pod template of a Deployment, StatefulSet or DaemonSet.
type workload struct {
	kind, name string
	labels     map[string]string
	pod        *corev1.PodSpec
	replicas   *int32 // nil: unset (or a DaemonSet)
}

func (w workload) String() string { return w.kind + "/" + w.name }

func (r *rendered) workloads() []workload {
	var out []workload
	for _, d := range r.deployments {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec, d.Spec.Replicas})
	}
	for _, s := range r.statefulSets {
		out = append(out, workload{"StatefulSet", s.Name, s.Spec.Template.Labels, &s.Spec.Template.Spec, s.Spec.Replicas})
	}
	for _, d := range r.daemonSets {
		out = append(out, workload{"DaemonSet", d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec, nil})
	}
	return out
}

func (r *rendered) deployment(name string) (workload, bool) {
	for _, w := range r.workloads() {
		if w.kind == "Deployment" && w.name == name {
			return w, true
		}
	}
	return workload{}, false
}

// selected returns the workloads whose pods sel selects.
func (r *rendered) selected(sel labels.Selector) []workload {
	var out []workload
	for _, w := range r.workloads() {
		if sel.Matches(labels.Set(w.labels)) {
			out = append(out, w)
		}
	}
	return out
}

// containerPort resolves a port (number or name) of a container.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// podPort resolves a port of any container of the pod.
func podPort(pod *corev1.PodSpec, p intstr.IntOrString) (int32, bool) {
	for i := range pod.Containers {
		if n, ok := containerPort(&pod.Containers[i], p); ok {
			return n, true
		}
	}
	return 0, false
}

// serviceContainer is the container of a service's Deployment that runs
// the service: the one named after it.
func serviceContainer(w workload, name string) *corev1.Container {
	for i := range w.pod.Containers {
		if w.pod.Containers[i].Name == name {
			return &w.pod.Containers[i]
		}
	}
	return nil
}

func TestOverlays(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r := render(t, v)
			checkServices(t, r)
			checkSecurity(t, r)
			checkReferences(t, r)
			checkSelectors(t, r)
			checkAutoscaling(t, r)
			if v.expect != nil {
				v.expect(t, r)
			}
		})
	}
}

// checkServices: each service's Deployment sets only variables the
// service reads, sets every one it requires, declares the ports it
// listens on (and only those), probes its HTTP port, and gives SIGTERM
// time to drain.
func checkServices(t reporter, r *rendered) {
	for _, s := range services {
		w, ok := r.deployment(s.name)
		if !ok {
			t.Errorf("%s: no Deployment %s", r.name, s.name)
			continue
		}
		c := serviceContainer(w, s.name)
		if c == nil {
			t.Errorf("%s: %s has no container named %s", r.name, w, s.name)
			continue
		}
		dc, problems := loadDeployed(t, r, s, w.pod, c, nil)
		for _, p := range problems {
			t.Errorf("%s: %s: %s", r.name, w, p)
		}
		if len(problems) > 0 {
			continue
		}
		listening := map[int32]string{}
		for name, port := range dc.listens {
			listening[int32(port)] = name
		}
		declared := map[int32]bool{}
		for _, p := range c.Ports {
			declared[p.ContainerPort] = true
			if _, ok := listening[p.ContainerPort]; !ok {
				t.Errorf("%s: %s declares port %d (%s), but the %s listens on %v", r.name, w, p.ContainerPort, p.Name, s.name, dc.listens)
			}
			if p.HostPort != 0 && p.HostPort != p.ContainerPort {
				t.Errorf("%s: %s maps host port %d to %d: with the host network they must be equal", r.name, w, p.HostPort, p.ContainerPort)
			}
		}
		for port, name := range listening {
			if !declared[port] && port != 0 {
				t.Errorf("%s: %s: the %s listens on %d (%s) but the container does not declare it", r.name, w, s.name, port, name)
			}
		}
		httpPort := int32(dc.listens["MW_HTTP_ADDR"])
		probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
		for kind, p := range probes {
			if p == nil {
				if kind != "startup" {
					t.Errorf("%s: %s has no %s probe", r.name, w, kind)
				}
				continue
			}
			if p.HTTPGet == nil {
				t.Errorf("%s: %s: the %s probe is not an HTTP GET", r.name, w, kind)
				continue
			}
			port, ok := containerPort(c, p.HTTPGet.Port)
			if !ok || port != httpPort {
				t.Errorf("%s: %s: the %s probe's port %s is %d, but MW_HTTP_ADDR listens on %d", r.name, w, kind, p.HTTPGet.Port.String(), port, httpPort)
			}
		}
		if c.LivenessProbe != nil && c.ReadinessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet != nil &&
			c.LivenessProbe.HTTPGet.Path == c.ReadinessProbe.HTTPGet.Path {
			t.Errorf("%s: %s: liveness and readiness probe the same path %s: a NATS or Redis outage would restart every pod", r.name, w, c.LivenessProbe.HTTPGet.Path)
		}
		// SIGTERM: the kubelet waits terminationGracePeriodSeconds in all,
		// preStop included, then kills.
		grace := 30 * time.Second
		if w.pod.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*w.pod.TerminationGracePeriodSeconds) * time.Second
		}
		need := dc.drainTimeout()
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			need += time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		if grace <= need {
			t.Errorf("%s: %s: terminationGracePeriodSeconds %s is not above the drain (MW_DRAIN_TIMEOUT and preStop: %s): pods are killed mid-drain", r.name, w, grace, need)
		}
	}
}

// checkSecurity: every container of every workload runs as non-root on a
// read-only root filesystem with every capability dropped, and has CPU
// and memory requests and limits.
func checkSecurity(t reporter, r *rendered) {
	for _, w := range r.workloads() {
		podNonRoot := w.pod.SecurityContext != nil && w.pod.SecurityContext.RunAsNonRoot != nil && *w.pod.SecurityContext.RunAsNonRoot
		containers := append(slices.Clone(w.pod.InitContainers), w.pod.Containers...)
		for _, c := range containers {
			id := fmt.Sprintf("%s: %s container %s", r.name, w, c.Name)
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s: no securityContext", id)
				continue
			}
			if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
				t.Errorf("%s: runAsNonRoot is not set", id)
			}
			if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
				t.Errorf("%s: runs as user 0", id)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: the root filesystem is writable", id)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", id)
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", id)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", id)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[res]
				lim, hasLim := c.Resources.Limits[res]
				if !hasReq || !hasLim {
					t.Errorf("%s: no %s request and limit", id, res)
					continue
				}
				if req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s above the limit %s", id, res, req.String(), lim.String())
				}
			}
		}
	}
}

// operatorSecrets are the Secrets the README's Deploying section tells
// the operator to create.
func operatorSecrets(t reporter) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Deploying\n")
	if !ok {
		t.Fatal("README.md has no Deploying section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	return section
}

// checkReferences: every ServiceAccount and ConfigMap a workload names is
// in the render; a Secret is in the render, or the README's Deploying
// section tells the operator to create it.
func checkReferences(t reporter, r *rendered) {
	docs := operatorSecrets(t)
	secret := func(id, name string) {
		if _, ok := r.secrets[name]; ok {
			return
		}
		if !strings.Contains(docs, "`"+name+"`") {
			t.Errorf("%s: %s uses the Secret %s, which is neither rendered nor listed in the README's Deploying section", r.name, id, name)
		}
	}
	configMap := func(id, name string, optional *bool) {
		if _, ok := r.configMaps[name]; !ok && (optional == nil || !*optional) {
			t.Errorf("%s: %s uses the ConfigMap %s, which the render does not hold", r.name, id, name)
		}
	}
	for _, w := range r.workloads() {
		if sa := w.pod.ServiceAccountName; sa != "" {
			if _, ok := r.accounts[sa]; !ok {
				t.Errorf("%s: %s runs as ServiceAccount %s, which the render does not hold", r.name, w, sa)
			}
		} else {
			t.Errorf("%s: %s has no ServiceAccount of its own", r.name, w)
		}
		for _, v := range w.pod.Volumes {
			switch {
			case v.ConfigMap != nil:
				configMap(w.String(), v.ConfigMap.Name, v.ConfigMap.Optional)
			case v.Secret != nil:
				secret(w.String(), v.Secret.SecretName)
			}
		}
		for _, c := range w.pod.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					secret(w.String(), e.ValueFrom.SecretKeyRef.Name)
				}
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					configMap(w.String(), e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Optional)
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					configMap(w.String(), e.ConfigMapRef.Name, e.ConfigMapRef.Optional)
				}
			}
		}
	}
}

// checkSelectors: Services, PodDisruptionBudgets and NetworkPolicies
// select pods that exist, on ports those pods declare.
func checkSelectors(t reporter, r *rendered) {
	for _, svc := range r.services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			if len(svc.Spec.Selector) > 0 {
				t.Errorf("%s: Service %s is an ExternalName with a selector", r.name, svc.Name)
			}
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		pods := r.selected(sel)
		if len(pods) == 0 {
			t.Errorf("%s: Service %s selects no pods", r.name, svc.Name)
			continue
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			for _, w := range pods {
				if _, ok := podPort(w.pod, target); !ok {
					t.Errorf("%s: Service %s port %s targets %s, which %s does not declare", r.name, svc.Name, p.Name, target.String(), w)
				}
			}
		}
	}
	for _, pdb := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || len(r.selected(sel)) == 0 {
			t.Errorf("%s: PodDisruptionBudget %s selects no pods (%v)", r.name, pdb.Name, err)
		}
	}
	for _, s := range services {
		found := false
		for _, pdb := range r.pdbs {
			sel, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if w, ok := r.deployment(s.name); ok && sel.Matches(labels.Set(w.labels)) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no PodDisruptionBudget covers the %s", r.name, s.name)
		}
	}
	for _, pm := range r.podMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		if err != nil {
			t.Errorf("%s: PodMonitor %s: %v", r.name, pm.Name, err)
			continue
		}
		// A PodMonitor of pods another component brings (the NATS
		// exporter) may select none.
		for _, w := range r.selected(sel) {
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				if _, ok := podPort(w.pod, intstr.FromString(ep.Port)); !ok {
					t.Errorf("%s: PodMonitor %s scrapes port %s, which %s does not declare", r.name, pm.Name, ep.Port, w)
				}
			}
		}
	}
	for _, np := range r.netpols {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Errorf("%s: NetworkPolicy %s: %v", r.name, np.Name, err)
			continue
		}
		pods := r.selected(sel)
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port == nil {
					continue
				}
				found := false
				for _, w := range pods {
					if _, ok := podPort(w.pod, *p.Port); ok {
						found = true
					}
				}
				if !found {
					t.Errorf("%s: NetworkPolicy %s opens port %s, which no pod it selects declares", r.name, np.Name, p.Port.String())
				}
			}
		}
	}
}

// httpPaths returns, per service, the paths a probe or a PodMonitor of
// the render asks the service's HTTP port for.
func httpPaths(r *rendered) map[string][]string {
	out := map[string][]string{}
	add := func(svc, path string) {
		if !slices.Contains(out[svc], path) {
			out[svc] = append(out[svc], path)
		}
	}
	for _, s := range services {
		w, ok := r.deployment(s.name)
		if !ok {
			continue
		}
		if c := serviceContainer(w, s.name); c != nil {
			for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && p.HTTPGet != nil {
					add(s.name, p.HTTPGet.Path)
				}
			}
		}
		for _, pm := range r.podMonitors {
			sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(w.labels)) {
				continue
			}
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				add(s.name, cmp.Or(ep.Path, "/metrics"))
			}
		}
	}
	return out
}

// checkAutoscaling: each autoscaler targets a Deployment of the render
// that leaves spec.replicas to it; KEDA's trigger reads the contract's
// stream and consumer from a NATS monitoring endpoint that exists.
func checkAutoscaling(t reporter, r *rendered) {
	targeted := map[string]string{}
	target := func(by, kind, name string) (workload, bool) {
		if kind != "Deployment" {
			t.Errorf("%s: %s scales a %s; Mailwave's scaled services are Deployments", r.name, by, kind)
			return workload{}, false
		}
		if other, ok := targeted[name]; ok {
			t.Errorf("%s: %s and %s both scale Deployment %s; use one of the two components", r.name, by, other, name)
		}
		targeted[name] = by
		w, ok := r.deployment(name)
		if !ok {
			t.Errorf("%s: %s scales Deployment %s, which the render does not hold", r.name, by, name)
			return w, false
		}
		if w.replicas != nil {
			t.Errorf("%s: %s is autoscaled by %s but sets spec.replicas: every apply would reset the autoscaler's count", r.name, w, by)
		}
		return w, true
	}
	for _, h := range r.hpas {
		w, ok := target("HorizontalPodAutoscaler "+h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
		if !ok {
			continue
		}
		for _, m := range h.Spec.Metrics {
			if m.Resource == nil {
				continue
			}
			for _, c := range w.pod.Containers {
				if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
					t.Errorf("%s: HorizontalPodAutoscaler %s scales on %s utilization, but container %s requests no %s", r.name, h.Name, m.Resource.Name, c.Name, m.Resource.Name)
				}
			}
		}
	}
	for _, so := range r.scaled {
		ref := so.Spec.ScaleTargetRef
		if ref.Kind == "" {
			ref.Kind = "Deployment"
		}
		if _, ok := target("ScaledObject "+so.Name, ref.Kind, ref.Name); !ok {
			continue
		}
		if ref.Name != mailwavev1.ConsumerSender {
			t.Errorf("%s: ScaledObject %s scales %s; the dispatch backlog is the sender's", r.name, so.Name, ref.Name)
		}
		if len(so.Spec.Triggers) == 0 {
			t.Errorf("%s: ScaledObject %s has no trigger", r.name, so.Name)
		}
		consumers := map[string]bool{}
		for _, tr := range so.Spec.Triggers {
			checkJetStreamTrigger(t, r, so.Name, tr.Type, tr.Metadata)
			consumers[tr.Metadata["consumer"]] = true
		}
		// The sender reads two consumers: a backlog on either is work.
		for _, c := range []string{mailwavev1.ConsumerSender, mailwavev1.ConsumerSenderTransactional} {
			if !consumers[c] {
				t.Errorf("%s: ScaledObject %s does not watch the %s consumer's backlog", r.name, so.Name, c)
			}
		}
	}
}

// checkJetStreamTrigger checks a KEDA nats-jetstream trigger against the
// contract and the NATS deployment of the render.
func checkJetStreamTrigger(t reporter, r *rendered, name, typ string, md map[string]string) {
	id := fmt.Sprintf("%s: ScaledObject %s", r.name, name)
	if typ != "nats-jetstream" {
		t.Errorf("%s: trigger %s; the dispatch backlog is read with KEDA's nats-jetstream scaler", id, typ)
		return
	}
	known := []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}
	for k := range md {
		if !slices.Contains(known, k) {
			t.Errorf("%s: unknown nats-jetstream trigger metadata %q", id, k)
		}
	}
	if md["stream"] != mailwavev1.StreamDispatch || (md["consumer"] != mailwavev1.ConsumerSender && md["consumer"] != mailwavev1.ConsumerSenderTransactional) {
		t.Errorf("%s: reads stream %q consumer %q; the contract's are %q and %q or %q", id, md["stream"], md["consumer"],
			mailwavev1.StreamDispatch, mailwavev1.ConsumerSender, mailwavev1.ConsumerSenderTransactional)
	}
	for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
		if v, ok := md[k]; ok {
			if n, err := strconv.Atoi(v); err != nil || n < 0 || (k == "lagThreshold" && n == 0) {
				t.Errorf("%s: %s=%q is not a positive count", id, k, v)
			}
		}
	}
	if md["account"] == "" {
		t.Errorf("%s: no account (the NATS account of the stream; $G without accounts)", id)
	}
	host, port, ok := strings.Cut(md["natsServerMonitoringEndpoint"], ":")
	if !ok {
		t.Errorf("%s: natsServerMonitoringEndpoint %q is not host:port", id, md["natsServerMonitoringEndpoint"])
		return
	}
	parts := strings.Split(host, ".")
	inCluster := len(parts) == 1 || (len(parts) >= 3 && parts[2] == "svc")
	if !inCluster {
		return // an external NATS: its monitoring port is the operator's
	}
	if len(parts) >= 2 && r.namespace != "" && parts[1] != r.namespace {
		t.Errorf("%s: the monitoring endpoint %s is in namespace %s, the render in %s", id, host, parts[1], r.namespace)
	}
	for _, svc := range r.services {
		if svc.Name != parts[0] {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if strconv.Itoa(int(p.Port)) != port {
				continue
			}
			if svc.Spec.Type == corev1.ServiceTypeExternalName {
				return // the external servers' port
			}
			for _, w := range r.selected(labels.SelectorFromSet(svc.Spec.Selector)) {
				n, ok := podPort(w.pod, p.TargetPort)
				if !ok {
					continue
				}
				if cm, ok := r.configMaps["nats-config"]; ok && !regexp.MustCompile(`(?m)^\s*http(_port)?\s*[:=]\s*("?[0-9.]*:)?`+strconv.Itoa(int(n))+`"?\s*$`).MatchString(cm.Data["nats.conf"]) {
					t.Errorf("%s: port %d of %s is not the NATS monitoring port of nats.conf", id, n, w)
				}
				return
			}
		}
	}
	t.Errorf("%s: the monitoring endpoint %s:%s is no port of a Service of the render", id, host, port)
}

// TestEveryComponentIsChecked: every component is rendered by some variant,
// so every one is checked.
func TestEveryComponentIsChecked(t *testing.T) {
	used := map[string]bool{}
	for _, v := range variants {
		for _, c := range v.components {
			used[filepath.Base(c)] = true
		}
		if v.dir == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, v.dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			Components []string `yaml:"components"`
		}
		if err := yaml.Unmarshal(b, &k); err != nil {
			t.Fatal(err)
		}
		for _, c := range k.Components {
			used[filepath.Base(c)] = true
		}
	}
	dirs, err := os.ReadDir(filepath.Join(root, "deploy/k8s/components"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if d.IsDir() && !used[d.Name()] {
			t.Errorf("component %s is in no checked variant: add one to variants", d.Name())
		}
	}
	if len(used) == 0 {
		t.Fatal("no components found")
	}
}

// deployedServices loads every service's configuration in r (the
// variant's other checks report problems).
func deployedServices(t *testing.T, r *rendered) map[string]*deployedConfig {
	out := map[string]*deployedConfig{}
	for _, s := range services {
		w, ok := r.deployment(s.name)
		if !ok {
			continue
		}
		if c := serviceContainer(w, s.name); c != nil {
			if dc, problems := loadDeployed(t, r, s, w.pod, c, nil); len(problems) == 0 {
				out[s.name] = dc
			}
		}
	}
	return out
}

// expectDev: one of everything, streams unreplicated.
func expectDev(t *testing.T, r *rendered) {
	for _, w := range r.workloads() {
		if w.replicas != nil && *w.replicas != 1 {
			t.Errorf("dev: %s runs %d replicas; development runs one of everything", w, *w.replicas)
		}
	}
	for name, dc := range deployedServices(t, r) {
		if v := dc.value("MW_STREAM_REPLICAS"); v != "1" {
			t.Errorf("dev: the %s replicates streams %s times on a single NATS server", name, v)
		}
	}
	if len(r.statefulSets) == 0 {
		t.Error("dev: no in-cluster NATS")
	}
}

// expectProd: streams replicated on a three-server NATS cluster, several
// replicas of every service spread over nodes, the sender pool scaled on
// its backlog, monitoring and network policies.
func expectProd(t *testing.T, r *rendered) {
	deployed := deployedServices(t, r)
	if len(deployed) != len(services) {
		t.Fatalf("prod: only %d services load their configuration", len(deployed))
	}
	for name, dc := range deployed {
		if v := dc.value("MW_STREAM_REPLICAS"); v != "3" {
			t.Errorf("prod: the %s creates streams with %s replicas, want 3 (R3 on the NATS cluster)", name, v)
		}
	}
	natsServers := 0
	for _, s := range r.statefulSets {
		if s.Name == "nats" && s.Spec.Replicas != nil {
			natsServers = int(*s.Spec.Replicas)
		}
	}
	routes := strings.Count(r.configMaps["nats-config"].Data["nats.conf"], "nats://nats-")
	if natsServers != 3 || routes != 3 {
		t.Errorf("prod: NATS runs %d servers with %d cluster routes, want 3 and 3", natsServers, routes)
	}
	minReplicas := map[string]int32{}
	for _, so := range r.scaled {
		if so.Spec.MinReplicaCount != nil {
			minReplicas[so.Spec.ScaleTargetRef.Name] = *so.Spec.MinReplicaCount
		}
	}
	for _, h := range r.hpas {
		if h.Spec.MinReplicas != nil {
			minReplicas[h.Spec.ScaleTargetRef.Name] = *h.Spec.MinReplicas
		}
	}
	if _, ok := minReplicas[mailwavev1.ConsumerSender]; !ok || len(r.scaled) == 0 {
		t.Error("prod: KEDA does not scale the sender pool")
	}
	for _, s := range services {
		w, _ := r.deployment(s.name)
		n := minReplicas[s.name]
		if w.replicas != nil {
			n = *w.replicas
		}
		if n < 2 {
			t.Errorf("prod: %s runs %d replicas; production runs at least two of each service", w, n)
		}
		spread := false
		if a := w.pod.Affinity; a != nil && a.PodAntiAffinity != nil {
			for _, term := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				spread = spread || term.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname"
			}
			for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
				spread = spread || term.TopologyKey == "kubernetes.io/hostname"
			}
		}
		if !spread {
			t.Errorf("prod: %s has no anti-affinity between its pods on one node", w)
		}
	}
	if len(r.netpols) == 0 || len(r.rules) == 0 || len(r.podMonitors) == 0 {
		t.Errorf("prod: %d network policies, %d alerting rules, %d pod monitors; want all three kinds", len(r.netpols), len(r.rules), len(r.podMonitors))
	}
}

// expectHostNetworkSenders: senders in the host network of the IP nodes,
// one per node (two would share the node's ports).
func expectHostNetworkSenders(t *testing.T, r *rendered) {
	w, ok := r.deployment(mailwavev1.ConsumerSender)
	if !ok {
		return
	}
	if !w.pod.HostNetwork || w.pod.NodeSelector["mailwave.io/sending-ips"] != "true" {
		t.Errorf("%s: the sender is not in the host network of the sending-IP nodes", r.name)
	}
	onePerNode := false
	if a := w.pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			onePerNode = onePerNode || term.TopologyKey == "kubernetes.io/hostname"
		}
	}
	if !onePerNode {
		t.Errorf("%s: senders in the host network need a required anti-affinity per node", r.name)
	}
}

// TestShippedRulesCopies: the rules files the base mounts are the ones
// the binaries ship (kustomize cannot read files outside deploy/k8s), so
// a deployment decides answers and rates as the tests of the services do.
func TestShippedRulesCopies(t *testing.T) {
	for copyOf, original := range map[string]string{
		"deploy/k8s/base/response-rules.yaml":    "pkg/response/default.yaml",
		"deploy/k8s/base/reputation-policy.yaml": "services/reputation-monitor/reputation/default.yaml",
	} {
		a, err := os.ReadFile(filepath.Join(root, copyOf))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(root, original))
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Errorf("%s differs from %s: cp %[2]s %[1]s", copyOf, original)
		}
	}
}
