package fblparser_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/config"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

// mailboxesFile writes testdata/mailboxes.yaml with a real password file
// and returns its path.
func mailboxesFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "google-password")
	if err := os.WriteFile(pw, []byte("s3cret-google\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "mailboxes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mailboxes.yaml")
	if err := os.WriteFile(path, bytes.ReplaceAll(b, []byte("PASSWORD_FILE"), []byte(pw)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestConfigLoadsMailboxes(t *testing.T) {
	vars := map[string]string{
		"MW_FBL_MAILBOXES":      mailboxesFile(t),
		"MW_FBL_ADDRESSES":      "fbl@fbl.example.com, FBL.Example.NET",
		"MW_FBL_SMTP_REPORTERS": "yahoo.com,Hotmail.com",
		"MW_VERP_KEYS":          "0123456789abcdef-key",
		"MW_DNS_SERVER":         "127.0.0.1:5353",
		"FBL_YAHOO_PASSWORD":    "s3cret-yahoo",
	}
	cfg := fblparser.Config{Getenv: env(vars)}
	if err := service.LoadConfig("fbl-parser", nil, env(vars), &cfg); err != nil {
		t.Fatal(err)
	}
	boxes := cfg.ResolvedMailboxes()
	if len(boxes) != 2 {
		t.Fatalf("%d mailboxes", len(boxes))
	}
	g, y := boxes[0], boxes[1]
	if g.Addr() != "imap.fbl.example.com:993" || g.Password != "s3cret-google" || g.Processed != "Done" || g.Failed != "Junk" ||
		len(g.Reporters) != 1 || g.Reporters[0] != "google.com" || g.PollOnly {
		t.Errorf("google mailbox %+v", g)
	}
	if y.Addr() != "imap.fbl.example.com:1143" || y.TLS != fblparser.TLSStartTLS || y.Password != "s3cret-yahoo" ||
		y.Folder != "INBOX" || y.Processed != "Processed" || y.Failed != "Failed" || !y.RequireDKIM || !y.PollOnly {
		t.Errorf("yahoo mailbox %+v", y)
	}
	if strings.Join(cfg.Addresses, ",") != "fbl@fbl.example.com,fbl.example.net" || strings.Join(cfg.Reporters, ",") != "yahoo.com,hotmail.com" {
		t.Errorf("addresses %v reporters %v", cfg.Addresses, cfg.Reporters)
	}
	if cfg.SMTPAddr != ":25" || cfg.PollInterval.String() != "5m0s" || cfg.Workers != 4 {
		t.Errorf("defaults: smtp %q poll %v workers %d", cfg.SMTPAddr, cfg.PollInterval, cfg.Workers)
	}

	// Secrets never show: not in the logged configuration, not when a
	// mailbox is printed or logged.
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("configuration", "config", config.Redacted(&cfg), "mailbox", g, "other", y)
	shown := logged.String() + fmt.Sprint(g, y) + fmt.Sprintf("%v %s", config.Redacted(&cfg), g)
	for _, secret := range []string{"s3cret-google", "s3cret-yahoo", "0123456789abcdef-key"} {
		if strings.Contains(shown, secret) {
			t.Errorf("secret %q shown: %s", secret, shown)
		}
	}
	if !strings.Contains(logged.String(), "imap.fbl.example.com") {
		t.Errorf("the mailbox is not described in the log: %s", logged.String())
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	base := map[string]string{
		"MW_FBL_ADDRESSES": "fbl@fbl.example.com",
		"MW_VERP_KEYS":     "0123456789abcdef-key",
	}
	for _, tc := range []struct {
		name string
		set  map[string]string
		want string
	}{
		{"no address", map[string]string{"MW_FBL_ADDRESSES": ""}, "MW_FBL_ADDRESSES"},
		{"bad address", map[string]string{"MW_FBL_ADDRESSES": "not an address"}, "MW_FBL_ADDRESSES"},
		{"no intake at all", map[string]string{"MW_SMTP_ADDR": "off"}, "MW_FBL_MAILBOXES"},
		{"bad listen address", map[string]string{"MW_SMTP_ADDR": "25"}, "MW_SMTP_ADDR"},
		{"bad reporter", map[string]string{"MW_FBL_SMTP_REPORTERS": "yahoo"}, "MW_FBL_SMTP_REPORTERS"},
		{"no verp key", map[string]string{"MW_VERP_KEYS": ""}, "MW_VERP_KEYS"},
		{"short verp key", map[string]string{"MW_VERP_KEYS": "short"}, "MW_VERP_KEYS"},
		{"bad dns server", map[string]string{"MW_DNS_SERVER": "localhost"}, "MW_DNS_SERVER"},
		{"missing mailboxes file", map[string]string{"MW_FBL_MAILBOXES": "/nonexistent/mailboxes.yaml"}, "MW_FBL_MAILBOXES"},
		{"poll too rare for idle", map[string]string{"MW_FBL_POLL_INTERVAL": "45m"}, "MW_FBL_POLL_INTERVAL"},
		{"backoff upside down", map[string]string{"MW_FBL_RECONNECT_MIN": "5m", "MW_FBL_RECONNECT_MAX": "1m"}, "MW_FBL_RECONNECT_MAX"},
		{"lone certificate", map[string]string{"MW_SMTP_TLS_CERT": "/tmp/cert.pem"}, "MW_SMTP_TLS_CERT"},
		{"no workers", map[string]string{"MW_INBOUND_WORKERS": "0"}, "MW_INBOUND_WORKERS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range base {
				vars[k] = v
			}
			for k, v := range tc.set {
				vars[k] = v
			}
			cfg := fblparser.Config{Getenv: env(vars)}
			err := service.LoadConfig("fbl-parser", nil, env(vars), &cfg)
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestParseMailboxesErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "mailboxes:\n  - name: a\n    host: h\n    usrname: u\n", "usrname"},
		{"no name", "mailboxes:\n  - host: h\n    username: u\n    password_env: P\n", "name"},
		{"name with a dot", "mailboxes:\n  - name: a.b\n    host: h\n    username: u\n    password_env: P\n", "name"},
		{"no host", "mailboxes:\n  - name: a\n    username: u\n    password_env: P\n", "host"},
		{"bad tls", "mailboxes:\n  - name: a\n    host: h\n    tls: maybe\n    username: u\n    password_env: P\n", "tls"},
		{"bad port", "mailboxes:\n  - name: a\n    host: h\n    port: 70000\n    username: u\n    password_env: P\n", "port"},
		{"no username", "mailboxes:\n  - name: a\n    host: h\n    password_env: P\n", "username"},
		{"no password", "mailboxes:\n  - name: a\n    host: h\n    username: u\n", "password"},
		{"empty password variable", "mailboxes:\n  - name: a\n    host: h\n    username: u\n    password_env: EMPTY\n", "password"},
		{"unreadable password file", "mailboxes:\n  - name: a\n    host: h\n    username: u\n    password_file: /nonexistent\n", "password_file"},
		{"processed is the folder", "mailboxes:\n  - name: a\n    host: h\n    username: u\n    password_env: P\n    processed: INBOX\n", "processed"},
		{"bad reporter", "mailboxes:\n  - name: a\n    host: h\n    username: u\n    password_env: P\n    reporters: [google]\n", "reporter"},
		{"dkim without reporters", "mailboxes:\n  - name: a\n    host: h\n    username: u\n    password_env: P\n    require_dkim: true\n", "require_dkim"},
		{"twice the same name", "mailboxes:\n  - {name: a, host: h, username: u, password_env: P}\n  - {name: a, host: h, username: u, password_env: P}\n", "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fblparser.ParseMailboxes([]byte(tc.yaml), env(map[string]string{"P": "pw"}))
			if !errors.Is(err, fblparser.ErrMailbox) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrMailbox mentioning %q", err, tc.want)
			}
		})
	}
}

func TestReceiverPolicy(t *testing.T) {
	p := fblparser.ReceiverPolicy([]string{"fbl@fbl.example.com", "arf.example.net"})
	for _, tc := range []struct {
		rcpt string
		want error
	}{
		{"fbl@fbl.example.com", nil},
		{"FBL@FBL.Example.com", nil},
		{"postmaster@fbl.example.com", nil},
		{"anything@arf.example.net", nil},
		{"other@fbl.example.com", errUnknown},
		{"someone@elsewhere.example", errRelay},
	} {
		_, err := p.Recipient(tc.rcpt)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v, want accepted", tc.rcpt, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: %v, want %v", tc.rcpt, err, tc.want)
		}
	}
}

var (
	errUnknown = inbound.ErrUnknownRecipient
	errRelay   = inbound.ErrRelayDenied
)
