package reputation

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

//go:embed default.yaml
var defaultPolicy []byte

// DefaultPolicy returns the shipped policy YAML.
func DefaultPolicy() []byte { return bytes.Clone(defaultPolicy) }

// ErrInvalidPolicy wraps every problem found while loading a policy.
var ErrInvalidPolicy = errors.New("reputation: invalid policy")

// Policy is the monitor's configuration of decisions: rules, the resume
// ladder and the blocklists.
type Policy struct {
	Resume     Resume      `yaml:"resume"`
	Rules      []Rule      `yaml:"rules"`
	Blocklists []Blocklist `yaml:"blocklists"`
}

// Resume is the ladder a lapsed pause climbs back to full rate.
type Resume struct {
	Steps   []float64     `yaml:"steps"`
	StepFor time.Duration `yaml:"step_for"`
}

// Rule turns a rate of a scope over a window into a policy.
type Rule struct {
	Name string `yaml:"name" json:"name"`
	// Rate or Count names what is compared with Above.
	Rate      string   `yaml:"rate" json:"rate,omitempty"`
	Count     string   `yaml:"count" json:"count,omitempty"`
	Scopes    []string `yaml:"scopes" json:"scopes"`
	Window    string   `yaml:"window" json:"window"`
	MinVolume int64    `yaml:"min_volume" json:"min_volume"`
	Above     float64  `yaml:"above" json:"above"`
	// Action is pause, throttle or step.
	Action string  `yaml:"action" json:"action"`
	Factor float64 `yaml:"factor" json:"factor,omitempty"`
	// Step, Floor, RecoverBelow and Every shape a step rule.
	Step         float64       `yaml:"step" json:"step,omitempty"`
	Floor        float64       `yaml:"floor" json:"floor,omitempty"`
	RecoverBelow float64       `yaml:"recover_below" json:"recover_below,omitempty"`
	Every        time.Duration `yaml:"every" json:"-"`
	// For is how long the policy holds before it lapses.
	For time.Duration `yaml:"for" json:"-"`
}

// MarshalJSON renders a rule as its YAML reads, durations as "5m0s".
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	out := struct {
		plain
		Every string `json:"every,omitempty"`
		For   string `json:"for"`
	}{plain: plain(r), For: r.For.String()}
	if r.Every > 0 {
		out.Every = r.Every.String()
	}
	return json.Marshal(out)
}

// Blocklist is one DNSBL zone (RFC 5782).
type Blocklist struct {
	Zone string `yaml:"zone"`
	// Kind is "ip" or "domain".
	Kind string `yaml:"kind"`
	// Codes maps each answer that means "listed" to its meaning.
	Codes map[string]string `yaml:"codes"`
}

// Rule actions.
const (
	ActionPause    = "pause"
	ActionThrottle = "throttle"
	ActionStep     = "step"
)

var scopeShapes = []string{"source_ip@provider", "sending_domain@provider", "tenant@provider", "campaign@provider", "tenant", "brand", "campaign"}

// rateOf computes a named rate from counts: the rate and its volume.
func rateOf(name string, c Counts) (rate float64, volume int64, ok bool) {
	attempts := c[Delivered] + c[HardBounced] + c[SoftBounced]
	var num, den int64
	switch name {
	case "complaint_rate":
		num, den = c[Complained], c[Delivered]
	case "hard_bounce_rate":
		num, den = c[HardBounced], attempts
	case "bounce_rate":
		num, den = c[HardBounced]+c[SoftBounced], attempts
	case "deferral_rate":
		num, den = c[Deferred], attempts+c[Deferred]
	case "block_rate":
		num, den = c[Blocked], attempts+c[Deferred]
	case "unsubscribe_rate":
		num, den = c[Unsubscribed], c[Delivered]
	default:
		return 0, 0, false
	}
	if den == 0 {
		return 0, 0, true
	}
	return float64(num) / float64(den), den, true
}

// RateNames lists the rates rules may use.
var RateNames = []string{"complaint_rate", "hard_bounce_rate", "bounce_rate", "deferral_rate", "block_rate", "unsubscribe_rate"}

// Rates computes every named rate from counts.
func Rates(c Counts) map[string]float64 {
	out := map[string]float64{}
	for _, n := range RateNames {
		r, _, _ := rateOf(n, c)
		out[n] = r
	}
	return out
}

// measure returns what rule compares and its volume.
func (r Rule) measure(c Counts) (float64, int64) {
	if r.Count != "" {
		_, vol, _ := rateOf("block_rate", c)
		return float64(c[r.Count]), vol
	}
	v, vol, _ := rateOf(r.Rate, c)
	return v, vol
}

// LoadPolicy parses and validates a policy. Unknown keys are errors. Errors
// wrap ErrInvalidPolicy.
func LoadPolicy(b []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks every rule, the resume ladder and the blocklists.
func (p *Policy) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidPolicy, fmt.Sprintf(format, a...))
	}
	prev := 0.0
	for _, s := range p.Resume.Steps {
		if s <= prev || s >= 1 {
			return bad("resume.steps must rise strictly between 0 and 1, got %v", p.Resume.Steps)
		}
		prev = s
	}
	if p.Resume.StepFor <= 0 {
		return bad("resume.step_for must be positive")
	}
	names := map[string]bool{}
	for i, r := range p.Rules {
		where := fmt.Sprintf("rule %d (%s)", i+1, r.Name)
		if r.Name == "" || names[r.Name] {
			return bad("%s: name missing or repeated", where)
		}
		names[r.Name] = true
		switch {
		case (r.Rate == "") == (r.Count == ""):
			return bad("%s: name exactly one of rate and count", where)
		case r.Rate != "" && !slices.Contains(RateNames, r.Rate):
			return bad("%s: unknown rate %q (want one of %s)", where, r.Rate, strings.Join(RateNames, ", "))
		case r.Count != "" && !slices.Contains(CounterNames, r.Count):
			return bad("%s: unknown counter %q", where, r.Count)
		}
		if len(r.Scopes) == 0 {
			return bad("%s: no scopes", where)
		}
		for _, s := range r.Scopes {
			if !slices.Contains(scopeShapes, s) {
				return bad("%s: unknown scope %q (want one of %s)", where, s, strings.Join(scopeShapes, ", "))
			}
		}
		if _, ok := WindowByName(r.Window); !ok {
			return bad("%s: unknown window %q", where, r.Window)
		}
		if r.MinVolume < 1 {
			return bad("%s: min_volume must be at least 1", where)
		}
		if r.Above <= 0 || (r.Rate != "" && r.Above >= 1) {
			return bad("%s: above must be a positive threshold (a rate below 1)", where)
		}
		if r.For <= 0 {
			return bad("%s: for must be positive", where)
		}
		switch r.Action {
		case ActionPause:
		case ActionThrottle:
			if r.Factor <= 0 || r.Factor >= 1 {
				return bad("%s: throttle factor must be between 0 and 1", where)
			}
		case ActionStep:
			if r.Step <= 0 || r.Step >= 1 || r.Floor <= 0 || r.Floor >= 1 || r.Every <= 0 {
				return bad("%s: step needs step and floor between 0 and 1 and a positive every", where)
			}
			if r.RecoverBelow <= 0 || r.RecoverBelow >= r.Above {
				return bad("%s: recover_below must be positive and below above", where)
			}
		default:
			return bad("%s: unknown action %q (pause, throttle, step)", where, r.Action)
		}
	}
	zones := map[string]bool{}
	for _, bl := range p.Blocklists {
		if bl.Zone == "" || zones[bl.Zone] {
			return bad("blocklist zone missing or repeated: %q", bl.Zone)
		}
		zones[bl.Zone] = true
		if bl.Kind != "ip" && bl.Kind != "domain" {
			return bad("blocklist %s: kind must be ip or domain", bl.Zone)
		}
		if len(bl.Codes) == 0 {
			return bad("blocklist %s: no listing codes", bl.Zone)
		}
		for code := range bl.Codes {
			a, err := netip.ParseAddr(code)
			if err != nil || !a.Is4() || a.As4()[0] != 127 {
				return bad("blocklist %s: code %q is not a 127.0.0.0/8 address (RFC 5782 §2.1)", bl.Zone, code)
			}
			if a.As4()[1] == 255 && a.As4()[2] == 255 {
				return bad("blocklist %s: code %s is an error answer, not a listing", bl.Zone, code)
			}
		}
	}
	return nil
}

// Verdict is what the rules want for one scope.
type Verdict struct {
	Action mailwavev1.PolicyAction
	Factor float64
	Rule   string
	Reason string
	For    time.Duration
	// Evidence holds the figures that led to it.
	Evidence map[string]string
}

// strength orders verdicts: a pause beats any throttle, a lower factor a
// higher one, anything beats a resume.
func strength(a mailwavev1.PolicyAction, factor float64) float64 {
	switch a {
	case mailwavev1.PolicyAction_POLICY_ACTION_PAUSE:
		return 2
	case mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE:
		return 1 + (1 - factor)
	}
	return 0
}

// Evaluate applies the rules to the windows of a scope at instant now,
// given the scope's current policy (nil when none). It returns the
// strongest verdict, or nil when the rules want no change. Rules of kind
// step lower the current factor one step while the rate is above and raise
// it while it is below recover_below, at most once per every.
func (p *Policy) Evaluate(sc Scope, windows map[string]Counts, current *mailwavev1.PolicyChange, now time.Time) *Verdict {
	var best *Verdict
	consider := func(v *Verdict) {
		if best == nil || strength(v.Action, v.Factor) > strength(best.Action, best.Factor) {
			best = v
		}
	}
	curFactor := 1.0
	if current != nil && current.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE && live(current, now) {
		curFactor = current.GetRateFactor()
	}
	var recover *Verdict
	for _, r := range p.Rules {
		if !slices.Contains(r.Scopes, sc.Shape()) {
			continue
		}
		c := windows[r.Window]
		value, volume := r.measure(c)
		ev := map[string]string{
			"window": r.Window, "volume": fmt.Sprint(volume), "threshold": fmt.Sprint(r.Above),
			"value": fmt.Sprintf("%.6g", value), "measure": r.Rate + r.Count,
		}
		for _, n := range CounterNames {
			ev[n] = fmt.Sprint(c[n])
		}
		if volume < r.MinVolume {
			continue
		}
		what := r.Rate + r.Count
		switch r.Action {
		case ActionPause:
			if value > r.Above {
				consider(&Verdict{Action: mailwavev1.PolicyAction_POLICY_ACTION_PAUSE, Rule: r.Name, For: r.For, Evidence: ev,
					Reason: fmt.Sprintf("%s %s over %s: %.4g > %g", sc, what, r.Window, value, r.Above)})
			}
		case ActionThrottle:
			if value > r.Above {
				consider(&Verdict{Action: mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, Factor: r.Factor, Rule: r.Name, For: r.For, Evidence: ev,
					Reason: fmt.Sprintf("%s %s over %s: %.4g > %g", sc, what, r.Window, value, r.Above)})
			}
		case ActionStep:
			due := current == nil || current.GetCreatedAt() == nil || !now.Before(current.GetCreatedAt().AsTime().Add(r.Every))
			switch {
			case value > r.Above:
				f := max(curFactor*r.Step, r.Floor)
				if f < curFactor && due {
					consider(&Verdict{Action: mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, Factor: f, Rule: r.Name, For: r.For, Evidence: ev,
						Reason: fmt.Sprintf("%s %s over %s rising: %.4g > %g, rate factor %g", sc, what, r.Window, value, r.Above, f)})
				}
			case value < r.RecoverBelow && curFactor < 1 && current.GetDecidedBy() == r.Name && due:
				f := curFactor / r.Step
				v := &Verdict{Action: mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, Factor: f, Rule: r.Name, For: r.For, Evidence: ev,
					Reason: fmt.Sprintf("%s %s over %s falling: %.4g < %g, rate factor %g", sc, what, r.Window, value, r.RecoverBelow, f)}
				if f >= 1 {
					v.Action, v.Factor = mailwavev1.PolicyAction_POLICY_ACTION_RESUME, 0
					v.Reason = fmt.Sprintf("%s %s over %s recovered: %.4g < %g", sc, what, r.Window, value, r.RecoverBelow)
				}
				recover = v
			}
		}
	}
	if best != nil {
		// Only a stronger policy replaces a live one; weaker ones come
		// through the resume ladder or a step rule's recovery.
		if current != nil && live(current, now) && strength(best.Action, best.Factor) <= strength(current.GetAction(), current.GetRateFactor()) {
			return nil
		}
		return best
	}
	return recover
}

// live reports whether a policy is in force at now.
func live(pc *mailwavev1.PolicyChange, now time.Time) bool {
	if pc == nil {
		return false
	}
	if exp := pc.GetExpiresAt(); exp != nil && !exp.AsTime().After(now) {
		return false
	}
	return pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PAUSE ||
		pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE ||
		pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE
}

// NextResume returns the step that follows a lapsed pause or throttle on
// the resume ladder: the first ladder factor above the current one, or
// resume.
func (p *Policy) NextResume(pc *mailwavev1.PolicyChange) (mailwavev1.PolicyAction, float64) {
	cur := 0.0
	if pc.GetAction() == mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE {
		cur = pc.GetRateFactor()
	}
	for _, s := range p.Resume.Steps {
		if s > cur {
			return mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, s
		}
	}
	return mailwavev1.PolicyAction_POLICY_ACTION_RESUME, 0
}
