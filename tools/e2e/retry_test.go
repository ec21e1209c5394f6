package e2e_test

import (
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

func fastRetries(o *stack.Options) {
	o.TuneSender = func(c *sender.Config) {
		c.RetryMax = time.Second
	}
}

func TestGreylistedThenDelivered(t *testing.T) {
	clock := ispsim.NewFakeClock(time.Now())
	e := startWith(t, clock, fastRetries)
	ctx := testenv.Context(t)
	const rcpt = "gus@globex.example" // the corporate provider greylists first attempts
	req := &mailwavev1.SendRequest{
		IdempotencyKey: "grey-1", Tenant: "acme", Brand: "shop",
		Recipients: []*mailwavev1.Recipient{{Address: rcpt}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Hi", Text: "hello"}},
	}
	if _, err := e.cl.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	// The first attempt is greylisted...
	if _, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool {
		return len(s.RejectionsFor("corporate", mustAddr("127.0.0.3"), "greylist")) >= 1
	}); err != nil {
		t.Fatal(err)
	}
	// ...and once the simulator's greylist delay has passed, a retry is
	// accepted.
	clock.Advance(6 * time.Minute)
	evs := e.terminal(t, "acme", "grey-1", 1)
	ev := evs[rcpt]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED || ev.GetAttempt() < 2 {
		t.Fatalf("%v after %d attempts: %s", ev.GetKind(), ev.GetAttempt(), ev.GetResponse())
	}
	if n := len(e.sim.Ledger().Snapshot().To(rcpt)); n != 1 {
		t.Fatalf("delivered %d times", n)
	}
}

func TestMaxAgeEndsExpiredWithTheLastReason(t *testing.T) {
	e := startWith(t, nil, fastRetries)
	ctx := testenv.Context(t)
	const rcpt = "defer-lee@gmail.com" // the Gmail-like provider always answers 450 4.2.1
	req := &mailwavev1.SendRequest{
		IdempotencyKey: "expire-1", Tenant: "acme", Brand: "shop",
		MaxAge:     durationpb.New(3 * time.Second),
		Recipients: []*mailwavev1.Recipient{{Address: rcpt}},
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Hi", Text: "hello"}},
	}
	if _, err := e.cl.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	evs := e.terminal(t, "acme", "expire-1", 1)
	ev := evs[rcpt]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_EXPIRED {
		t.Fatalf("%v: %s", ev.GetKind(), ev.GetResponse())
	}
	if ev.GetReason() == "" || ev.GetReason() == "expired" || ev.GetSmtpCode() != 450 {
		t.Errorf("expired event should carry the last answer: reason %q code %d", ev.GetReason(), ev.GetSmtpCode())
	}
	if got := e.sim.Ledger().Snapshot().RejectionsFor("google", mustAddr("127.0.0.3"), ""); len(got) < 2 {
		t.Errorf("%d attempts reached the provider, want several", len(got))
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
