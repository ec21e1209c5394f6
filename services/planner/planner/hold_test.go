package planner_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

func (h *harness) putAudit(domain string, checks map[string]bool) {
	h.t.Helper()
	a := &mailwavev1.AuthAudit{Domain: domain, Ok: true, AuditedAt: timestamppb.New(time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC))}
	for _, name := range []string{"spf", "dkim", "dmarc", "ptr"} {
		ok, listed := checks[name]
		if !listed {
			ok = true
		}
		c := &mailwavev1.AuthCheck{Name: name, Ok: ok}
		if !ok {
			a.Ok = false
			c.Problems = []string{"no " + name + " record"}
		}
		a.Checks = append(a.Checks, c)
	}
	b, _ := proto.Marshal(a)
	if _, err := h.kv(mailwavev1.BucketAudits).Put(testenv.Context(h.t), mailwavev1.KeyToken(domain), b); err != nil {
		h.t.Fatal(err)
	}
}

// A sending domain whose latest audit fails SPF, DKIM or DMARC is held:
// nothing is planned, the campaign's progress says why, the request is
// looked at again every MW_PLANNER_RECHECK, goes out once the audit
// passes, and ends dropped with the reason if it never does within
// MW_HOLD_MAX. A failing PTR check holds nothing.
func TestFailingAuditHoldsTheDomain(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *planner.Config) {
		withShop(t)(c)
		c.HoldMax = time.Hour
	})
	h.putAudit("news.shop.test", map[string]bool{"dkim": false})
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/held-1", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CampaignId: "held-1", Recipients: rcpts("a@gmail.com", "b@yahoo.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	var c *planner.Campaign
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ = h.campaign(h.http, "acme", "held-1")
		return c != nil && c.Status == "held"
	}, "the campaign is not held")
	if !strings.Contains(c.Reason, "news.shop.test fails its authentication audit") || !strings.Contains(c.Reason, "dkim (no dkim record)") {
		t.Errorf("held with %q", c.Reason)
	}
	if n := len(h.dispatches()); n != 0 {
		t.Fatalf("%d dispatches while held", n)
	}
	// Only PTR fails now: the hold clears at the next look.
	h.putAudit("news.shop.test", map[string]bool{"ptr": false})
	for _, ev := range h.outcomes("acme/held-1", 2) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
			t.Errorf("%s: %v %s", ev.GetRecipient(), ev.GetKind(), ev.GetReason())
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ = h.campaign(h.http, "acme", "held-1")
		return c != nil && c.Status == "planned" && c.Reason == ""
	}, "the campaign is not planned after the audit passed")

	// A hold that never clears ends every recipient dropped with it.
	h.putAudit("news.shop.test", map[string]bool{"spf": false, "dmarc": false})
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/held-2", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CampaignId: "held-2", Recipients: rcpts("c@gmail.com", "d@yahoo.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ = h.campaign(h.http, "acme", "held-2")
		return c != nil && c.Status == "held"
	}, "the second campaign is not held")
	h.clock.Add(time.Hour)
	for _, ev := range h.outcomes("acme/held-2", 2) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DROPPED || !strings.Contains(ev.GetReason(), "spf (no spf record), dmarc (no dmarc record)") ||
			!strings.Contains(ev.GetReason(), "held for 1h0m0s without the audit passing") {
			t.Errorf("%s: %v %q", ev.GetRecipient(), ev.GetKind(), ev.GetReason())
		}
	}
}
