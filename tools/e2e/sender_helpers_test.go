package e2e_test

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mailwave/mailwave/pkg/dkim"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// writeDKIMKey makes a fresh key ("rsa" is RSA-2048, "ed25519"), writes it
// into dir as a Secret volume would hold it, and returns it. No private
// key, even a test one, lives in the repository.
func writeDKIMKey(t *testing.T, dir, domain, selector, algo string) *dkim.Key {
	t.Helper()
	var priv any
	switch algo {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	default:
		t.Fatalf("algorithm %q", algo)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	name := selector + "._domainkey." + domain + ".pem"
	// Write then rename, as kubelet swaps a Secret volume's files, so a
	// reload never reads half a key.
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	k, err := dkim.ParseKey(domain, selector, b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publishDKIM puts the keys' public records into the simulator's DNS.
func (e *env) publishDKIM(keys ...*dkim.Key) {
	for _, k := range keys {
		e.sim.DNS().SetTXT(k.RecordName(), k.Record())
	}
}

// until follows the events of a request until cond is true for one, and
// returns that event; it fails the test after timeout.
func (e *env) until(t *testing.T, tenant, requestID string, timeout time.Duration, cond func(*mailwavev1.DeliveryEvent) bool) *mailwavev1.DeliveryEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), timeout)
	defer cancel()
	for ev, err := range e.cl.Events(ctx, tenant, requestID, time.Now().Add(-time.Hour)) {
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		if cond(ev) {
			return ev
		}
	}
	t.Fatalf("no matching event for %s within %s", requestID, timeout)
	return nil
}

func template(from string) *mailwavev1.SendRequest_Template {
	return &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
		From: from, Subject: "Hello", Text: "Hello there.\n"}}
}

func recipients(addrs ...string) []*mailwavev1.Recipient {
	out := make([]*mailwavev1.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = &mailwavev1.Recipient{Address: a}
	}
	return out
}

// dispatch publishes a dispatch message straight onto the DISPATCH stream,
// as the planner would, for routing the planner does not make (named DKIM
// selectors, a named relay route). It fills what the test leaves empty.
func (e *env) dispatch(t *testing.T, d *mailwavev1.DispatchMessage) {
	t.Helper()
	ctx := testenv.Context(t)
	r := d.Routing
	if r == nil {
		r = &mailwavev1.Routing{}
		d.Routing = r
	}
	r.Pool = cmp.Or(r.Pool, "default")
	r.SourceIp = cmp.Or(r.SourceIp, "127.0.0.3")
	r.HeloName = cmp.Or(r.HeloName, "mta2.mailwave.test")
	r.SendingDomain = cmp.Or(r.SendingDomain, "mailwave.test")
	r.RecipientDomain = cmp.Or(r.RecipientDomain, d.Recipient[strings.LastIndexByte(d.Recipient, '@')+1:])
	r.Site = cmp.Or(r.Site, r.RecipientDomain)
	d.MessageId = cmp.Or(d.MessageId, d.RequestId+"-"+d.Recipient)
	d.ReturnPath = cmp.Or(d.ReturnPath, "bounces@bounces.mailwave.test")
	if len(d.Data) == 0 {
		d.Data = rawMessage(d.Recipient, d.MessageId)
	}
	d.Attempt = max(d.Attempt, 1)
	if d.CreatedAt == nil {
		d.CreatedAt = timestamppb.Now()
		d.ExpiresAt = timestamppb.New(time.Now().Add(72 * time.Hour))
	}
	pub := events.NewPublisher(e.js)
	if _, err := pub.Publish(ctx, mailwavev1.SubjectDispatch(r.Pool, r.Site), d, events.WithMsgID(d.MessageId)); err != nil {
		t.Fatal(err)
	}
}
