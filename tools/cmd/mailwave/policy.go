package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/events"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

const policyUsage = `usage: mailwave policy pause|resume|pin|list [options]
  pause  --scope KIND=VALUE [--provider P] --reason TEXT [--for 2h]
  resume --scope KIND=VALUE [--provider P] --reason TEXT [--for 2h]
  pin    --scope KIND=VALUE [--provider P] --rate PER_HOUR --reason TEXT [--for 2h]
  list   [--json]
KIND is pool, source_ip, provider, sending_domain, tenant, brand or campaign.
Every change is recorded like the monitor's own, decided by "user:<--by>",
and stands against the monitor's rules for --for: a pause or pinned rate
then climbs the resume ladder; after a resume the rules may act again.
--for 0 makes a pause or pin stand until changed, and a resume leave the
scope to the rules at once.`

// runPolicy records a person's pause, resume or pinned rate in the policy
// bucket (with a revision compare-and-set, like the monitor's writes) and
// announces it on the policy subject, or lists the current policies.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, policyUsage)
		return errors.New("policy: give pause, resume, pin or list")
	}
	verb := args[0]
	fs := flag.NewFlagSet("policy "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL")
	scopeFlag := fs.String("scope", "", "KIND=VALUE, for example tenant=acme")
	provider := fs.String("provider", "", "narrow the scope to one provider (google, yahoo, ...)")
	reason := fs.String("reason", "", "why (recorded with the change)")
	lasts := fs.Duration("for", 2*time.Hour, "how long the decision stands against the rules: a pause or pinned rate then resumes gradually, a resume lets the rules act again (0: a pause or pin until changed, a resume not at all)")
	rate := fs.Float64("rate", 0, "pin: messages per hour")
	by := fs.String("by", envOr("USER", "operator"), "who decides (recorded as user:<name>)")
	asJSON := fs.Bool("json", false, "list: print JSON lines")
	fs.Usage = func() {
		fmt.Fprintln(stderr, policyUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("policy: unexpected argument %q", fs.Arg(0))
	}
	var action mailwavev1.PolicyAction
	switch verb {
	case "list":
	case "pause":
		action = mailwavev1.PolicyAction_POLICY_ACTION_PAUSE
	case "resume":
		action = mailwavev1.PolicyAction_POLICY_ACTION_RESUME
	case "pin":
		action = mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE
		if *rate <= 0 {
			return errors.New("policy pin: --rate must be positive")
		}
	default:
		fs.Usage()
		return fmt.Errorf("policy: unknown action %q", verb)
	}
	var sc reputation.Scope
	if verb != "list" {
		var err error
		if sc, err = parseScope(*scopeFlag, *provider); err != nil {
			return err
		}
		if strings.TrimSpace(*reason) == "" {
			return errors.New("policy: --reason is required")
		}
		if *lasts < 0 {
			return errors.New("policy: --for must not be negative")
		}
		if strings.TrimSpace(*by) == "" {
			return errors.New("policy: --by must name who decides")
		}
	}
	nc, err := nats.Connect(*natsURL, nats.Name("mailwave policy"))
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	kv, err := js.KeyValue(ctx, mailwavev1.BucketPolicy)
	if err != nil {
		return fmt.Errorf("policy: bucket %s: %w", mailwavev1.BucketPolicy, err)
	}
	if verb == "list" {
		return listPolicies(ctx, kv, stdout, *asJSON)
	}
	pc := reputation.NewChange(sc, action, 0, *reason, reputation.UserPrefix+strings.TrimSpace(*by), nil, time.Now(), *lasts)
	pc.RatePerHour = *rate
	for range 3 {
		var rev uint64
		e, err := kv.Get(ctx, sc.Key())
		switch {
		case err == nil:
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return fmt.Errorf("policy: %w", err)
		}
		err = reputation.WritePolicy(ctx, kv, events.NewPublisher(js), pc, rev, nil)
		if errors.Is(err, reputation.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		fmt.Fprintf(stdout, "%s %s %s\n", sc.Key(), verb, pc.GetId())
		return nil
	}
	return fmt.Errorf("policy: %s kept changing; try again", sc.Key())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parseScope reads KIND=VALUE.
func parseScope(s, provider string) (reputation.Scope, error) {
	kind, value, ok := strings.Cut(s, "=")
	k, known := mailwavev1.ScopeKind_value["SCOPE_KIND_"+strings.ToUpper(strings.TrimSpace(kind))]
	if !ok || !known || k == 0 || strings.TrimSpace(value) == "" {
		return reputation.Scope{}, fmt.Errorf("policy: --scope %q: want KIND=VALUE with KIND pool, source_ip, provider, sending_domain, tenant, brand or campaign", s)
	}
	return reputation.Scope{Kind: mailwavev1.ScopeKind(k), Value: strings.TrimSpace(value), Provider: strings.TrimSpace(provider)}, nil
}

func listPolicies(ctx context.Context, kv jetstream.KeyValue, w io.Writer, asJSON bool) error {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "KEY\tACTION\tFACTOR\tDECIDED BY\tEXPIRES\tREASON")
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		pc := &mailwavev1.PolicyChange{}
		if err := proto.Unmarshal(e.Value(), pc); err != nil {
			return fmt.Errorf("policy: %s: %w", k, err)
		}
		if asJSON {
			b, _ := protojson.Marshal(pc)
			var v map[string]any
			_ = json.Unmarshal(b, &v)
			v["key"] = k
			out, _ := json.Marshal(v)
			fmt.Fprintln(w, string(out))
			continue
		}
		exp := "-"
		if pc.GetExpiresAt() != nil {
			exp = pc.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
		}
		factor := "-"
		switch pc.GetAction() {
		case mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE:
			factor = fmt.Sprint(pc.GetRateFactor())
		case mailwavev1.PolicyAction_POLICY_ACTION_PIN_RATE:
			factor = fmt.Sprintf("%g/h", pc.GetRatePerHour())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k, strings.ToLower(strings.TrimPrefix(pc.GetAction().String(), "POLICY_ACTION_")),
			factor, pc.GetDecidedBy(), exp, pc.GetReason())
	}
	return tw.Flush()
}
