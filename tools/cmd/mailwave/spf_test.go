package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/spf/dnstest"
)

func TestSPFCommand(t *testing.T) {
	z := dnstest.NewZone()
	z.TXT("example.com", "v=spf1 ip4:192.0.2.0/24 ~all exp=why.example.com")
	z.TXT("strict.example.com", "v=spf1 ip4:192.0.2.1 -all exp=why.example.com")
	z.TXT("why.example.com", "%{i} is not a sender of %{d}")
	z.TXT("broken.example.com", "v=spf1 ip4:192.0.2.1 -all trailing-garbage")
	z.TXT("mail.example.com", "v=spf1 a -all")
	z.Addr("mail.example.com", netip.MustParseAddr("198.51.100.5"))
	z.Timeout("slow.example.com")
	srv, err := dnstest.Start(z)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	tests := []struct {
		name   string
		args   []string
		want   string
		stderr string
	}{
		{"pass", []string{"--ip", "192.0.2.7", "--sender", "a@example.com"}, "pass", "matched ip4:192.0.2.0/24"},
		{"softfail", []string{"--ip", "203.0.113.1", "--sender", "a@example.com"}, "softfail", "matched ~all"},
		{"fail with explanation", []string{"--ip", "203.0.113.1", "--sender", "a@strict.example.com"}, "fail",
			"explanation: 203.0.113.1 is not a sender of strict.example.com"},
		{"syntax error after the match", []string{"--ip", "192.0.2.1", "--sender", "a@broken.example.com"}, "permerror", "syntax error"},
		{"none", []string{"--ip", "192.0.2.1", "--sender", "a@nothing.example.com"}, "none", ""},
		{"helo identity", []string{"--ip", "198.51.100.5", "--helo", "mail.example.com"}, "pass", "matched a"},
		{"empty sender uses helo", []string{"--ip", "198.51.100.6", "--sender", "", "--helo", "mail.example.com"}, "fail", ""},
		{"timeout", []string{"--ip", "192.0.2.1", "--sender", "a@slow.example.com", "--timeout", "150ms"}, "temperror", "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"spf", "--dns", srv.Addr()}, tt.args...)
			if err := run(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("run: %v", err)
			}
			if got := stdout.String(); got != tt.want+"\n" {
				t.Errorf("stdout %q, want %q", got, tt.want+"\n")
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.stderr)
			}
		})
	}
}

func TestSPFCommandArguments(t *testing.T) {
	for name, args := range map[string][]string{
		"no ip":       {"spf", "--sender", "a@example.com"},
		"bad ip":      {"spf", "--ip", "1.2.3", "--sender", "a@example.com"},
		"no identity": {"spf", "--ip", "192.0.2.1"},
		"extra":       {"spf", "--ip", "192.0.2.1", "--sender", "a@example.com", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("%s: run(%q) succeeded", name, args)
		}
		if stdout.Len() != 0 {
			t.Errorf("%s: printed %q", name, stdout.String())
		}
	}
}
