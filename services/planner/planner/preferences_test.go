package planner_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// oneClickPath returns the path of the one-click link in a dispatched
// message's List-Unsubscribe header.
func oneClickPath(t *testing.T, data []byte) string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	lu := msg.Header.Get("List-Unsubscribe")
	first, _, _ := strings.Cut(lu, ",")
	u, err := url.Parse(strings.Trim(first, "<> "))
	if err != nil || u.Scheme != "https" {
		t.Fatalf("List-Unsubscribe %q", lu)
	}
	return u.Path
}

func post(t *testing.T, addr, path, ctype, body string) int {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The one-click endpoint (RFC 8058) unsubscribes from the communication
// type with a real HTTP POST, refuses forged and altered tokens, never
// unsubscribes on GET, and every later send honours it.
func TestOneClickUnsubscribe(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	ctx := testenv.Context(t)
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/weekly-1", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CommunicationType: "weekly", CampaignId: "w1", Recipients: rcpts("ana@gmail.com", "bo@yahoo.com"),
		Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/weekly-1", 2)
	anaPath := oneClickPath(t, h.dispatchOf(evs["ana@gmail.com"].GetMessageId()).d.GetData())
	boPath := oneClickPath(t, h.dispatchOf(evs["bo@yahoo.com"].GetMessageId()).d.GetData())
	const form = "application/x-www-form-urlencoded"

	// Forged, altered, or without the one-click body: refused.
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(anaPath, "/u/"))
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/3] ^= 0x20 // a letter of the address changes case
	flip := base64.RawURLEncoding.EncodeToString(raw)
	for name, tc := range map[string]struct {
		path, body string
		want       int
	}{
		"altered token": {"/u/" + flip, "List-Unsubscribe=One-Click", http.StatusForbidden},
		"made-up token": {"/u/" + strings.Repeat("QUJD", 40), "List-Unsubscribe=One-Click", http.StatusForbidden},
		"not a token":   {"/u/%21%21", "List-Unsubscribe=One-Click", http.StatusBadRequest},
		"wrong body":    {anaPath, "List-Unsubscribe=Yes", http.StatusBadRequest},
		"empty body":    {anaPath, "", http.StatusBadRequest},
	} {
		if code := post(t, h.http, tc.path, form, tc.body); code != tc.want {
			t.Errorf("%s: %d, want %d", name, code, tc.want)
		}
	}
	// A GET shows a confirmation page and changes nothing.
	resp, err := http.Get("http://" + h.http + boPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	sups := h.kv(mailwavev1.BucketSuppressions)
	if keys, _ := sups.ListKeys(ctx); keys != nil {
		for k := range keys.Keys() {
			t.Errorf("suppression %s written by a refused request or a GET", k)
		}
	}

	// The real one-click POST.
	if code := post(t, h.http, anaPath, form, "List-Unsubscribe=One-Click"); code != http.StatusOK {
		t.Fatalf("one-click POST: %d", code)
	}
	key := mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, "acme", "shop", "weekly", "ana@gmail.com")
	e, err := sups.Get(ctx, key)
	if err != nil {
		t.Fatalf("suppression %s: %v", key, err)
	}
	var sup mailwavev1.Suppression
	_ = proto.Unmarshal(e.Value(), &sup)
	if sup.GetReason() != "unsubscribe" || sup.GetOrigin() != mailwavev1.Origin_ORIGIN_USER || sup.GetEvidence()["method"] != "one-click" {
		t.Errorf("suppression %v", &sup)
	}
	// An unsubscribed event, once, tied to the message and campaign.
	ev := waitEvent(t, h, "acme", mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED, "ana@gmail.com")
	if ev.GetMessageId() != evs["ana@gmail.com"].GetMessageId() || ev.GetCampaignId() != "w1" || ev.GetCommunicationType() != "weekly" {
		t.Errorf("unsubscribed event %v", ev)
	}
	// multipart/form-data is as good (RFC 8058 §3.2), and a second click
	// changes nothing.
	if code := post(t, h.http, anaPath, "multipart/form-data; boundary=xx",
		"--xx\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--xx--\r\n"); code != http.StatusOK {
		t.Errorf("multipart POST: %d", code)
	}

	// Every later send of that type honours it; other types do not.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/weekly-2", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CommunicationType: "weekly", Recipients: rcpts("ana@gmail.com", "bo@yahoo.com"),
		Content: template("Shop <news@news.shop.test>", compliantText, "")})
	later := h.outcomes("acme/weekly-2", 2)
	if ev := later["ana@gmail.com"]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_SUPPRESSED || ev.GetReason() != "unsubscribe" ||
		!strings.Contains(ev.GetDetail(), "communication type") {
		t.Errorf("ana after unsubscribing: %v %q %q", ev.GetKind(), ev.GetReason(), ev.GetDetail())
	}
	if k := later["bo@yahoo.com"].GetKind(); k != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
		t.Errorf("bo: %v", k)
	}
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/offers-1", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CommunicationType: "offers", Recipients: rcpts("ana@gmail.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	if k := h.outcomes("acme/offers-1", 1)["ana@gmail.com"].GetKind(); k != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
		t.Errorf("ana for another type: %v", k)
	}
	// The campaign counts the unsubscribe.
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, _ := h.campaign(h.http, "acme", "w1")
		return c != nil && c.Counts["unsubscribed"] == 1 && c.Counts["planned"] == 2
	}, "campaign w1 does not count the unsubscribe")
}

// waitEvent waits for an event of kind about rcpt on tenant's feed.
func waitEvent(t *testing.T, h *harness, tenant string, kind mailwavev1.EventKind, rcpt string) *mailwavev1.DeliveryEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 10*time.Second)
	defer cancel()
	cons, err := h.js.OrderedConsumer(ctx, mailwavev1.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{mailwavev1.SubjectEvent(kind, tenant)}})
	if err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue
		}
		var ev mailwavev1.DeliveryEvent
		if proto.Unmarshal(m.Data(), &ev) == nil && ev.GetRecipient() == rcpt {
			return &ev
		}
	}
	t.Fatalf("no %v event for %s", kind, rcpt)
	return nil
}

// Preference updates that arrive as events (a preference centre's
// unsubscribe, a complaint) and global suppressions stop every later send,
// each with its reason.
func TestPreferenceEventsAndGlobalSuppressions(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	ctx := testenv.Context(t)
	pub := events.NewPublisher(h.js)
	for _, ev := range []*mailwavev1.DeliveryEvent{
		{EventId: "pref-1", Kind: mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED, Origin: mailwavev1.Origin_ORIGIN_USER,
			Tenant: "acme", Brand: "shop", CommunicationType: "weekly", Recipient: "cy@gmail.com"},
		{EventId: "compl-1", Kind: mailwavev1.EventKind_EVENT_KIND_COMPLAINED, Origin: mailwavev1.Origin_ORIGIN_FBL,
			Tenant: "acme", Brand: "shop", Recipient: "dee@yahoo.com", Reason: "complaint"},
		// Without a brand it cannot be applied; it is acknowledged and
		// ignored, not retried forever.
		{EventId: "bad-1", Kind: mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED, Tenant: "acme", Recipient: "x@gmail.com"},
	} {
		if _, err := pub.Publish(ctx, mailwavev1.SubjectEvent(ev.GetKind(), ev.GetTenant()), ev, events.WithMsgID(ev.GetEventId())); err != nil {
			t.Fatal(err)
		}
	}
	sups := h.kv(mailwavev1.BucketSuppressions)
	for _, key := range []string{
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, "acme", "shop", "weekly", "cy@gmail.com"),
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", "shop", "", "dee@yahoo.com"),
	} {
		testenv.Eventually(t, 10*time.Second, func() bool {
			_, err := sups.Get(ctx, key)
			return err == nil
		}, "suppression %s not written", key)
	}
	h.putSuppression(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL, "", "", "", "gone@outlook.com", "manual")
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/after-prefs", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		CommunicationType: "weekly", Recipients: rcpts("cy@gmail.com", "Dee@Yahoo.com", "gone@outlook.com", "eve@gmail.com", "not-an-address"),
		Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/after-prefs", 5)
	for rcpt, want := range map[string]struct {
		kind   mailwavev1.EventKind
		reason string
	}{
		"cy@gmail.com":     {mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, "unsubscribe"},
		"Dee@Yahoo.com":    {mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, "complaint"},
		"gone@outlook.com": {mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, "manual"},
		"eve@gmail.com":    {mailwavev1.EventKind_EVENT_KIND_ACCEPTED, ""},
		"not-an-address":   {mailwavev1.EventKind_EVENT_KIND_DROPPED, `invalid recipient address "not-an-address"`},
	} {
		// Events name the parsed address; an unparsable one as given.
		ev := evs[rcpt]
		if ev == nil {
			ev = evs[strings.ToLower(rcpt)]
		}
		if ev.GetKind() != want.kind || ev.GetReason() != want.reason {
			t.Errorf("%s: %v %q, want %v %q", rcpt, ev.GetKind(), ev.GetReason(), want.kind, want.reason)
		}
	}
	if _, err := sups.Get(ctx, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", "", "", "x@gmail.com")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the event without a brand wrote a suppression: %v", err)
	}
}
