package deploycheck_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
)

// TestServicesAsDeployed starts each of the five services with the
// environment the dev overlay gives its container (NATS, Redis and listen
// addresses pointed at the test's own), then checks what only a running
// service can tell: every path its probes and the PodMonitor ask for
// answers 200 on its HTTP port; and every metric, label and legend the
// Grafana dashboard and the PrometheusRule name is one the services
// register (read from their registries, so vectors without series count).
func TestServicesAsDeployed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the five services")
	}
	ns := testenv.NATS(t)
	_, redisURL := testenv.Redis(t)
	dev := render(t, variant{name: "dev", dir: "deploy/k8s/overlays/dev"})
	paths := map[string][]string{}
	for _, v := range variants {
		for svc, ps := range httpPaths(render(t, v)) {
			for _, p := range ps {
				if !slices.Contains(paths[svc], p) {
					paths[svc] = append(paths[svc], p)
				}
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type running struct {
		name  string
		addr  string
		rt    *service.Runtime
		drain time.Duration
		done  chan error
	}
	var all []*running
	stopAll := func() {
		cancel()
		for _, r := range all {
			select {
			case err := <-r.done:
				if err != nil {
					t.Errorf("%s: stopped with %v", r.name, err)
				}
			case <-time.After(r.drain + 5*time.Second):
				t.Errorf("%s: did not stop within MW_DRAIN_TIMEOUT (%s)", r.name, r.drain)
			}
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stopAll()
		}
	}()
	for _, s := range services {
		w, ok := dev.deployment(s.name)
		if !ok {
			t.Fatalf("dev: no Deployment %s", s.name)
		}
		c := serviceContainer(w, s.name)
		dc, problems := loadDeployed(t, dev, s, w.pod, c, func(name, value string) string {
			switch {
			case name == "NATS_URL":
				return ns.ClientURL()
			case name == "REDIS_URL":
				return redisURL
			case strings.HasSuffix(name, "_ADDR"):
				return "127.0.0.1:0"
			}
			return value
		})
		if len(problems) > 0 {
			t.Fatalf("dev: %s: %v", s.name, problems)
		}
		r := &running{name: s.name, drain: dc.drainTimeout(), done: make(chan error, 1)}
		listening := make(chan net.Addr, 1)
		started := make(chan *service.Runtime, 1)
		opts := service.Options{
			OnListen: func(a net.Addr) { listening <- a },
			OnStart:  func(rt *service.Runtime) { started <- rt },
		}
		go func() { r.done <- s.run(ctx, dc.cfg, slog.New(slog.DiscardHandler), opts) }()
		for r.addr == "" || r.rt == nil {
			select {
			case a := <-listening:
				r.addr = a.String()
			case rt := <-started:
				r.rt = rt
			case err := <-r.done:
				t.Fatalf("%s did not start with the dev overlay's environment: %v", s.name, err)
			case <-time.After(30 * time.Second):
				t.Fatalf("%s did not start in 30s", s.name)
			}
		}
		all = append(all, r)
	}

	get := func(addr, path string) (int, error) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	catalog := metricCatalog{}
	for _, r := range all {
		if len(paths[r.name]) == 0 {
			t.Errorf("%s: no probe or PodMonitor path in any variant", r.name)
		}
		for _, p := range paths[r.name] {
			var code int
			var err error
			testenv.Eventually(t, 20*time.Second, func() bool {
				code, err = get(r.addr, p)
				return code == http.StatusOK
			}, "%s: GET %s answered %d (%v)", r.name, p, code, err)
		}
		families, err := r.rt.Metrics.Catalog()
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		catalog.add(r.name, families)
	}

	t.Run("dashboard", func(t *testing.T) { checkDashboard(t, catalog) })
	t.Run("rules", func(t *testing.T) { checkRules(t, catalog) })
	stopAll()
}

// metricCatalog maps every series name the services export to its
// family's labels and the services that register it.
type metricCatalog map[string]*catalogEntry

type catalogEntry struct {
	family   service.MetricDesc
	series   string
	services []string
}

func (c metricCatalog) add(svc string, families []service.MetricDesc) {
	for _, f := range families {
		for _, s := range f.Series() {
			e, ok := c[s]
			if !ok {
				e = &catalogEntry{family: f, series: s}
				c[s] = e
			}
			e.services = append(e.services, svc)
		}
	}
}

// labels a series of the entry can carry: its family's, "le" on a
// histogram's buckets, "quantile" on a summary, and those Prometheus adds
// to every target (the Prometheus Operator's PodMonitor adds namespace,
// pod, container and endpoint).
func (e *catalogEntry) labels() []string {
	out := append(slices.Clone(e.family.Labels), targetLabels...)
	if e.family.Type == "histogram" && strings.HasSuffix(e.series, "_bucket") {
		out = append(out, "le")
	}
	if e.family.Type == "summary" && e.series == e.family.Name {
		out = append(out, "quantile")
	}
	return out
}

var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "service"}

// prometheusSeries are series Prometheus itself writes for every target.
var prometheusSeries = map[string]bool{"up": true}

// grafanaVariables are the interval variables Grafana replaces before
// sending a query.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// checkQuery parses a PromQL expression and checks every metric and label
// it names against the catalog. It returns the labels of its result.
func checkQuery(c metricCatalog, expr string) ([]string, []string) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVariables.Replace(expr))
	if err != nil {
		return nil, []string{fmt.Sprintf("does not parse: %v", err)}
	}
	var problems []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			problems = append(problems, checkSelector(c, n)...)
		case *parser.AggregateExpr:
			have := selectorLabels(c, n.Expr)
			for _, g := range n.Grouping {
				if !slices.Contains(have, g) {
					problems = append(problems, fmt.Sprintf("%s groups by %q, a label none of its series has", n.Op, g))
				}
			}
		}
		return nil
	})
	return resultLabels(c, e), problems
}

func checkSelector(c metricCatalog, vs *parser.VectorSelector) []string {
	if vs.Name == "" {
		return []string{fmt.Sprintf("%s names no metric", vs)}
	}
	var have []string
	if e, ok := c[vs.Name]; ok {
		have = e.labels()
	} else if prometheusSeries[vs.Name] {
		have = targetLabels
	} else {
		return []string{fmt.Sprintf("%s is no metric the services export", vs.Name)}
	}
	var problems []string
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel && !slices.Contains(have, m.Name) {
			problems = append(problems, fmt.Sprintf("%s has no label %q (it has %v)", vs.Name, m.Name, have))
		}
	}
	return problems
}

// selectorLabels are the labels any series selected under n can carry.
func selectorLabels(c metricCatalog, n parser.Node) []string {
	var out []string
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if e, ok := c[vs.Name]; ok {
				out = append(out, e.labels()...)
			} else if prometheusSeries[vs.Name] {
				out = append(out, targetLabels...)
			}
		}
		return nil
	})
	return out
}

// resultLabels approximates the labels of an expression's result, for
// checking the labels legends and alert annotations print.
func resultLabels(c metricCatalog, e parser.Expr) []string {
	switch e := e.(type) {
	case *parser.AggregateExpr:
		if e.Without {
			var out []string
			for _, l := range resultLabels(c, e.Expr) {
				if !slices.Contains(e.Grouping, l) {
					out = append(out, l)
				}
			}
			return out
		}
		return e.Grouping
	case *parser.BinaryExpr:
		// A vector result keeps the labels of its vector operand, the
		// left one when both are (the right's with group_right).
		if e.VectorMatching != nil && e.VectorMatching.Card == parser.CardOneToMany {
			return resultLabels(c, e.RHS)
		}
		if e.LHS.Type() == parser.ValueTypeVector {
			return resultLabels(c, e.LHS)
		}
		return resultLabels(c, e.RHS)
	case *parser.Call:
		var out []string
		for _, a := range e.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				out = append(out, resultLabels(c, a)...)
			}
		}
		if e.Func.Name == "histogram_quantile" {
			out = slices.DeleteFunc(out, func(l string) bool { return l == "le" })
		}
		return out
	case *parser.ParenExpr:
		return resultLabels(c, e.Expr)
	case *parser.UnaryExpr:
		return resultLabels(c, e.Expr)
	case *parser.MatrixSelector:
		return resultLabels(c, e.VectorSelector)
	case *parser.SubqueryExpr:
		return resultLabels(c, e.Expr)
	case *parser.StepInvariantExpr:
		return resultLabels(c, e.Expr)
	case *parser.VectorSelector:
		return selectorLabels(c, e)
	}
	return nil
}

var (
	legendLabel     = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)
	annotationLabel = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)
)

// dashboardPanel is what the check reads of a Grafana panel.
type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

func checkDashboard(t *testing.T, c metricCatalog) {
	b, err := os.ReadFile(filepath.Join(root, "deploy/k8s/components/monitoring/dashboards/mailwave.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string           `json:"uid"`
		Title  string           `json:"title"`
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("the dashboard has no uid, title or panels")
	}
	ids := map[int]bool{}
	queries := 0
	var walk func(ps []dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d is used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not query the dashboard's Prometheus data source", p.Title)
			}
			for _, q := range p.Targets {
				queries++
				result, problems := checkQuery(c, q.Expr)
				for _, pr := range problems {
					t.Errorf("panel %q query %s: %s", p.Title, q.RefID, pr)
				}
				for _, m := range legendLabel.FindAllStringSubmatch(q.LegendFormat, -1) {
					if len(problems) == 0 && !slices.Contains(result, m[1]) {
						t.Errorf("panel %q query %s: the legend prints %q, which the result (labels %v) does not have", p.Title, q.RefID, m[1], result)
					}
				}
			}
		}
	}
	walk(d.Panels)
	t.Logf("%d dashboard queries checked against %d series names", queries, len(c))
}

func checkRules(t *testing.T, c metricCatalog) {
	r := render(t, variant{name: "prod", dir: "deploy/k8s/overlays/prod"})
	if len(r.rules) == 0 {
		t.Fatal("prod renders no PrometheusRule")
	}
	alerts := 0
	for _, pr := range r.rules {
		names := map[string]bool{}
		for _, g := range pr.Spec.Groups {
			for _, rule := range g.Rules {
				id := fmt.Sprintf("PrometheusRule %s group %s rule %s%s", pr.Name, g.Name, rule.Alert, rule.Record)
				if (rule.Alert == "") == (rule.Record == "") {
					t.Errorf("%s: a rule is an alert or a recording rule", id)
				}
				if rule.Alert != "" {
					alerts++
					if names[rule.Alert] {
						t.Errorf("%s: two alerts of that name", id)
					}
					names[rule.Alert] = true
					if s := rule.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
						t.Errorf("%s: severity %q; want critical, warning or info", id, s)
					}
					if rule.Annotations["summary"] == "" {
						t.Errorf("%s: no summary annotation", id)
					}
				}
				if rule.For != "" {
					if _, err := model.ParseDuration(rule.For); err != nil {
						t.Errorf("%s: for %q: %v", id, rule.For, err)
					}
				}
				result, problems := checkQuery(c, rule.Expr)
				for _, p := range problems {
					t.Errorf("%s: %s", id, p)
				}
				for _, a := range rule.Annotations {
					for _, m := range annotationLabel.FindAllStringSubmatch(a, -1) {
						if len(problems) == 0 && !slices.Contains(result, m[1]) {
							t.Errorf("%s: an annotation prints $labels.%s, which the alert (labels %v) does not have", id, m[1], result)
						}
					}
				}
			}
		}
	}
	t.Logf("%d alerts checked against %d series names", alerts, len(c))
}
