package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// STARTTLS is used whenever a provider offers it; where TLS is required
// (a recipient domain in MW_REQUIRE_TLS_DOMAINS, a relay route) and the
// server does not offer it, the message is deferred with a clear reason
// and never sent in plaintext.
func TestRequiredTLSDefersInsteadOfPlaintext(t *testing.T) {
	// A smarthost without STARTTLS, on a route that requires TLS (the
	// default for relay routes).
	plain := &smarthost{}
	plainAddr := startPlainSmarthost(t, plain)
	routes := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(routes, []byte(fmt.Sprintf(
		"routes:\n  old-relay:\n    smarthosts: [{address: %q}]\nselect:\n  - {route: old-relay, tenants: [legacy]}\n", plainAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startWith(t, nil, func(o *stack.Options) {
		o.TuneSender = func(c *sender.Config) {
			c.RequireTLSDomains = []string{"globex.example"} // the corporate provider offers no STARTTLS
			c.RelayRoutes = routes
		}
	})
	ctx := testenv.Context(t)
	for _, req := range []*mailwavev1.SendRequest{
		{IdempotencyKey: "tls-1", Tenant: "acme", Brand: "shop", Recipients: recipients("ann@gmail.com", "gus@globex.example"),
			Content: template("Shop <news@mailwave.test>")},
		{IdempotencyKey: "tls-2", Tenant: "legacy", Brand: "shop", Recipients: recipients("hal@yahoo.com"),
			Content: template("Shop <news@mailwave.test>")},
	} {
		if _, err := e.cl.Send(ctx, req); err != nil {
			t.Fatal(err)
		}
	}

	// Offered: used, and recorded as such on both sides.
	ev := e.terminal(t, "acme", "tls-1", 1)["ann@gmail.com"]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || !ev.GetTls() {
		t.Fatalf("gmail: %v tls %v: %s", ev.GetKind(), ev.GetTls(), ev.GetResponse())
	}
	snap, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return len(s.To("ann@gmail.com")) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if !snap.To("ann@gmail.com")[0].TLS {
		t.Error("the simulator saw the gmail message in plaintext")
	}

	// Required but absent: deferred with the reason, for the domain and
	// for the relay route.
	for _, c := range []struct{ tenant, req, rcpt, provider string }{
		{"acme", "tls-1", "gus@globex.example", "mx1.globex.example,mx2.globex.example"}, // a site of its own
		{"legacy", "tls-2", "hal@yahoo.com", "old-relay"},
	} {
		ev := e.until(t, c.tenant, c.req, 30*time.Second, func(ev *mailwavev1.DeliveryEvent) bool {
			return ev.GetRecipient() == c.rcpt && ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED
		})
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DEFERRED || ev.GetReason() != "failedstarttls" ||
			ev.GetPhase() != "starttls" || ev.GetProvider() != c.provider || !strings.Contains(ev.GetResponse(), "STARTTLS not offered") {
			t.Errorf("%s: %v reason %q phase %q provider %q: %s", c.rcpt, ev.GetKind(), ev.GetReason(), ev.GetPhase(),
				ev.GetProvider(), ev.GetResponse())
		}
	}
	snap = e.sim.Ledger().Snapshot()
	if n := len(snap.To("gus@globex.example")); n != 0 {
		t.Errorf("a TLS-required message reached the corporate provider in plaintext (%d)", n)
	}
	if rs := snap.RejectionsFor("corporate", mustAddr("127.0.0.3"), ""); len(rs) != 0 {
		t.Errorf("the sender went past EHLO at the corporate provider: %+v", rs[0])
	}
	if _, _, msgs := plain.snapshot(); len(msgs) != 0 {
		t.Errorf("the plaintext smarthost received %d messages", len(msgs))
	}
}
