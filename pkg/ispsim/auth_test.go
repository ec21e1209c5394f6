package ispsim_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

// dkimKeys makes a key pair and the TXT record publishing its public half.
func dkimKeys(t *testing.T, kind string) (crypto.Signer, string) {
	t.Helper()
	switch kind {
	case "ed25519":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return priv, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		// Longer than 255 bytes: the zone splits it into strings.
		return priv, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	}
}

func sign(t *testing.T, key crypto.Signer, domain, selector, data string) string {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(data), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderKeys: []string{"From", "To", "Subject", "Message-ID", "Date"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestAuthenticationVerdicts(t *testing.T) {
	sim, _ := start(t, nil)
	// A sending domain configured at run time, as the platform's tests do.
	const domain = "brand.example"
	sim.DNS().SetTXT(domain, "v=spf1 ip4:127.0.0.2 -all")
	sim.DNS().SetTXT("_dmarc."+domain, "v=DMARC1; p=reject; adkim=s; aspf=r")
	edKey, edTXT := dkimKeys(t, "ed25519")
	rsaKey, rsaTXT := dkimKeys(t, "rsa")
	sim.DNS().SetTXT("ed._domainkey."+domain, edTXT)
	sim.DNS().SetTXT("rsa._domainkey."+domain, rsaTXT)

	from := "news@" + domain
	bounce := "b@bounce." + domain
	sim.DNS().SetTXT("bounce."+domain, "v=spf1 ip4:127.0.0.2 -all")

	tests := []struct {
		name, id, src, mailFrom, data string
		spf, dkimResult, dmarc        string
	}{
		{
			name: "ed25519 signed, aligned", id: "auth-1", src: "127.0.0.2", mailFrom: bounce,
			data: sign(t, edKey, domain, "ed", msg(from, "a@gmail.com", "auth-1", "hello")),
			spf:  "pass", dkimResult: "pass", dmarc: "pass",
		},
		{
			name: "rsa signed", id: "auth-2", src: "127.0.0.2", mailFrom: bounce,
			data: sign(t, rsaKey, domain, "rsa", msg(from, "a@gmail.com", "auth-2", "hello")),
			spf:  "pass", dkimResult: "pass", dmarc: "pass",
		},
		{
			name: "tampered body", id: "auth-3", src: "127.0.0.2", mailFrom: bounce,
			data: strings.Replace(sign(t, edKey, domain, "ed", msg(from, "a@gmail.com", "auth-3", "hello")), "hello", "HELLO", 1),
			spf:  "pass", dkimResult: "fail", dmarc: "pass", // relaxed SPF alignment still passes
		},
		{
			name: "tampered, unauthorised IP", id: "auth-4", src: "127.0.0.3", mailFrom: bounce,
			data: strings.Replace(sign(t, edKey, domain, "ed", msg(from, "a@gmail.com", "auth-4", "hello")), "hello", "HELLO", 1),
			spf:  "fail", dkimResult: "fail", dmarc: "fail",
		},
		{
			name: "unsigned", id: "auth-5", src: "127.0.0.2", mailFrom: bounce,
			data: msg(from, "a@gmail.com", "auth-5", "hello"),
			spf:  "pass", dkimResult: "", dmarc: "pass",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.id
			if err := send(t, sim, tt.src, tt.mailFrom, "a@gmail.com", tt.data); err != nil {
				t.Fatal(err)
			}
			snap, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return s.Delivered(id, "") == 1 })
			if err != nil {
				t.Fatal(err)
			}
			v := snap.MessagesWithID(id)[0].Auth
			if v.SPF != tt.spf || v.DMARC != tt.dmarc {
				t.Errorf("spf %s dmarc %s, want %s %s (%s)", v.SPF, v.DMARC, tt.spf, tt.dmarc, v.AuthenticationResults)
			}
			got := ""
			if len(v.DKIM) > 0 {
				got = v.DKIM[0].Result
			}
			if got != tt.dkimResult {
				t.Errorf("dkim %q, want %q (%+v)", got, tt.dkimResult, v.DKIM)
			}
			if tt.dkimResult == "pass" && !v.DKIMPass(domain) {
				t.Error("DKIMPass false")
			}
			// The verdict is a well-formed Authentication-Results value.
			ident, results, err := authres.Parse(v.AuthenticationResults)
			if err != nil || ident != "ispsim.test" || len(results) < 3 {
				t.Errorf("Authentication-Results %q: %v", v.AuthenticationResults, err)
			}
		})
	}
}
