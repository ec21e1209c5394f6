package planner_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

// outcome publishes a sender-, DSN- or FBL-like event about a planned
// message, under eventID (a redelivered event keeps its id; a second copy
// published by a crashed publisher may not).
func (h *harness) outcome(ev *mailwavev1.DeliveryEvent, kind mailwavev1.EventKind, origin mailwavev1.Origin, eventID string) {
	h.t.Helper()
	out := &mailwavev1.DeliveryEvent{EventId: eventID, Kind: kind, Origin: origin, MessageId: ev.GetMessageId(),
		RequestId: ev.GetRequestId(), Tenant: ev.GetTenant(), Brand: ev.GetBrand(), CampaignId: ev.GetCampaignId(), Recipient: ev.GetRecipient()}
	if _, err := events.NewPublisher(h.js).Publish(testenv.Context(h.t), mailwavev1.SubjectEvent(kind, ev.GetTenant()), out,
		events.WithMsgID(eventID)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitCounts(addr, tenant, campaign string, want map[string]int64) *planner.Campaign {
	h.t.Helper()
	var c *planner.Campaign
	testenv.Eventually(h.t, 15*time.Second, func() bool {
		c, _ = h.campaign(addr, tenant, campaign)
		if c == nil {
			return false
		}
		for k, v := range want {
			if c.Counts[k] != v {
				return false
			}
		}
		return true
	}, "campaign %s never counted %v", campaign, want)
	return c
}

// Campaign progress is counted from the EVENTS stream into Redis: every
// message counts once per counter however often its events arrive, the
// counts survive a restart of the planner, and several replicas count
// together.
func TestCampaignProgressFromEvents(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	h.putSuppression(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", "shop", "", "blocked@gmail.com", "hardbounce")
	addrs := []string{"a@gmail.com", "b@gmail.com", "c@yahoo.com", "d@yahoo.com", "blocked@gmail.com", "broken"}
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/prog", Tenant: "acme", Brand: "shop", MailStream: "newsletter", CampaignId: "autumn",
		Recipients: rcpts(addrs...), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/prog", len(addrs))
	h.waitCounts(h.http, "acme", "autumn", map[string]int64{"planned": 4, "suppressed": 1, "dropped": 1})
	if _, code := h.campaign(h.http, "acme", "spring"); code != 404 {
		t.Errorf("unknown campaign: %d", code)
	}

	smtp, dsn, fbl := mailwavev1.Origin_ORIGIN_SMTP, mailwavev1.Origin_ORIGIN_DSN, mailwavev1.Origin_ORIGIN_FBL
	a, b, c, d := evs["a@gmail.com"], evs["b@gmail.com"], evs["c@yahoo.com"], evs["d@yahoo.com"]
	h.outcome(a, mailwavev1.EventKind_EVENT_KIND_DELIVERED, smtp, "a-delivered")
	// b: deferred, then delivered, then complained about.
	h.outcome(b, mailwavev1.EventKind_EVENT_KIND_DEFERRED, smtp, "b-deferred-1")
	h.outcome(b, mailwavev1.EventKind_EVENT_KIND_DELIVERED, smtp, "b-delivered")
	h.outcome(b, mailwavev1.EventKind_EVENT_KIND_COMPLAINED, fbl, "b-complained")
	// c: bounced at RCPT time; d: accepted, then a DSN bounced it.
	h.outcome(c, mailwavev1.EventKind_EVENT_KIND_BOUNCED, smtp, "c-bounced")
	h.outcome(d, mailwavev1.EventKind_EVENT_KIND_DELIVERED, smtp, "d-delivered")
	h.outcome(d, mailwavev1.EventKind_EVENT_KIND_BOUNCED, dsn, "d-bounced")
	// A second copy of a's delivery under another id (a sender that
	// crashed between publishing and acknowledging) counts once.
	h.outcome(a, mailwavev1.EventKind_EVENT_KIND_DELIVERED, smtp, "a-delivered-again")
	want := map[string]int64{"planned": 4, "suppressed": 1, "dropped": 1, "sent": 4, "delivered": 3, "deferred": 1,
		"bounced": 2, "complained": 1, "unsubscribed": 0, "expired": 0}
	got := h.waitCounts(h.http, "acme", "autumn", want)
	if got.Status != "planned" || got.Recipients != 6 || got.RequestID != "acme/prog" {
		t.Errorf("campaign %+v", got)
	}

	// Restart: a new planner process finds the counts and goes on.
	h.stop()
	addr, stop := h.run(h.cfg)
	defer stop()
	h.waitCounts(addr, "acme", "autumn", want)
	h.outcome(c, mailwavev1.EventKind_EVENT_KIND_EXPIRED, smtp, "c-expired")
	want["expired"] = 1
	h.waitCounts(addr, "acme", "autumn", want)
}

func TestCampaignProgressWithSeveralReplicas(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	addr2, stop2 := h.run(h.cfg)
	defer stop2()
	const n = 300
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/big", Tenant: "acme", Brand: "shop", MailStream: "newsletter", CampaignId: "big",
		Recipients: numbered(n, "gmail.com", "yahoo.com", "outlook.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/big", n)
	pub := events.NewPublisher(h.js)
	ctx := testenv.Context(t)
	i := 0
	for _, ev := range evs {
		// Every delivery twice, under two ids, published at once: the two
		// replicas see them in any order.
		for copyNo := range 2 {
			out := &mailwavev1.DeliveryEvent{EventId: fmt.Sprintf("del-%d-%d", i, copyNo), Kind: mailwavev1.EventKind_EVENT_KIND_DELIVERED,
				Origin: mailwavev1.Origin_ORIGIN_SMTP, MessageId: ev.GetMessageId(), Tenant: "acme", Brand: "shop", CampaignId: "big", Recipient: ev.GetRecipient()}
			if _, err := pub.PublishAsync(ctx, mailwavev1.SubjectEvent(out.GetKind(), "acme"), out, events.WithMsgID(out.GetEventId())); err != nil {
				t.Fatal(err)
			}
		}
		i++
	}
	want := map[string]int64{"planned": n, "sent": n, "delivered": n}
	h.waitCounts(h.http, "acme", "big", want)
	// Both replicas answer the same.
	h.waitCounts(addr2, "acme", "big", want)
}
