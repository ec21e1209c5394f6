package planner_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

func numbered(n int, domains ...string) []*mailwavev1.Recipient {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("user%d@%s", i, domains[i%len(domains)])
	}
	return rcpts(addrs...)
}

// A new IP sends no more than its daily cap to each provider; the rest of
// the campaign leaves from the pool's warm IPs (the pool spills).
func TestNewIPCapSpillsToWarmIPs(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/spill", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		Recipients: numbered(90, "gmail.com", "yahoo.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/spill", 90)
	per := map[string]int{}
	for _, ev := range evs {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
			t.Fatalf("%s: %v %s", ev.GetRecipient(), ev.GetKind(), ev.GetReason())
		}
		per[ev.GetSourceIp()+" "+ev.GetProvider()]++
	}
	// About a third of each provider's 45 hash to the new IP; day 0 lets
	// it send 5 to each.
	for _, prov := range []string{"gmail.com", "yahoo.com"} {
		if n := per["127.0.0.3 "+prov]; n != 5 {
			t.Errorf("new IP to %s: %d, want its cap 5 (%v)", prov, n, per)
		}
		if n := per["127.0.0.2 "+prov] + per["127.0.0.4 "+prov]; n != 40 {
			t.Errorf("warm IPs to %s: %d, want 40", prov, n)
		}
	}
	var st struct {
		Cap, Used int64
		Warm      bool
	}
	resp, err := http.Get("http://" + h.http + "/warmup/ip/127.0.0.3/gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Cap != 5 || st.Used != 5 || st.Warm {
		t.Errorf("warm-up status %+v %v", st, err)
	}
}

// A pool that does not spill keeps what exceeds today's cap for the next
// day, day after day along the ramp; a throttle of the reputation monitor
// holds the ramp; once the request's max age has passed, what still does
// not fit is dropped with the reason.
func TestVolumeBeyondTheCapWaitsForTheNextDay(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/digest", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CommunicationType: "digest", CampaignId: "digest", MaxAge: durationpb.New(30 * time.Hour),
		Recipients: numbered(21, "gmail.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	accepted := func() int {
		c, _ := h.campaign(h.http, "acme", "digest")
		if c == nil {
			return 0
		}
		return int(c.Counts["planned"])
	}
	// Day 0: the cap is 5.
	var c *planner.Campaign
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ = h.campaign(h.http, "acme", "digest")
		return c != nil && c.Status == "waiting" && c.Counts["planned"] == 5
	}, "day 0 did not plan 5 and wait")
	if !strings.Contains(c.Reason, "16 recipients wait for the next day's warm-up caps") || c.NextCheck == "" {
		t.Errorf("waiting: %+v", c)
	}
	// Day 1: the clean, full day 0 moves the ramp on; still 5.
	h.clock.Add(24 * time.Hour)
	testenv.Eventually(t, 10*time.Second, func() bool { return accepted() == 10 }, "day 1 did not plan 5 more")
	// The reputation monitor throttles the IP on day 1: on day 2 the ramp
	// holds at 5 instead of moving to 10. Day 2 is past the max age: 5 go
	// out, the other 6 are dropped with the reason.
	scope := &mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "127.0.0.6"}
	b, _ := proto.Marshal(&mailwavev1.PolicyChange{Id: "t1", Scope: scope, Action: mailwavev1.PolicyAction_POLICY_ACTION_THROTTLE, RateFactor: 0.5,
		Reason: "deferral rate 12% > 5%", CreatedAt: timestamppb.New(h.clock.Now()), ExpiresAt: timestamppb.New(h.clock.Now().Add(time.Hour))})
	if _, err := h.kv(mailwavev1.BucketPolicy).Put(testenv.Context(t), mailwavev1.PolicyKey(scope), b); err != nil {
		t.Fatal(err)
	}
	h.clock.Add(24 * time.Hour)
	evs := h.outcomes("acme/digest", 21)
	dropped := 0
	for _, ev := range evs {
		switch ev.GetKind() {
		case mailwavev1.EventKind_EVENT_KIND_ACCEPTED:
			if ev.GetSourceIp() != "127.0.0.6" {
				t.Errorf("%s from %s", ev.GetRecipient(), ev.GetSourceIp())
			}
		case mailwavev1.EventKind_EVENT_KIND_DROPPED:
			dropped++
			if !strings.Contains(ev.GetReason(), "not sent within the max age: source IP 127.0.0.6 reached its warm-up cap at gmail.com today (5)") {
				t.Errorf("dropped with %q", ev.GetReason())
			}
		default:
			t.Errorf("%s: %v", ev.GetRecipient(), ev.GetKind())
		}
	}
	if dropped != 6 {
		t.Errorf("%d dropped, want 6", dropped)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ = h.campaign(h.http, "acme", "digest")
		return c != nil && c.Status == "planned" && c.Counts["planned"] == 15 && c.Counts["dropped"] == 6 && c.Recipients == 21
	}, "the campaign did not end planned")
}

// A new sending domain is capped per provider whatever IP it leaves from.
func TestNewDomainIsCapped(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/fresh", Tenant: "acme", Brand: "shop", MailStream: "fresh", CampaignId: "fresh",
		Recipients: numbered(24, "gmail.com", "yahoo.com"), Content: template("Shop <news@newdomain.shop.test>", compliantText, "")})
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ := h.campaign(h.http, "acme", "fresh")
		return c != nil && c.Status == "waiting" && c.Counts["planned"] == 10
	}, "the new domain did not send 5 per provider and wait")
	per := map[string]int{}
	for _, s := range h.dispatches() {
		per[s.d.GetRouting().GetRecipientDomain()]++
	}
	if per["gmail.com"] != 5 || per["yahoo.com"] != 5 {
		t.Errorf("per provider %v", per)
	}
}
