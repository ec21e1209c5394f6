package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

// The campaign pool: 127.0.0.2 is warm, 127.0.0.3 is new and may send 200
// a day to each provider on its first ramp days; transactional mail has
// its own IP. Caps are scaled down from the shipped ramp so the test sees
// a whole day's cap in seconds.
const campaignTenancy = `
warmup:
  levels: [{days: 5, per_day: 200}, {days: 3, per_day: 400}]
  then: {per_day: 1000, increase: 500, until: 5000}
  fast_share: 0.9
  fast_step: 2
pools:
  campaign:
    spill: true
    ips:
      - {ip: 127.0.0.2, hostname: mta1.mailwave.test}
      - {ip: 127.0.0.3, hostname: mta2.mailwave.test, new: true}
  tx:
    ips: [{ip: 127.0.0.4, hostname: mta3.mailwave.test}]
domains:
  mailwave.test:
    postal_address: "Mailwave Shop, 1 Harbour Road, Portsmouth"
    unsubscribe: {url: "https://unsubscribe.mailwave.test", mailto: unsubscribe@mailwave.test}
tenants:
  acme:
    brands:
      shop:
        default_stream: transactional
        streams:
          transactional: {kind: transactional, domain: mailwave.test, pool: tx}
          newsletter: {kind: bulk, domain: mailwave.test, pool: campaign, send_window: 30m}
`

// campaignShaping lets each campaign IP send 4 a second to each provider:
// one-second waves of 3 per IP (MW_WAVE_SHARE 0.8), well inside what the
// simulator's providers accept. The transactional IP keeps room for a
// burst of password resets.
const campaignShaping = `
source_ips:
  "127.0.0.2": {limits: {messages_per_second: 4, messages_per_minute: 240, messages_per_hour: 14400}}
  "127.0.0.3": {limits: {messages_per_second: 4, messages_per_minute: 240, messages_per_hour: 14400}}
  "127.0.0.4": {limits: {max_connections: 4, messages_per_second: 50, messages_per_minute: 3000, messages_per_hour: 100000}}
`

const (
	newIP        = "127.0.0.3"
	warmIP       = "127.0.0.2"
	newIPCap     = 200
	waveCapacity = 3 // floor(4/s × 1 s × 0.8)
	campaignSize = 20000
	postal       = "Mailwave Shop, 1 Harbour Road, Portsmouth"
	newsText     = "Hello {{.name}},\n\nour autumn news.\n\nUnsubscribe: {{.unsubscribe_url}}\n" + postal + "\n"
)

func startCampaignStack(t *testing.T) *env {
	dir := t.TempDir()
	tenancyPath := filepath.Join(dir, "tenancy.yaml")
	shapingPath := filepath.Join(dir, "shaping.yaml")
	if err := os.WriteFile(tenancyPath, []byte(campaignTenancy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shapingPath, []byte(campaignShaping), 0o600); err != nil {
		t.Fatal(err)
	}
	return startWith(t, nil, func(o *stack.Options) {
		o.SourceIPs = []string{warmIP, newIP, "127.0.0.4"}
		o.HeloNames = nil
		o.TunePlanner = func(c *planner.Config) {
			// The tenancy file names the pools; the flat settings are for
			// the default tenancy only.
			c.SourceIPs, c.HeloNames = nil, nil
			c.Tenancy = tenancyPath
			c.ShapingFile = shapingPath
			c.WaveInterval = time.Second
			c.Recheck = time.Second
		}
		o.TuneSender = func(c *sender.Config) { c.ShapingFile = shapingPath }
	})
}

func newsRequest(key, ctype, text string, rcpts ...string) *mailwavev1.SendRequest {
	req := &mailwavev1.SendRequest{IdempotencyKey: key, Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CommunicationType: ctype, CampaignId: key,
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Mailwave Shop <news@mailwave.test>", Subject: "Autumn news, {{.name}}", Text: text}}}
	for _, r := range rcpts {
		req.Recipients = append(req.Recipients, &mailwavev1.Recipient{Address: r, Vars: map[string]string{"name": r[:strings.IndexByte(r, '@')]}})
	}
	return req
}

// deliveredCopy waits for the simulator to accept the message a request
// planned for rcpt and returns it.
func (e *env) deliveredCopy(t *testing.T, requestID, rcpt string) *ispsim.Message {
	t.Helper()
	id := planner.MessageID(requestID, rcpt) + "@mailwave.test"
	snap, err := e.sim.Ledger().Wait(testenv.Context(t), func(s *ispsim.Snapshot) bool { return len(s.MessagesWithID(id)) > 0 })
	if err != nil {
		t.Fatalf("%s never arrived: %v", rcpt, err)
	}
	return snap.MessagesWithID(id)[0]
}

func (e *env) campaign(t *testing.T, id string) *planner.Campaign {
	t.Helper()
	resp, err := http.Get("http://" + e.st.HTTP["planner"] + "/campaigns/acme/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var c planner.Campaign
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// eventsOf reads the events of kind of request requestID for tenant acme
// until it has want of them.
func (e *env) eventsOf(t *testing.T, kind mailwavev1.EventKind, requestID string, want int) []*mailwavev1.DeliveryEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 60*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, mailwavev1.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{mailwavev1.SubjectEvent(kind, "acme")}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*mailwavev1.DeliveryEvent
	for len(out) < want {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var ev mailwavev1.DeliveryEvent
			if err := proto.Unmarshal(m.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.GetRequestId() == requestID {
				out = append(out, &ev)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d %v events", len(out), want, kind)
		}
	}
	return out
}

// TestCampaignInWavesWithWarmupAndTransactionalLane is the planner's whole
// story against the simulator: preferences and the one-click endpoint,
// compliance refusals, then a 20,000-recipient campaign over a pool with
// one new IP and one warm IP, released in waves per provider, while
// transactional mail goes out in its own lane.
func TestCampaignInWavesWithWarmupAndTransactionalLane(t *testing.T) {
	e := startCampaignStack(t)
	ctx := testenv.Context(t)

	// Preferences. A global suppression, a complaint about an earlier
	// newsletter, and a one-click unsubscribe from the "weekly" type.
	sups, err := e.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&mailwavev1.Suppression{Address: "blocked@gmail.com", Scope: mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL,
		Reason: "manual", Origin: mailwavev1.Origin_ORIGIN_USER})
	if _, err := sups.Put(ctx, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL, "", "", "", "blocked@gmail.com"), b); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Send(ctx, newsRequest("early-news", "weekly", newsText, "unsub@yahoo.com", "complainer@outlook.com")); err != nil {
		t.Fatal(err)
	}
	unsubCopy := e.deliveredCopy(t, "early-news", "unsub@yahoo.com")
	complained := e.deliveredCopy(t, "early-news", "complainer@outlook.com")
	if complained.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" || complained.Header.Get("Feedback-Id") != "early-news:newsletter:shop:acme" {
		t.Errorf("bulk headers %v", complained.Header)
	}
	// The complaint, as fbl-parser publishes it from the provider's ARF
	// report.
	pub := events.NewPublisher(e.js)
	compl := &mailwavev1.DeliveryEvent{EventId: "complaint-1", Kind: mailwavev1.EventKind_EVENT_KIND_COMPLAINED, Origin: mailwavev1.Origin_ORIGIN_FBL,
		MessageId: planner.MessageID("early-news", "complainer@outlook.com"), Tenant: "acme", Brand: "shop", CampaignId: "early-news",
		Recipient: "complainer@outlook.com", Reason: "complaint", OccurredAt: timestamppb.Now()}
	if _, err := pub.Publish(ctx, mailwavev1.SubjectEvent(compl.GetKind(), "acme"), compl, events.WithMsgID(compl.GetEventId())); err != nil {
		t.Fatal(err)
	}
	// One-click, with a real HTTP POST of the link in List-Unsubscribe: a
	// forged token first.
	first, _, _ := strings.Cut(unsubCopy.Header.Get("List-Unsubscribe"), ",")
	link, err := url.Parse(strings.Trim(first, "<> "))
	if err != nil || link.Scheme != "https" || link.Host != "unsubscribe.mailwave.test" {
		t.Fatalf("List-Unsubscribe %q", unsubCopy.Header.Get("List-Unsubscribe"))
	}
	oneClick := func(path string) int {
		resp, err := http.Post("http://"+e.st.HTTP["planner"]+path, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	forged := link.Path[:len(link.Path)-6] + "AAAAAA"
	if code := oneClick(forged); code != http.StatusForbidden {
		t.Errorf("forged token: %d, want 403", code)
	}
	if code := oneClick(link.Path); code != http.StatusOK {
		t.Fatalf("one-click POST: %d", code)
	}
	for _, key := range []string{
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, "acme", "shop", "weekly", "unsub@yahoo.com"),
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", "shop", "", "complainer@outlook.com"),
	} {
		testenv.Eventually(t, 10*time.Second, func() bool { _, err := sups.Get(ctx, key); return err == nil }, "suppression %s", key)
	}

	// Compliance: bulk content without the postal address or the
	// unsubscribe link is refused, every recipient dropped with why.
	for key, tc := range map[string]struct{ text, want string }{
		"no-postal":      {"Hello {{.name}}\n{{.unsubscribe_url}}\n", "requires the postal address"},
		"no-unsubscribe": {"Hello {{.name}}\n" + postal + "\n", "requires an unsubscribe link"},
	} {
		if _, err := e.cl.Send(ctx, newsRequest(key, "weekly", tc.text, "x@gmail.com", "y@yahoo.com")); err != nil {
			t.Fatal(err)
		}
		for rcpt, ev := range e.terminal(t, "acme", key, 2) {
			if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DROPPED || !strings.Contains(ev.GetReason(), tc.want) {
				t.Errorf("%s %s: %v %q, want dropped %q", key, rcpt, ev.GetKind(), ev.GetReason(), tc.want)
			}
		}
	}

	// The campaign: 20,000 recipients in the object store, the three
	// above among them.
	providers := []string{"gmail.com", "yahoo.com", "outlook.com"}
	special := []string{"blocked@gmail.com", "unsub@yahoo.com", "complainer@outlook.com"}
	var aud bytes.Buffer
	for i := range campaignSize - len(special) {
		fmt.Fprintf(&aud, `{"address":"reader%d@%s","vars":{"name":"Reader %d"}}`+"\n", i, providers[i%3], i)
	}
	for _, a := range special {
		fmt.Fprintf(&aud, `{"address":%q,"vars":{"name":"Special"}}`+"\n", a)
	}
	ref, err := e.cl.PutAudience(ctx, "autumn.ndjson", mailwavev1.AudienceFormat_AUDIENCE_FORMAT_NDJSON, &aud)
	if err != nil {
		t.Fatal(err)
	}
	req := newsRequest("autumn", "weekly", newsText)
	req.Audience = ref
	campaignStart := time.Now()
	if _, err := e.cl.Send(ctx, req); err != nil {
		t.Fatal(err)
	}

	// Transactional mail while the campaign is planned and sent: once
	// its first recipients are planned, publish → the simulator's 250,
	// each.
	var c *planner.Campaign
	testenv.Eventually(t, 60*time.Second, func() bool {
		c = e.campaign(t, "autumn")
		return c != nil && c.Counts["planned"] > 0
	}, "the campaign did not start")
	const txSends = 30
	var latencies []time.Duration
	for i := range txSends {
		key := fmt.Sprintf("reset-%d", i)
		rcpt := fmt.Sprintf("member%d@%s", i, providers[i%3])
		sent := time.Now()
		if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: key, Tenant: "acme", Brand: "shop",
			Priority: mailwavev1.Priority_PRIORITY_TRANSACTIONAL, Recipients: []*mailwavev1.Recipient{{Address: rcpt}},
			Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
				From: "Mailwave Shop <security@mailwave.test>", Subject: "Your reset link", Text: "Reset your password."}}}); err != nil {
			t.Fatal(err)
		}
		m := e.deliveredCopy(t, key, rcpt)
		latencies = append(latencies, m.ReceivedAt.Sub(sent))
		if m.SourceIP.String() != "127.0.0.4" {
			t.Errorf("transactional %s from %s", rcpt, m.SourceIP)
		}
	}
	if c = e.campaign(t, "autumn"); c.Status == "planned" {
		t.Logf("the campaign was planned before the transactional sends ended")
	} else {
		t.Logf("after the transactional sends, %d of %d campaign recipients are planned", c.Counts["planned"], campaignSize)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	p99 := latencies[(len(latencies)*99+99)/100-1]
	t.Logf("transactional publish → 250 during the campaign: p50 %s, p99 %s, max %s (%d sends, race detector %v)",
		latencies[len(latencies)/2], p99, latencies[len(latencies)-1], len(latencies), raceEnabled)
	// The latency target is p99 ≤ 150 ms; the race detector slows every
	// service several-fold, so under it only queuing behind the campaign
	// (seconds) fails the test.
	limit := 150 * time.Millisecond
	if raceEnabled {
		limit = time.Second
	}
	if p99 > limit {
		t.Errorf("transactional p99 %s, want ≤ %s", p99, limit)
	}

	// Every recipient is planned: the counts come from the EVENTS stream.
	testenv.Eventually(t, 90*time.Second, func() bool {
		c = e.campaign(t, "autumn")
		return c != nil && c.Status == "planned" && c.Counts["planned"]+c.Counts["suppressed"] == campaignSize
	}, "the campaign was not planned: %+v", c)
	if c.Counts["planned"] != campaignSize-3 || c.Counts["suppressed"] != 3 || c.Counts["dropped"] != 0 || c.Recipients != campaignSize {
		t.Errorf("campaign progress %+v", c)
	}
	t.Logf("20,000 recipients planned in %s", time.Since(campaignStart).Round(time.Millisecond))
	for _, ev := range e.eventsOf(t, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, "autumn", 3) {
		want := map[string]string{"blocked@gmail.com": "manual", "unsub@yahoo.com": "unsubscribe", "complainer@outlook.com": "complaint"}[ev.GetRecipient()]
		if ev.GetReason() != want {
			t.Errorf("suppressed %s: %q, want %q", ev.GetRecipient(), ev.GetReason(), want)
		}
	}

	// Warm-up: the new IP is planned at most its cap per provider, the
	// rest spills to the warm IP.
	planned := map[string]int{}
	for _, ev := range e.eventsOf(t, mailwavev1.EventKind_EVENT_KIND_ACCEPTED, "autumn", campaignSize-3) {
		planned[ev.GetSourceIp()+" "+ev.GetProvider()]++
	}
	// The early newsletter counts against the same day's caps.
	for _, ev := range e.eventsOf(t, mailwavev1.EventKind_EVENT_KIND_ACCEPTED, "early-news", 2) {
		planned[ev.GetSourceIp()+" "+ev.GetProvider()]++
	}
	for _, prov := range []string{"google", "yahoo", "microsoft"} {
		if n := planned[newIP+" "+prov]; n != newIPCap {
			t.Errorf("new IP to %s: %d planned today, want its day's cap %d (%v)", prov, n, newIPCap, planned)
		}
		if n := planned[warmIP+" "+prov]; n < 6400 {
			t.Errorf("warm IP to %s: %d planned, want the spilled rest (%v)", prov, n, planned)
		}
	}

	// Waves: each provider receives the campaign a few per second from
	// each IP, never in a burst. Watch a few seconds of arrivals.
	var snap *ispsim.Snapshot
	testenv.Eventually(t, 30*time.Second, func() bool {
		snap = e.sim.Ledger().Snapshot()
		for _, prov := range []string{"google", "yahoo", "microsoft"} {
			for _, ip := range []string{newIP, warmIP} {
				if len(wavesOf(snap, prov, ip)) < 6 {
					return false
				}
			}
		}
		return true
	}, "arrivals from both IPs at every provider in at least 6 waves")
	elapsed := time.Since(campaignStart)
	for _, prov := range []string{"google", "yahoo", "microsoft"} {
		for _, ip := range []string{newIP, warmIP} {
			waves := wavesOf(snap, prov, ip)
			total, most := 0, 0
			for _, n := range waves {
				total += n
				most = max(most, n)
			}
			// A wave holds at most 3; the sender's own shaping may let two
			// meet in one second, never more.
			if most > 2*waveCapacity {
				t.Errorf("%s from %s: %d in one second (waves %v)", prov, ip, most, waves)
			}
			if limit := int(elapsed.Seconds()+2) * waveCapacity; total > limit {
				t.Errorf("%s from %s: %d arrived in %s, more than waves allow (%d)", prov, ip, total, elapsed, limit)
			}
			if ip == newIP && total > newIPCap {
				t.Errorf("%s received %d from the new IP, over its cap", prov, total)
			}
		}
	}
	// Suppressed recipients never get the campaign: the two that got the
	// early newsletter have that one copy, the blocked one nothing.
	for a, want := range map[string]int{"blocked@gmail.com": 0, "unsub@yahoo.com": 1, "complainer@outlook.com": 1} {
		if n := len(snap.To(a)); n != want {
			t.Errorf("%s received %d messages, want %d", a, n, want)
		}
	}
}

// wavesOf counts the campaign's arrivals at provider from ip per second.
func wavesOf(s *ispsim.Snapshot, provider, ip string) map[int64]int {
	src := netip.MustParseAddr(ip)
	out := map[int64]int{}
	for _, m := range s.Accepted(provider, src) {
		if slices.ContainsFunc(m.Rcpts, func(r string) bool { return strings.HasPrefix(r, "reader") }) {
			out[m.ReceivedAt.Unix()]++
		}
	}
	return out
}
