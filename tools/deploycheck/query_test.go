package deploycheck_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/service"
)

// TestQueryCheck: the checker behind the dashboard and rules checks
// refuses what a reviewer would.
func TestQueryCheck(t *testing.T) {
	c := metricCatalog{}
	c.add("sender", []service.MetricDesc{
		{Name: "m_attempts_total", Type: "counter", Labels: []string{"outcome", "provider"}},
		{Name: "m_smtp_seconds", Type: "histogram", Labels: []string{"provider"}},
	})
	cases := []struct {
		expr    string
		labels  []string // the result's, when the query is good
		problem string   // a fragment of the problem, when it is not
	}{
		{expr: `sum by (provider) (rate(m_attempts_total{outcome="delivered"}[$__rate_interval]))`, labels: []string{"provider"}},
		{expr: `histogram_quantile(0.95, sum by (le, provider) (rate(m_smtp_seconds_bucket[5m])))`, labels: []string{"provider"}},
		{expr: `(sum(rate(m_attempts_total[15m])) or vector(0)) == 0`, labels: nil},
		{expr: `min by (pod) (up) == 0`, labels: []string{"pod"}},
		{expr: `sum(rate(m_attempt_total[5m]))`, problem: "m_attempt_total is no metric"},
		{expr: `rate(m_attempts_total{outcom="delivered"}[5m])`, problem: `no label "outcom"`},
		{expr: `sum by (source_ip) (rate(m_attempts_total[5m]))`, problem: `groups by "source_ip"`},
		{expr: `rate(m_smtp_seconds[5m])`, problem: "m_smtp_seconds is no metric"}, // a histogram is its _bucket, _sum, _count
		{expr: `m_smtp_seconds_count{le="1"}`, problem: `no label "le"`},
		{expr: `sum(rate(m_attempts_total[5m])`, problem: "does not parse"},
		{expr: `{provider="x"}`, problem: "names no metric"},
	}
	for _, tc := range cases {
		t.Run(tc.expr, func(t *testing.T) {
			labels, problems := checkQuery(c, tc.expr)
			if tc.problem == "" {
				if len(problems) > 0 {
					t.Fatalf("problems %v", problems)
				}
				slices.Sort(labels)
				if !slices.Equal(labels, tc.labels) {
					t.Fatalf("result labels %v, want %v", labels, tc.labels)
				}
				return
			}
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.problem) }) {
				t.Fatalf("problems %v, want one about %q", problems, tc.problem)
			}
		})
	}
}
