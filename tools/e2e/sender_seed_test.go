package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// The seeds' scenarios, on the simulator's clock shared with the sender:
// a 554 is retried in 24 hours, a 421 in 20 minutes, and a 500 that says
// the mailbox is full is retried every 24 hours until the max age (72 h)
// ends it expired with reason mailboxfull and the provider's words.
func TestSeedScenarios(t *testing.T) {
	clock := ispsim.NewFakeClock(time.Now())
	e := startWith(t, clock, func(o *stack.Options) {
		o.TuneSender = func(c *sender.Config) {
			c.Now = clock.Now
			// A parked message is looked at every second of real time and
			// goes when the shared clock says it is due.
			c.MaxPark = time.Second
		}
	})
	lt := e.sim.Provider("longtail")
	for _, r := range []ispsim.RecipientRule{
		{Match: "seed554*", Action: ispsim.ActionReject, Reply: "554 5.7.1 Service unavailable; client host [{ip}] blocked"},
		{Match: "seed421*", Action: ispsim.ActionDefer, Reply: "421 4.7.0 Try again later, closing connection"},
		{Match: "seedfull*", Action: ispsim.ActionFull, Reply: "500 Mailbox full"},
	} {
		if err := lt.AddRule(r); err != nil {
			t.Fatal(err)
		}
	}
	const (
		blocked = "seed554-ann@smallshop.example"
		later   = "seed421-bob@bakery.example"
		full    = "seedfull-cat@school.example"
	)
	ctx := testenv.Context(t)
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "seeds", Tenant: "acme", Brand: "shop",
		Recipients: recipients(blocked, later, full), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	deferral := func(rcpt string, attempt int32) *mailwavev1.DeliveryEvent {
		t.Helper()
		return e.until(t, "acme", "seeds", 30*time.Second, func(ev *mailwavev1.DeliveryEvent) bool {
			return ev.GetRecipient() == rcpt && ev.GetAttempt() == attempt && ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_DEFERRED
		})
	}
	interval := func(ev *mailwavev1.DeliveryEvent) time.Duration {
		return ev.GetNextAttemptAt().AsTime().Sub(ev.GetOccurredAt().AsTime())
	}
	for _, c := range []struct {
		rcpt   string
		code   int32
		reason string
		want   time.Duration
	}{
		{blocked, 554, "blocked", 24 * time.Hour},
		{later, 421, "", 20 * time.Minute},
		{full, 500, "mailboxfull", 24 * time.Hour},
	} {
		ev := deferral(c.rcpt, 1)
		if ev.GetSmtpCode() != c.code || (c.reason != "" && ev.GetReason() != c.reason) {
			t.Errorf("%s: code %d reason %q (%s)", c.rcpt, ev.GetSmtpCode(), ev.GetReason(), ev.GetDetail())
		}
		// The schedule rounds up to the next whole second.
		if got := interval(ev); got < c.want || got > c.want+2*time.Second {
			t.Errorf("%s: next attempt in %s, want %s (%s)", c.rcpt, got, c.want, ev.GetDetail())
		}
	}

	// 20 minutes later the 421 is tried again; the 554 is not.
	clock.Advance(20*time.Minute + 2*time.Second)
	deferral(later, 2)
	if n := len(e.sim.Ledger().Snapshot().RejectionsFor("longtail", mustAddr("127.0.0.3"), "")); n != 4 {
		t.Errorf("%d refusals at the long tail after 20 minutes, want 4 (three first attempts, one retry)", n)
	}

	// The full mailbox: a retry every 24 hours, then expired at the max
	// age with the last answer.
	prev := deferral(full, 1)
	for attempt := int32(2); ; attempt++ {
		clock.Advance(24*time.Hour + 2*time.Second)
		ev := e.until(t, "acme", "seeds", 30*time.Second, func(ev *mailwavev1.DeliveryEvent) bool {
			return ev.GetRecipient() == full && (ev.GetAttempt() == attempt || ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_EXPIRED)
		})
		if ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_EXPIRED {
			t.Logf("the full mailbox expired after %d attempts, %s after its creation", attempt-1,
				ev.GetOccurredAt().AsTime().Sub(ev.GetCreatedAt().AsTime()))
			if attempt < 4 {
				t.Fatalf("expired after %d attempts, want at least 3 over 72 hours", attempt-1)
			}
			if ev.GetReason() != "mailboxfull" || ev.GetSmtpCode() != 500 || !strings.Contains(ev.GetResponse(), "Mailbox full") {
				t.Errorf("expired: reason %q code %d: %s", ev.GetReason(), ev.GetSmtpCode(), ev.GetResponse())
			}
			if age := ev.GetOccurredAt().AsTime().Sub(ev.GetCreatedAt().AsTime()); age < 72*time.Hour {
				t.Errorf("expired after %s, before the max age", age)
			}
			break
		}
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DEFERRED || ev.GetReason() != "mailboxfull" {
			t.Fatalf("attempt %d: %v %q", attempt, ev.GetKind(), ev.GetReason())
		}
		// Each attempt comes when the one before asked, never earlier;
		// each deferral asks for the next day, or for the max age when
		// that comes first.
		if ev.GetOccurredAt().AsTime().Before(prev.GetNextAttemptAt().AsTime()) {
			t.Errorf("attempt %d at %s, before the %s asked for", attempt, ev.GetOccurredAt().AsTime(), prev.GetNextAttemptAt().AsTime())
		}
		deadline := ev.GetCreatedAt().AsTime().Add(72 * time.Hour)
		if got := interval(ev); (got < 24*time.Hour || got > 24*time.Hour+2*time.Second) && ev.GetNextAttemptAt().AsTime().After(deadline.Add(2*time.Second)) {
			t.Errorf("attempt %d: next in %s, want 24h or the max age", attempt, got)
		}
		prev = ev
		if attempt > 6 {
			t.Fatal("still retried after 5 days")
		}
	}
	if n := len(e.sim.Ledger().Snapshot().To(full)); n != 0 {
		t.Errorf("the full mailbox accepted %d copies", n)
	}
}
