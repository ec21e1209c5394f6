package fblparser_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailwave/mailwave/pkg/arf"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

// FuzzParseMailboxes checks that a mailboxes file never panics the
// parser, that its errors are ErrMailbox, and that what it accepts is
// complete.
func FuzzParseMailboxes(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "mailboxes.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("mailboxes:\n  - {name: a, host: h, username: u, password_env: P, reporters: [x.example], require_dkim: true}\n"))
	f.Add([]byte("mailboxes: []\n"))
	getenv := func(string) string { return "pw" }
	f.Fuzz(func(t *testing.T, doc []byte) {
		boxes, err := fblparser.ParseMailboxes(doc, getenv)
		if err != nil {
			if !errors.Is(err, fblparser.ErrMailbox) {
				t.Fatalf("error %v is not ErrMailbox", err)
			}
			return
		}
		for _, m := range boxes {
			if m.Name == "" || m.Host == "" || m.Port == 0 || m.Username == "" || m.Password == "" || m.Folder == "" ||
				m.Processed == m.Folder || m.Failed == m.Folder || m.RequireDKIM && len(m.Reporters) == 0 {
				t.Fatalf("incomplete mailbox accepted: %+v", m)
			}
		}
	})
}

// FuzzTrustCheck feeds hostile messages to the trust check of an SMTP
// source that requires DKIM: it must never panic, and with no key
// published anywhere nothing can be trusted.
func FuzzTrustCheck(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "..", "pkg", "arf", "testdata", "*", "*.eml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, "fbl@yahoo.com")
		}
	}
	f.Add([]byte("DKIM-Signature: v=1; a=ed25519-sha256; d=yahoo.com; s=x; h=from; bh=; b=\r\nFrom: a@yahoo.com\r\n\r\nx"), "")
	nxdomain := func(name string) ([]string, error) {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	trust := &fblparser.Trust{
		SMTP:      fblparser.SourceTrust{Trusted: true, Domains: []string{"yahoo.com"}, RequireDKIM: true},
		LookupTXT: nxdomain,
	}
	f.Fuzz(func(t *testing.T, raw []byte, mailFrom string) {
		rep, err := arf.Parse(raw)
		if err != nil {
			return
		}
		ok, why, err := trust.Check(&mailwavev1.InboundMessage{Raw: raw, Source: "smtp", MailFrom: mailFrom}, rep)
		if ok || err != nil || why == "" {
			t.Fatalf("Check = %v, %q, %v; want untrusted with a reason", ok, why, err)
		}
	})
}
