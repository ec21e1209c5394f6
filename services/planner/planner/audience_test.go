package planner_test

import (
	"bytes"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

func (h *harness) putAudience(name string, data []byte) {
	h.t.Helper()
	ctx := testenv.Context(h.t)
	store, err := h.js.ObjectStore(ctx, mailwavev1.ObjectStoreAudiences)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data)); err != nil {
		h.t.Fatal(err)
	}
}

// A campaign's audience is read from the object store (NDJSON or CSV),
// each recipient gets the template personalised with their own fields,
// and a transactional send made while the campaign is being planned is
// planned at once, in its own lane, not after the campaign.
func TestStoredAudienceAndTheTransactionalLane(t *testing.T) {
	t.Parallel()
	h := start(t, withShop(t))
	const n = 3000
	var nd bytes.Buffer
	for i := range n {
		fmt.Fprintf(&nd, `{"address":"user%d@%s","vars":{"name":"Name %d"},"external_id":"c%d"}`+"\n", i, []string{"gmail.com", "yahoo.com", "outlook.com"}[i%3], i, i)
	}
	h.putAudience("autumn.ndjson", nd.Bytes())
	h.putAudience("small.csv", []byte("email,name,external_id\nana@gmail.com,Ana,x1\n\"bo@yahoo.com\",\"Bo, Jr.\",x2\n"))

	ctx := testenv.Context(t)
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/autumn", Tenant: "acme", Brand: "shop", MailStream: "newsletter", CampaignId: "autumn",
		Audience: &mailwavev1.AudienceRef{Object: "autumn.ndjson", Format: mailwavev1.AudienceFormat_AUDIENCE_FORMAT_NDJSON},
		Content:  template("Shop <news@news.shop.test>", compliantText, "")})
	// The transactional send goes in while the campaign is planned.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/reset", Tenant: "acme", Brand: "shop", Priority: mailwavev1.Priority_PRIORITY_TRANSACTIONAL,
		Recipients: rcpts("zed@gmail.com"), Content: template("Shop <security@tx.shop.test>", "Reset, {{.name}}", "")})
	tx := h.outcomes("acme/reset", 1)["zed@gmail.com"]
	if tx.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
		t.Fatalf("transactional: %v %s", tx.GetKind(), tx.GetReason())
	}
	c, _ := h.campaign(h.http, "acme", "autumn")
	if c != nil && c.Status == "planned" {
		t.Errorf("the transactional send was planned after the whole campaign (%+v)", c)
	}
	evs := h.outcomes("acme/autumn", n)
	all := h.byID()
	for _, i := range []int{0, 1234, n - 1} {
		addr := fmt.Sprintf("user%d@%s", i, []string{"gmail.com", "yahoo.com", "outlook.com"}[i%3])
		ev := evs[addr]
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED || ev.GetExternalId() != fmt.Sprintf("c%d", i) {
			t.Fatalf("%s: %v", addr, ev)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(h.lookup(all, ev.GetMessageId()).d.GetData()))
		if err != nil {
			t.Fatal(err)
		}
		subj, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
		if subj != fmt.Sprintf("Hello Name %d", i) {
			t.Errorf("%s: subject %q", addr, subj)
		}
	}
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/small", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		Audience: &mailwavev1.AudienceRef{Object: "small.csv", Format: mailwavev1.AudienceFormat_AUDIENCE_FORMAT_CSV},
		Content:  template("Shop <news@news.shop.test>", compliantText, "")})
	small := h.outcomes("acme/small", 2)
	msg, _ := mail.ReadMessage(bytes.NewReader(h.dispatchOf(small["bo@yahoo.com"].GetMessageId()).d.GetData()))
	if subj, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); subj != "Hello Bo, Jr." || small["bo@yahoo.com"].GetExternalId() != "x2" {
		t.Errorf("CSV recipient: %q %v", subj, small["bo@yahoo.com"])
	}
	// A missing audience is a request that can never be planned: it is
	// dead-lettered with the reason.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/missing", Tenant: "acme", Brand: "shop", MailStream: "newsletter",
		Audience: &mailwavev1.AudienceRef{Object: "nope.ndjson"}, Content: template("Shop <news@news.shop.test>", compliantText, "")})
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, err := h.js.Stream(ctx, mailwavev1.StreamDead)
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, mailwavev1.SubjectDead(mailwavev1.StreamSend))
		return err == nil && strings.Contains(m.Header.Get(mailwavev1.HeaderDeadReason), "nope.ndjson")
	}, "the request with a missing audience was not dead-lettered")
}
