package planner

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/tenancy"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// This is an internal test: rendering is not exported, and its output is
// what the end-to-end tests check byte for byte on the wire.

func TestRenderTemplateMultipart(t *testing.T) {
	req := &mailwavev1.SendRequest{Tenant: "acme", Brand: "shop", MailStream: "newsletter", CampaignId: "nov:26", Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
		From: "Shop <news@shop.example>", Subject: "Hi {{.name}} – ünïcode", Text: "Hello {{.name}}\n.dot line",
		Html: "<p>Hello {{.name}}</p>", Headers: map[string]string{"Reply-To": "help@shop.example"},
	}}}
	c, err := prepare(req, flatRoute(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	data, hid, err := c.render(&mailwavev1.Recipient{Address: "ana@example.com", Vars: map[string]string{"name": "<Ana>"}}, "ana@example.com", "0123abcd", now, personal{})
	if err != nil {
		t.Fatal(err)
	}
	if hid != "0123abcd@shop.example" {
		t.Errorf("header id %q", hid)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	dec := new(mime.WordDecoder)
	subj, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
	if subj != "Hi <Ana> – ünïcode" || msg.Header.Get("Reply-To") != "help@shop.example" ||
		msg.Header.Get("Message-Id") != "<0123abcd@shop.example>" || msg.Header.Get("Feedback-Id") != "nov-26:newsletter:shop:acme" || msg.Header.Get("To") != "<ana@example.com>" {
		t.Errorf("headers %v subject %q", msg.Header, subj)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p) // multipart decodes quoted-printable
		parts = append(parts, string(b))
	}
	if len(parts) != 2 || parts[0] != "Hello <Ana>\r\n.dot line" || parts[1] != "<p>Hello &lt;Ana&gt;</p>" {
		t.Errorf("parts %q", parts)
	}
	if bytes.Contains(data, []byte("\n")) && bytes.Count(data, []byte("\n")) != bytes.Count(data, []byte("\r\n")) {
		t.Error("bare LF in rendered message")
	}
}

func TestRenderErrors(t *testing.T) {
	tpl := func(t *mailwavev1.Template) *mailwavev1.SendRequest {
		return &mailwavev1.SendRequest{Content: &mailwavev1.SendRequest_Template{Template: t}}
	}
	for name, req := range map[string]*mailwavev1.SendRequest{
		"bad from":      tpl(&mailwavev1.Template{From: "not an address", Text: "x"}),
		"no body":       tpl(&mailwavev1.Template{From: "a@b.example"}),
		"bad template":  tpl(&mailwavev1.Template{From: "a@b.example", Text: "{{.x"}),
		"header inject": tpl(&mailwavev1.Template{From: "a@b.example", Text: "x", Headers: map[string]string{"From": "evil@x"}}),
		"raw no from":   {Content: &mailwavev1.SendRequest_Raw{Raw: []byte("Subject: x\r\n\r\nbody")}},
	} {
		if _, err := prepare(req, flatRoute(t)); !errors.Is(err, errContent) {
			t.Errorf("%s: %v", name, err)
		}
	}
	c, err := prepare(tpl(&mailwavev1.Template{From: "a@b.example", Text: "Hi {{.missing}}"}), flatRoute(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.render(&mailwavev1.Recipient{Address: "x@y.example"}, "x@y.example", "id", time.Now(), personal{}); !errors.Is(err, errContent) {
		t.Errorf("missing variable: %v", err)
	}
}

func TestRawIsUntouched(t *testing.T) {
	raw := []byte("From: a@b.example\r\nMessage-ID: <m1@b.example>\r\n\r\nbody\r\n")
	c, err := prepare(&mailwavev1.SendRequest{Content: &mailwavev1.SendRequest_Raw{Raw: raw}}, flatRoute(t))
	if err != nil {
		t.Fatal(err)
	}
	data, hid, err := c.render(&mailwavev1.Recipient{Address: "x@y.example"}, "x@y.example", "id", time.Now(), personal{})
	if err != nil || !bytes.Equal(data, raw) || hid != "m1@b.example" || c.sendingDomain != "b.example" {
		t.Fatalf("%q %q %v", data, hid, err)
	}
}

// flatRoute is the route of the open default tenancy.
func flatRoute(t *testing.T) *tenancy.Route {
	t.Helper()
	r, err := tenancy.Flat("default", nil, "", tenancy.Unsubscribe{}).Resolve("acme", "shop", "", "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMessageIDIsDeterministic(t *testing.T) {
	a, b := MessageID("k", "Ana@Example.com"), MessageID("k", " ana@example.com")
	if a != b || len(a) != 32 || MessageID("k2", "ana@example.com") == a {
		t.Fatalf("%s %s", a, b)
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		return Config{Common: service.Common{NATSURL: "nats://x:4222", RedisURL: "redis://x:6379/0", HTTPAddr: ":8080",
			LogLevel: "info", Replicas: 1, DrainTimeout: time.Second},
			VERPKeys: []string{"0123456789abcdef"}, Pool: "p", MaxAge: time.Hour, Workers: 1, TxWorkers: 1, EventWorkers: 1,
			WaveInterval: time.Minute, WaveShare: 0.8, Recheck: time.Minute, HoldMax: time.Hour, CampaignTTL: 24 * time.Hour}
	}
	ok := base()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	// A valid tenancy file is accepted.
	withFile := base()
	withFile.Tenancy = writeFile(t, string(tenancy.Example()))
	if err := withFile.Validate(); err != nil {
		t.Fatal(err)
	}
	for want, mut := range map[string]func(*Config){
		"MW_VERP_KEYS":             func(c *Config) { c.VERPKeys = []string{"short"} },
		"MW_POOL":                  func(c *Config) { c.Pool = "a.b" },
		"MW_SOURCE_IPS":            func(c *Config) { c.SourceIPs = []string{"mta1"} },
		"MW_HELO_NAMES":            func(c *Config) { c.SourceIPs = []string{"127.0.0.3"}; c.HeloNames = []string{"a", "b"} },
		"MW_MAX_AGE":               func(c *Config) { c.MaxAge = time.Second },
		"MW_PLANNER_WORKERS":       func(c *Config) { c.Workers = 0 },
		"MW_PLANNER_TX_WORKERS":    func(c *Config) { c.TxWorkers = 0 },
		"MW_PLANNER_EVENT_WORKERS": func(c *Config) { c.EventWorkers = 0 },
		"MW_UNSUBSCRIBE_KEYS":      func(c *Config) { c.UnsubscribeKeys = []string{"short"} },
		"MW_UNSUBSCRIBE_URL":       func(c *Config) { c.UnsubscribeURL = "http://u.example.test" },
		"MW_TENANCY":               func(c *Config) { c.Tenancy = writeFile(t, "tenants: {acme: {}}") },
		"MW_BOUNCE_DOMAIN": func(c *Config) {
			c.Tenancy = writeFile(t, string(tenancy.Example()))
			c.BounceDomain = "bounces.example.test"
		},
		"MW_SHAPING_FILE":    func(c *Config) { c.ShapingFile = writeFile(t, "providers: {google: {messages_per_hour: -1}}") },
		"MW_WAVE_INTERVAL":   func(c *Config) { c.WaveInterval = 100 * time.Millisecond },
		"MW_WAVE_SHARE":      func(c *Config) { c.WaveShare = 1.5 },
		"MW_PLANNER_RECHECK": func(c *Config) { c.Recheck = 0 },
		"MW_HOLD_MAX":        func(c *Config) { c.HoldMax = time.Second },
		"MW_CAMPAIGN_TTL":    func(c *Config) { c.CampaignTTL = time.Minute },
	} {
		c := base()
		mut(&c)
		if err := c.Validate(); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The mirror builds its lookup keys itself, for speed: they must be the
// contract's keys.
func TestSuppressionLookupUsesTheContractsKeys(t *testing.T) {
	s := newSuppressions(nil, nil, nil)
	req := &mailwavev1.SendRequest{Tenant: "ac.me", Brand: "shop", CommunicationType: "weekly digest"}
	for _, tc := range []struct {
		scope  mailwavev1.SuppressionScope
		ct     string
		reason string
	}{
		{mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL, "", "manual"},
		{mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "", "complaint"},
		{mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, "weekly digest", "unsubscribe"},
	} {
		addr := tc.reason + "@Example.com"
		if s.check(req, addr) != nil {
			t.Fatalf("%s suppressed before", addr)
		}
		s.put(mailwavev1.SuppressionKey(tc.scope, "ac.me", "shop", tc.ct, addr), &mailwavev1.Suppression{Reason: tc.reason, Scope: tc.scope})
		got := s.check(req, " "+strings.ToUpper(addr))
		if got == nil || got.reason != tc.reason || got.scope != tc.scope {
			t.Errorf("%v: %+v", tc.scope, got)
		}
	}
}
