package deploycheck_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// recorder collects a check's errors instead of failing the test.
type recorder struct {
	*testing.T
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestChecksCatchMistakes renders the broken kustomizations of
// testdata/broken (each the base with one mistake a reviewer would
// catch) and expects the checks to name it.
func TestChecksCatchMistakes(t *testing.T) {
	cases := []struct {
		dir  string
		want string
	}{
		{"misspelt-field", `unknown field "spec.template.spec.containers[0].readinesProbe"`},
		{"unread-variable", "sets MW_SENDR_WORKERS (from ConfigMap sender-env"},
		{"missing-required", "the inbound-dsn refuses this environment: config: invalid: MW_BOUNCE_DOMAINS"},
		{"bad-rules-file", "the sender refuses this environment: config: invalid: MW_RESPONSE_RULES"},
		{"probe-port", "the readiness probe's port 9090 is 0, but MW_HTTP_ADDR listens on 8080"},
		{"undeclared-port", "the inbound-dsn listens on 2526 (MW_SMTP_ADDR) but the container does not declare it"},
		{"short-grace", "terminationGracePeriodSeconds 20s is not above the drain"},
		{"writable-root", "container reputation-monitor: the root filesystem is writable"},
		{"keda-wrong-consumer", `reads stream "DISPATCH" consumer "senders"`},
		{"hpa-and-keda", "both scale Deployment sender"},
	}
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			rec := &recorder{T: t}
			r, err := renderDir(tc.dir, filepath.Join("testdata", "broken", tc.dir))
			if err != nil {
				rec.errs = append(rec.errs, err.Error())
			} else {
				checkServices(rec, r)
				checkSecurity(rec, r)
				checkReferences(rec, r)
				checkSelectors(rec, r)
				checkAutoscaling(rec, r)
			}
			if !slices.ContainsFunc(rec.errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Fatalf("no check said %q; they said:\n%s", tc.want, strings.Join(rec.errs, "\n"))
			}
		})
	}
}
