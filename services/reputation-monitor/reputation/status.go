package reputation

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// ScopeStatus is the state of one scope in /v1/status.
type ScopeStatus struct {
	Scope    string                  `json:"scope"`
	Key      string                  `json:"key"`
	Kind     string                  `json:"kind"`
	Value    string                  `json:"value"`
	Provider string                  `json:"provider,omitempty"`
	Windows  map[string]WindowStatus `json:"windows"`
	Policy   json.RawMessage         `json:"policy,omitempty"`
}

// WindowStatus holds the counts and rates of one window.
type WindowStatus struct {
	Counts Counts             `json:"counts"`
	Rates  map[string]float64 `json:"rates"`
}

// Status is the body of /v1/status.
type Status struct {
	Time      time.Time                  `json:"time"`
	Scopes    []ScopeStatus              `json:"scopes"`
	Policies  map[string]json.RawMessage `json:"policies"`
	Listings  map[string]string          `json:"listings"`
	Audits    map[string]json.RawMessage `json:"audits"`
	Rules     []Rule                     `json:"rules"`
	LadderFor string                     `json:"resume_step_for"`
}

func pj(m proto.Message) json.RawMessage {
	b, _ := protojson.Marshal(m)
	return b
}

func (m *monitor) routes() map[string]http.Handler {
	return map[string]http.Handler{
		"/v1/status": http.HandlerFunc(m.serveStatus),
		"/v1/audit":  http.HandlerFunc(m.serveAudit),
	}
}

// serveStatus answers the reputation state: every scope seen in the last
// week (or those whose key starts with ?scope=) with its windows, the
// current policies, blocklist listings and audits.
func (m *monitor) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx, now := r.Context(), time.Now()
	filter := r.URL.Query().Get("scope")
	st := Status{Time: now, Policies: map[string]json.RawMessage{}, Audits: map[string]json.RawMessage{},
		Rules: m.policy.Rules, LadderFor: m.policy.Resume.StepFor.String()}
	pols := m.decider.Policies()
	for k, pc := range pols {
		st.Policies[k] = pj(pc)
	}
	scopes, err := m.store.Scopes(ctx, now.Add(-7*24*time.Hour), 1000)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	sort.Slice(scopes, func(i, j int) bool { return scopes[i].Key() < scopes[j].Key() })
	for _, sc := range scopes {
		if filter != "" && !strings.HasPrefix(sc.Key(), filter) {
			continue
		}
		win, err := m.store.Read(ctx, sc, now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		ss := ScopeStatus{Scope: sc.String(), Key: sc.Key(), Kind: sc.KindWord(), Value: sc.Value, Provider: sc.Provider,
			Windows: map[string]WindowStatus{}}
		for name, c := range win {
			ss.Windows[name] = WindowStatus{Counts: c, Rates: Rates(c)}
		}
		if pc := pols[sc.Key()]; pc != nil {
			ss.Policy = pj(pc)
		}
		st.Scopes = append(st.Scopes, ss)
	}
	listings, err := m.rt.Redis.HGetAll(ctx, listingsKey).Result()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	st.Listings = map[string]string{}
	for k, v := range listings {
		st.Listings[strings.ReplaceAll(k, "\x1f", " ")] = v
	}
	if keys, err := m.audits.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			if e, err := m.audits.Get(ctx, k); err == nil {
				a := &mailwavev1.AuthAudit{}
				if proto.Unmarshal(e.Value(), a) == nil {
					st.Audits[a.GetDomain()] = pj(a)
				}
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

// serveAudit runs the audit of ?domain= now (POST) and answers it.
func (m *monitor) serveAudit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST /v1/audit?domain=DOMAIN", http.StatusMethodNotAllowed)
		return
	}
	d := r.URL.Query().Get("domain")
	a, err := m.audit(r.Context(), d, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(pj(a))
}
