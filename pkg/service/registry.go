package service

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Registry is a service's Prometheus registry. It also remembers the
// descriptor of every collector registered with it, so that Catalog can
// list every metric the service exports — vectors that have no series yet
// included, which a scrape of /metrics does not show. Dashboards and
// alerting rules are checked against that list.
type Registry struct {
	*prometheus.Registry

	mu    sync.Mutex
	known map[prometheus.Collector][]describedMetric
}

type describedMetric struct {
	desc *prometheus.Desc
	typ  string // from the collector's Go type; "" when it does not say
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{Registry: prometheus.NewRegistry(), known: map[prometheus.Collector][]describedMetric{}}
}

// Register registers c and remembers its descriptors.
func (r *Registry) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc, 16)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	typ := collectorType(c)
	var descs []describedMetric
	for d := range ch {
		descs = append(descs, describedMetric{desc: d, typ: typ})
	}
	r.mu.Lock()
	r.known[c] = descs
	r.mu.Unlock()
	return nil
}

// MustRegister registers every collector and panics on the first error,
// as prometheus.Registry.MustRegister does.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister unregisters c and forgets its descriptors.
func (r *Registry) Unregister(c prometheus.Collector) bool {
	ok := r.Registry.Unregister(c)
	if ok {
		r.mu.Lock()
		delete(r.known, c)
		r.mu.Unlock()
	}
	return ok
}

// MetricDesc describes one metric family a service exports.
type MetricDesc struct {
	// Name is the family name: a histogram's series add _bucket, _sum and
	// _count to it, a summary's _sum and _count.
	Name string
	Help string
	// Type is counter, gauge, histogram, summary or untyped; empty when
	// neither the collector's Go type nor a scrape says.
	Type string
	// Labels are the family's label names, constant ones included, sorted.
	Labels []string
}

// Series returns the names of the series the family is exported as.
func (m MetricDesc) Series() []string {
	switch m.Type {
	case "histogram":
		return []string{m.Name + "_bucket", m.Name + "_sum", m.Name + "_count"}
	case "summary":
		return []string{m.Name, m.Name + "_sum", m.Name + "_count"}
	}
	return []string{m.Name}
}

// Catalog lists every metric family registered, sorted by name. Types come
// from the collectors' Go types, else from a gather of the registry (a
// custom collector's families that have no series stay untyped, "").
func (r *Registry) Catalog() ([]MetricDesc, error) {
	r.mu.Lock()
	var all []describedMetric
	for _, ds := range r.known {
		all = append(all, ds...)
	}
	r.mu.Unlock()
	gathered := map[string]string{}
	mfs, err := r.Gather()
	if err != nil {
		return nil, fmt.Errorf("service: gather metrics: %w", err)
	}
	for _, mf := range mfs {
		gathered[mf.GetName()] = typeWord(mf.GetType())
	}
	byName := map[string]MetricDesc{}
	var errs []error
	for _, d := range all {
		m, err := parseDesc(d.desc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.Type = d.typ
		if m.Type == "" {
			m.Type = gathered[m.Name]
		}
		byName[m.Name] = m
	}
	out := make([]MetricDesc, 0, len(byName))
	for _, m := range byName {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b MetricDesc) int { return strings.Compare(a.Name, b.Name) })
	return out, errors.Join(errs...)
}

// collectorType names the metric type of the vectors and plain metrics
// client_golang defines; others (custom collectors, functions, plain
// histograms and summaries, which all emit a series) say nothing here.
func collectorType(c prometheus.Collector) string {
	switch c.(type) {
	case *prometheus.CounterVec:
		return "counter"
	case *prometheus.GaugeVec:
		return "gauge"
	case *prometheus.HistogramVec:
		return "histogram"
	case *prometheus.SummaryVec:
		return "summary"
	case prometheus.Gauge:
		return "gauge"
	case prometheus.Counter:
		// After Gauge: a Gauge has Inc and Add too.
		return "counter"
	}
	return ""
}

func typeWord(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	}
	return "untyped"
}

// parseDesc reads a descriptor's name, help and labels from its String
// form, the only way client_golang shows them:
//
//	Desc{fqName: "n", help: "h", unit: "u", constLabels: {a="b"}, variableLabels: {c,c(d)}}
//
// TestCatalog fails if a client_golang upgrade changes that form.
func parseDesc(d *prometheus.Desc) (MetricDesc, error) {
	if err := d.Err(); err != nil {
		return MetricDesc{}, fmt.Errorf("service: invalid metric descriptor: %w", err)
	}
	s := d.String()
	bad := func(what string) (MetricDesc, error) {
		return MetricDesc{}, fmt.Errorf("service: cannot read the %s of metric descriptor %s", what, s)
	}
	var m MetricDesc
	rest, ok := strings.CutPrefix(s, "Desc{fqName: ")
	if !ok {
		return bad("name")
	}
	var err error
	if m.Name, rest, err = quoted(rest); err != nil {
		return bad("name")
	}
	if rest, ok = strings.CutPrefix(rest, ", help: "); !ok {
		return bad("help")
	}
	if m.Help, rest, err = quoted(rest); err != nil {
		return bad("help")
	}
	if after, ok := strings.CutPrefix(rest, ", unit: "); ok {
		if _, rest, err = quoted(after); err != nil {
			return bad("unit")
		}
	}
	if rest, ok = strings.CutPrefix(rest, ", constLabels: {"); !ok {
		return bad("constant labels")
	}
	for !strings.HasPrefix(rest, "}") {
		name, after, ok := strings.Cut(rest, "=")
		if !ok {
			return bad("constant labels")
		}
		if _, rest, err = quoted(after); err != nil {
			return bad("constant labels")
		}
		m.Labels = append(m.Labels, name)
		rest = strings.TrimPrefix(rest, ",")
	}
	if rest, ok = strings.CutPrefix(rest, "}, variableLabels: {"); !ok {
		return bad("variable labels")
	}
	vars, ok := strings.CutSuffix(rest, "}}")
	if !ok {
		return bad("variable labels")
	}
	if vars != "" {
		for v := range strings.SplitSeq(vars, ",") {
			// c(name) marks a label with a value constraint.
			if inner, ok := strings.CutPrefix(v, "c("); ok {
				v = strings.TrimSuffix(inner, ")")
			}
			m.Labels = append(m.Labels, v)
		}
	}
	slices.Sort(m.Labels)
	return m, nil
}

// quoted reads a Go-quoted string at the start of s.
func quoted(s string) (string, string, error) {
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", "", err
	}
	v, err := strconv.Unquote(q)
	return v, s[len(q):], err
}
