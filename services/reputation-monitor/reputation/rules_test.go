package reputation_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

func defaultPolicy(t *testing.T) *reputation.Policy {
	t.Helper()
	p, err := reputation.LoadPolicy(reputation.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func win(name string, c reputation.Counts) map[string]reputation.Counts {
	out := map[string]reputation.Counts{}
	for _, w := range reputation.Windows {
		out[w.Name] = reputation.Counts{}
	}
	out[name] = c
	return out
}

var (
	pause    = mailwavev1.PolicyAction_POLICY_ACTION_PAUSE
	throttle = mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE
	resume   = mailwavev1.PolicyAction_POLICY_ACTION_RESUME
	tenantG  = reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "google"}
	ipG      = reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "127.0.0.3", Provider: "google"}
	campG    = reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_CAMPAIGN, Value: "c1", Provider: "google"}
)

func current(action mailwavev1.PolicyAction, factor float64, by string, created time.Time, lasts time.Duration) *mailwavev1.PolicyChange {
	return &mailwavev1.PolicyChange{Action: action, RateFactor: factor, DecidedBy: by, CreatedAt: timestamppb.New(created),
		ExpiresAt: timestamppb.New(created.Add(lasts))}
}

func TestEvaluate(t *testing.T) {
	p := defaultPolicy(t)
	for _, tc := range []struct {
		name    string
		scope   reputation.Scope
		windows map[string]reputation.Counts
		cur     *mailwavev1.PolicyChange
		action  mailwavev1.PolicyAction // UNSPECIFIED: no change
		factor  float64
		rule    string
	}{
		{"quiet", tenantG, win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 2}), nil, 0, 0, ""},
		{"complaints over 0.1%", tenantG, win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 8}), nil, throttle, 0.5, "complaint-throttle"},
		{"complaints over 0.3%", tenantG, win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 20}), nil, pause, 0, "complaint-pause"},
		{"below minimum volume", tenantG, win("1h", reputation.Counts{reputation.Delivered: 999, reputation.Complained: 50}), nil, 0, 0, ""},
		{"already paused", tenantG, win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 20}),
			current(pause, 0, "complaint-pause", t0.Add(-time.Minute), time.Hour), 0, 0, ""},
		{"throttled, then worse", tenantG, win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 20}),
			current(throttle, 0.5, "complaint-throttle", t0.Add(-time.Minute), time.Hour), pause, 0, "complaint-pause"},
		{"other scope shape ignores complaint rules", ipG, win("1h", reputation.Counts{reputation.Delivered: 5000, reputation.Complained: 20}), nil, 0, 0, ""},
		{"campaign hard bounces", campG, win("1h", reputation.Counts{reputation.Delivered: 170, reputation.HardBounced: 30}), nil, pause, 0, "campaign-hard-bounces"},
		{"campaign hard bounces at 10%", campG, win("1h", reputation.Counts{reputation.Delivered: 180, reputation.HardBounced: 20}), nil, 0, 0, ""},
		{"ip blocked", ipG, win("15m", reputation.Counts{reputation.Delivered: 20, reputation.Deferred: 6, reputation.Blocked: 6}), nil, pause, 0, "ip-blocked"},
		{"deferrals step down", ipG, win("15m", reputation.Counts{reputation.Delivered: 70, reputation.Deferred: 30}), nil, throttle, 0.5, "deferrals"},
		{"deferrals step again after every", ipG, win("15m", reputation.Counts{reputation.Delivered: 70, reputation.Deferred: 30}),
			current(throttle, 0.5, "deferrals", t0.Add(-6*time.Minute), time.Hour), throttle, 0.25, "deferrals"},
		{"deferrals not before every", ipG, win("15m", reputation.Counts{reputation.Delivered: 70, reputation.Deferred: 30}),
			current(throttle, 0.5, "deferrals", t0.Add(-time.Minute), time.Hour), 0, 0, ""},
		{"deferrals floor", ipG, win("15m", reputation.Counts{reputation.Delivered: 70, reputation.Deferred: 30}),
			current(throttle, 0.125, "deferrals", t0.Add(-6*time.Minute), time.Hour), 0, 0, ""},
		{"deferrals recover", ipG, win("15m", reputation.Counts{reputation.Delivered: 100, reputation.Deferred: 1}),
			current(throttle, 0.25, "deferrals", t0.Add(-6*time.Minute), time.Hour), throttle, 0.5, "deferrals"},
		{"deferrals recover to resume", ipG, win("15m", reputation.Counts{reputation.Delivered: 100, reputation.Deferred: 1}),
			current(throttle, 0.5, "deferrals", t0.Add(-6*time.Minute), time.Hour), resume, 0, "deferrals"},
		{"recovery leaves others' throttles", ipG, win("15m", reputation.Counts{reputation.Delivered: 100, reputation.Deferred: 1}),
			current(throttle, 0.5, "resume", t0.Add(-6*time.Minute), time.Hour), 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := p.Evaluate(tc.scope, tc.windows, tc.cur, t0)
			if tc.action == 0 {
				if v != nil {
					t.Fatalf("want no change, got %+v", v)
				}
				return
			}
			if v == nil {
				t.Fatalf("want %v, got no change", tc.action)
			}
			if v.Action != tc.action || v.Factor != tc.factor || v.Rule != tc.rule {
				t.Errorf("got %v %g %s, want %v %g %s", v.Action, v.Factor, v.Rule, tc.action, tc.factor, tc.rule)
			}
			if v.Evidence["volume"] == "" || v.Reason == "" {
				t.Errorf("no evidence: %+v", v)
			}
		})
	}
}

func TestNextResume(t *testing.T) {
	p := defaultPolicy(t)
	steps := []struct {
		from   *mailwavev1.PolicyChange
		action mailwavev1.PolicyAction
		factor float64
	}{
		{&mailwavev1.PolicyChange{Action: pause}, throttle, 0.25},
		{&mailwavev1.PolicyChange{Action: throttle, RateFactor: 0.25}, throttle, 0.5},
		{&mailwavev1.PolicyChange{Action: throttle, RateFactor: 0.5}, resume, 0},
		{&mailwavev1.PolicyChange{Action: throttle, RateFactor: 0.3}, throttle, 0.5},
	}
	for _, s := range steps {
		a, f := p.NextResume(s.from)
		if a != s.action || f != s.factor {
			t.Errorf("after %v %g: %v %g, want %v %g", s.from.GetAction(), s.from.GetRateFactor(), a, f, s.action, s.factor)
		}
	}
}

func TestLoadPolicyRejects(t *testing.T) {
	base := string(reputation.DefaultPolicy())
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown key", "min_volume: 200", "min_volume: 200\n    colour: red", "colour"},
		{"unknown rate", "rate: hard_bounce_rate", "rate: bounce_ratio", "unknown rate"},
		{"unknown window", "window: 15m\n    min_volume: 20", "window: 10m\n    min_volume: 20", "unknown window"},
		{"unknown scope", "scopes: [campaign@provider]", "scopes: [campaign@isp]", "unknown scope"},
		{"unknown action", "action: pause\n    for: 6h", "action: stop\n    for: 6h", "unknown action"},
		{"rate threshold over 1", "above: 0.10", "above: 10", "above"},
		{"ladder not rising", "steps: [0.25, 0.5]", "steps: [0.5, 0.25]", "resume.steps"},
		{"refused code as listing", "127.0.0.2: \"SpamCop", "127.255.255.254: \"SpamCop", "error answer"},
		{"code outside 127/8", "127.0.0.2: \"Barracuda", "10.0.0.2: \"Barracuda", "127.0.0.0/8"},
		{"throttle without factor", "factor: 0.5\n", "factor: 1.5\n", "factor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.old) {
				t.Fatalf("default policy lacks %q", tc.old)
			}
			_, err := reputation.LoadPolicy([]byte(strings.Replace(base, tc.old, tc.new, 1)))
			if !errors.Is(err, reputation.ErrInvalidPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrInvalidPolicy mentioning %q", err, tc.want)
			}
		})
	}
}

func FuzzLoadPolicy(f *testing.F) {
	f.Add(reputation.DefaultPolicy())
	f.Add([]byte("rules: []\nresume: {steps: [0.5], step_for: 1m}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := reputation.LoadPolicy(b)
		if err != nil {
			return
		}
		// A policy that loads must evaluate without panicking.
		p.Evaluate(tenantG, win("1h", reputation.Counts{reputation.Delivered: 1e6, reputation.Complained: 1e5}), nil, t0)
	})
}

// Rules appear on /v1/status as their YAML reads.
func TestRuleJSON(t *testing.T) {
	p := defaultPolicy(t)
	var step reputation.Rule
	for _, r := range p.Rules {
		if r.Name == "deferrals" {
			step = r
		}
	}
	b, err := json.Marshal(step)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"deferrals","rate":"deferral_rate","scopes":["source_ip@provider"],"window":"15m","min_volume":100,` +
		`"above":0.2,"action":"step","step":0.5,"floor":0.125,"recover_below":0.05,"every":"5m0s","for":"2h0m0s"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
