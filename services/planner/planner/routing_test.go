package planner_test

import (
	"bytes"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

// shopTenancy is the tenancy of most planner tests: a transactional
// stream on its own pool, a bulk newsletter on a pool with a new IP, a
// communication type with a pool of one new IP that does not spill, a
// promotional stream through a relay, and a stream on a new domain.
const shopTenancy = `
warmup: {levels: [{days: 2, per_day: 5}], then: {per_day: 10, increase: 10, until: 30}, fast_share: 1, fast_step: 1}
pools:
  tx: {ips: [{ip: 127.0.0.5, hostname: mta5.shop.test}]}
  bulk:
    spill: true
    ips:
      - {ip: 127.0.0.2, hostname: mta1.shop.test}
      - {ip: 127.0.0.3, hostname: mta2.shop.test, new: true}
      - {ip: 127.0.0.4, hostname: mta3.shop.test}
  fresh: {ips: [{ip: 127.0.0.6, hostname: mta6.shop.test, new: true}]}
  waves: {ips: [{ip: 127.0.0.7, hostname: mta7.shop.test}]}
domains:
  tx.shop.test: {dkim_selectors: [s1]}
  news.shop.test:
    dkim_selectors: [s1, s2]
    postal_address: "Shop Inc., 1 Main Street, Springfield"
    unsubscribe: {url: "https://u.shop.test", mailto: unsubscribe@news.shop.test}
  newdomain.shop.test:
    new: true
    postal_address: "Shop Inc., 1 Main Street, Springfield"
    unsubscribe: {url: "https://u.shop.test"}
tenants:
  acme:
    brands:
      shop:
        default_stream: transactional
        streams:
          transactional: {kind: transactional, domain: tx.shop.test, pool: tx}
          newsletter:
            kind: bulk
            domain: news.shop.test
            pool: bulk
            types: {digest: {pool: fresh}}
          promo: {kind: bulk, domain: news.shop.test, relay: esp1}
          fresh: {kind: bulk, domain: newdomain.shop.test, pool: bulk}
          waves: {kind: bulk, domain: news.shop.test, pool: waves}
`

// compliant is bulk content that shows the postal address and the link.
const compliantText = "Hi {{.name}}\n\nUnsubscribe: {{.unsubscribe_url}}\nShop Inc., 1 Main Street,\nSpringfield\n"

func withShop(t *testing.T) func(*planner.Config) {
	path := tenancyFile(t, shopTenancy)
	return func(c *planner.Config) { c.Tenancy = path }
}

func TestRoutesByTheTenancyModel(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	addrs := []string{"a@gmail.com", "b@gmail.com", "c@yahoo.com", "d@yahoo.com", "e@outlook.com", "f@outlook.com"}
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/news-1", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CampaignId: "nov", Recipients: rcpts(addrs...), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/news-1", len(addrs))
	ips := map[string]string{"127.0.0.2": "mta1.shop.test", "127.0.0.3": "mta2.shop.test", "127.0.0.4": "mta3.shop.test"}
	for _, a := range addrs {
		ev := evs[a]
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
			t.Fatalf("%s: %v %s", a, ev.GetKind(), ev.GetReason())
		}
		s := h.dispatchOf(ev.GetMessageId())
		r := s.d.GetRouting()
		if !strings.HasPrefix(s.subject, "mail.dispatch.bulk.") || r.GetPool() != "bulk" || ips[r.GetSourceIp()] != r.GetHeloName() ||
			r.GetSendingDomain() != "news.shop.test" || !slices.Equal(r.GetDkimSelectors(), []string{"s1", "s2"}) ||
			!strings.HasSuffix(s.d.GetReturnPath(), "@bounces.news.shop.test") || r.GetRecipientDomain() != a[2:] {
			t.Errorf("%s: subject %s routing %v return path %s", a, s.subject, r, s.d.GetReturnPath())
		}
		// The fallbacks are the pool's other warm IPs: never the new
		// one, whose cap is exact, never the chosen one.
		for _, f := range r.GetFallbackSources() {
			if f.GetIp() == "127.0.0.3" || f.GetIp() == r.GetSourceIp() || ips[f.GetIp()] != f.GetHeloName() {
				t.Errorf("%s from %s: fallback %v", a, r.GetSourceIp(), f)
			}
		}
		msg, err := mail.ReadMessage(bytes.NewReader(s.d.GetData()))
		if err != nil {
			t.Fatal(err)
		}
		lu := msg.Header.Get("List-Unsubscribe")
		if !strings.HasPrefix(lu, "<https://u.shop.test/u/") || !strings.Contains(lu, "<mailto:unsubscribe@news.shop.test?subject=") ||
			msg.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" || msg.Header.Get("Feedback-Id") != "nov:newsletter:shop:acme" {
			t.Errorf("%s: headers %v", a, msg.Header)
		}
	}

	// Transactional mail: its own lane, its own pool, no unsubscribe.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/tx-1", Tenant: "acme", Brand: "shop", Priority: mailwavev1.Priority_PRIORITY_TRANSACTIONAL,
		Recipients: rcpts("ana@gmail.com"), Content: template("Shop <receipts@tx.shop.test>", "Your receipt, {{.name}}", "")})
	ev := h.outcomes("acme/tx-1", 1)["ana@gmail.com"]
	s := h.dispatchOf(ev.GetMessageId())
	if !strings.HasPrefix(s.subject, "mail.dispatch-tx.tx.") || s.d.GetRouting().GetSourceIp() != "127.0.0.5" ||
		s.d.GetRouting().GetSendingDomain() != "tx.shop.test" || bytes.Contains(s.d.GetData(), []byte("List-Unsubscribe")) {
		t.Errorf("transactional: %s %v", s.subject, s.d.GetRouting())
	}

	// A relay route: no source IP, the relay's name.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/promo-1", Tenant: "acme", Brand: "shop", MailStream: "promo",
		Recipients: rcpts("bo@yahoo.com"), Content: template("Shop <deals@news.shop.test>", compliantText, "")})
	ev = h.outcomes("acme/promo-1", 1)["bo@yahoo.com"]
	if r := h.dispatchOf(ev.GetMessageId()).d.GetRouting(); r.GetRelayRoute() != "esp1" || r.GetSourceIp() != "" || r.GetPool() != "relay-esp1" {
		t.Errorf("relay: %v", r)
	}

	// What the tenancy does not know, or a From outside the stream's
	// domain, ends dropped with the reason.
	for key, tc := range map[string]struct {
		brand, stream, from, want string
	}{
		"acme/unknown-brand":  {"toys", "", "a@tx.shop.test", `brand "toys" of tenant "acme" is not configured`},
		"acme/unknown-stream": {"shop", "alerts", "a@tx.shop.test", `mail stream "alerts" of brand "shop" is not configured`},
		"acme/misaligned":     {"shop", "newsletter", "news@elsewhere.test", "From domain elsewhere.test is not aligned with stream \"newsletter\"'s sending domain news.shop.test"},
	} {
		h.send(&mailwavev1.SendRequest{IdempotencyKey: key, Tenant: "acme", Brand: tc.brand, MailStream: tc.stream,
			Recipients: rcpts("x@gmail.com", "y@yahoo.com"), Content: template(tc.from, compliantText, "")})
		for rcpt, ev := range h.outcomes(key, 2) {
			if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DROPPED || !strings.Contains(ev.GetReason(), tc.want) {
				t.Errorf("%s %s: %v %q, want dropped %q", key, rcpt, ev.GetKind(), ev.GetReason(), tc.want)
			}
		}
	}
}

// A bulk campaign missing the postal address or the unsubscribe link is
// refused with the reason: every recipient ends dropped, never silently.
func TestBulkContentWithoutPostalAddressOrUnsubscribeLinkIsRefused(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	for i, tc := range []struct {
		name, text, html string
		raw              bool
		want             string
	}{
		{name: "no postal address", text: "Hi\n{{.unsubscribe_url}}\n", want: `requires the postal address ("Shop Inc., 1 Main Street, Springfield", or {{.postal_address}}) in the text part`},
		{name: "no unsubscribe link", text: "Hi\nShop Inc., 1 Main Street, Springfield\n", want: "requires an unsubscribe link ({{.unsubscribe_url}}) in the text part"},
		{name: "html part lacks them", text: compliantText, html: "<p>Hi</p>", want: "in the html part"},
		{name: "raw content", raw: true, want: "needs template content"},
	} {
		key := "acme/refused-" + string(rune('a'+i))
		req := &mailwavev1.SendRequest{IdempotencyKey: key, Tenant: "acme", Brand: "shop", MailStream: "newsletter", CampaignId: key[5:],
			Recipients: rcpts("x@gmail.com", "y@yahoo.com", "z@outlook.com"), Content: template("Shop <news@news.shop.test>", tc.text, tc.html)}
		if tc.raw {
			req.Content = &mailwavev1.SendRequest_Raw{Raw: []byte("From: news@news.shop.test\r\nSubject: x\r\n\r\nhello\r\n")}
		}
		h.send(req)
		for rcpt, ev := range h.outcomes(key, 3) {
			if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DROPPED || !strings.Contains(ev.GetReason(), tc.want) {
				t.Errorf("%s, %s: %v %q, want dropped with %q", tc.name, rcpt, ev.GetKind(), ev.GetReason(), tc.want)
			}
		}
		// Progress says so too, once the pass and the counting are done.
		var c *planner.Campaign
		testenv.Eventually(t, 10*time.Second, func() bool {
			c, _ = h.campaign(h.http, "acme", key[5:])
			return c != nil && c.Status == "refused" && c.Counts["dropped"] == 3
		}, "%s: progress %+v", tc.name, c)
		if !strings.Contains(c.Reason, tc.want) {
			t.Errorf("%s: progress reason %q", tc.name, c.Reason)
		}
	}
	if n := len(h.dispatches()); n != 0 {
		t.Errorf("%d dispatches of refused campaigns", n)
	}
	// {{.postal_address}} is as good as the address itself.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/ok", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		Recipients: rcpts("x@gmail.com"), Content: template("Shop <news@news.shop.test>", "Hi {{.unsubscribe_url}} {{.postal_address}}",
			`<p><a href="{{.unsubscribe_url}}">Unsubscribe</a> {{.postal_address}}</p>`)})
	ev := h.outcomes("acme/ok", 1)["x@gmail.com"]
	if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
		t.Fatalf("%v %s", ev.GetKind(), ev.GetReason())
	}
	d := h.dispatchOf(ev.GetMessageId()).d
	for i, part := range bodyParts(t, d.GetData()) {
		if !strings.Contains(part, "Shop Inc., 1 Main Street, Springfield") || !strings.Contains(part, "https://u.shop.test/u/") {
			t.Errorf("part %d rendered without the address or link:\n%s", i, part)
		}
	}
}
