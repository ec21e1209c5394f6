package e2e_test

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

var signatureAlgo = regexp.MustCompile(`(?m)^DKIM-Signature:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*`)

// algorithms lists the a= tags of a message's DKIM-Signature fields, in order.
func algorithms(data []byte) []string {
	var out []string
	for _, f := range signatureAlgo.FindAll(data, -1) {
		if m := regexp.MustCompile(`a=\s*([a-z0-9-]+)`).FindSubmatch(f); m != nil {
			out = append(out, string(m[1]))
		}
	}
	return out
}

// The sender signs with every key of the sending domain (RSA-2048 and
// Ed25519: dual signing) or with the selectors the routing names, and the
// simulator verifies the signatures against its DNS. A domain without a key
// waits, and goes out signed once its key is added to the folder.
func TestSenderSignsWithDKIM(t *testing.T) {
	keys := t.TempDir()
	rsaKey := writeDKIMKey(t, keys, "mailwave.test", "mw-rsa", "rsa")
	edKey := writeDKIMKey(t, keys, "mailwave.test", "mw-ed", "ed25519")
	e := startWith(t, nil, func(o *stack.Options) {
		o.TuneSender = func(c *sender.Config) {
			c.DKIMKeys, c.DKIMReload, c.DKIMMissingKey = keys, time.Second, "defer"
			c.RetryMax = time.Second
		}
	})
	e.publishDKIM(rsaKey, edKey)
	ctx := testenv.Context(t)

	// Dual signing: no selectors named, both keys of the domain sign.
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "dkim-dual", Tenant: "acme", Brand: "shop",
		Recipients: recipients("ana@gmail.com"), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	// A selector named by the routing: that key alone signs.
	e.dispatch(t, &mailwavev1.DispatchMessage{RequestId: "dkim-named", Tenant: "acme", Recipient: "bo@yahoo.com",
		Routing: &mailwavev1.Routing{DkimSelectors: []string{"mw-ed"}}})
	// A sending domain without a key: deferred, nothing sent.
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "dkim-nokey", Tenant: "acme", Brand: "other",
		Recipients: recipients("cy@gmail.com"), Content: template("Other <news@nokey.test>")}); err != nil {
		t.Fatal(err)
	}

	if ev := e.terminal(t, "acme", "dkim-dual", 1)["ana@gmail.com"]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("dual-signed message: %v %s", ev.GetKind(), ev.GetResponse())
	}
	snap, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool {
		return len(s.To("ana@gmail.com")) == 1 && len(s.To("bo@yahoo.com")) == 1
	})
	if err != nil {
		t.Fatal(err)
	}
	dual := snap.To("ana@gmail.com")[0]
	if got := algorithms(dual.Data); !slices.Equal(got, []string{"ed25519-sha256", "rsa-sha256"}) {
		t.Errorf("dual-signed message carries signatures %v, want ed25519 then rsa (by selector)", got)
	}
	if len(dual.Auth.DKIM) != 2 {
		t.Fatalf("verdicts %+v, want two signatures", dual.Auth.DKIM)
	}
	for _, v := range dual.Auth.DKIM {
		if v.Result != "pass" || v.Domain != "mailwave.test" {
			t.Errorf("signature of %s: %s (%s)", v.Domain, v.Result, v.Reason)
		}
	}
	if dual.Auth.DMARC != "pass" {
		t.Errorf("DMARC %s: %s", dual.Auth.DMARC, dual.Auth.AuthenticationResults)
	}
	named := snap.To("bo@yahoo.com")[0]
	if got := algorithms(named.Data); !slices.Equal(got, []string{"ed25519-sha256"}) || !named.Auth.DKIMPass("mailwave.test") {
		t.Errorf("named selector: signatures %v, verdicts %+v", got, named.Auth.DKIM)
	}

	deferred := e.until(t, "acme", "dkim-nokey", 30*time.Second, func(ev *mailwavev1.DeliveryEvent) bool {
		return ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_DEFERRED
	})
	if deferred.GetReason() != "securityerror" || deferred.GetPhase() != "dkim" || deferred.GetNextAttemptAt() == nil {
		t.Errorf("deferred event: reason %q phase %q next %v: %s", deferred.GetReason(), deferred.GetPhase(),
			deferred.GetNextAttemptAt(), deferred.GetResponse())
	}
	if n := len(e.sim.Ledger().Snapshot().To("cy@gmail.com")); n != 0 {
		t.Fatalf("a message without its key reached the provider %d times", n)
	}
	// The key arrives in the Secret; the next retry is signed with it.
	noKey := writeDKIMKey(t, keys, "nokey.test", "k1", "rsa")
	e.publishDKIM(noKey)
	if ev := e.terminal(t, "acme", "dkim-nokey", 1)["cy@gmail.com"]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("after the key was added: %v %s", ev.GetKind(), ev.GetResponse())
	}
	late := e.sim.Ledger().Snapshot().To("cy@gmail.com")
	if len(late) != 1 || !late[0].Auth.DKIMPass("nokey.test") {
		t.Fatalf("late message: %d copies, verdicts %+v", len(late), late[0].Auth.DKIM)
	}
}
