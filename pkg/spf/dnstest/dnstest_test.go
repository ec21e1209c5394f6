package dnstest_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/spf"
	"github.com/mailwave/mailwave/pkg/spf/dnstest"
)

func start(t *testing.T, z *dnstest.Zone) *spf.DNSClient {
	t.Helper()
	srv, err := dnstest.Start(z)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return &spf.DNSClient{Server: srv.Addr(), Timeout: 150 * time.Millisecond}
}

func notFound(err error) bool {
	var d *net.DNSError
	return errors.As(err, &d) && d.IsNotFound
}

func TestZoneAnswers(t *testing.T) {
	z := dnstest.NewZone()
	z.TXT("Mixed.Example.COM.", "hello")
	z.TXT("odd name\\with.example.com", "back\\slash \"quoted\"")
	z.Addr("deep.sub.example.org", netip.MustParseAddr("192.0.2.1"))
	z.Timeout("slow.example.com")
	c := start(t, z)
	ctx := context.Background()

	if txts, err := c.LookupTXT(ctx, "mixed.example.com"); err != nil || len(txts) != 1 || txts[0] != "hello" {
		t.Errorf("case-insensitive name: %q, %v", txts, err)
	}
	if txts, err := c.LookupTXT(ctx, "odd name\\with.example.com"); err != nil || len(txts) != 1 || txts[0] != "back\\slash \"quoted\"" {
		t.Errorf("raw bytes in names and text: %q, %v", txts, err)
	}
	// An empty non-terminal exists: its answer is empty, not NXDOMAIN;
	// the client reports both as not found, as net.Resolver does.
	if _, err := c.LookupTXT(ctx, "sub.example.org"); !notFound(err) {
		t.Errorf("empty non-terminal: %v", err)
	}
	if _, err := c.LookupTXT(ctx, "absent.example.org"); !notFound(err) {
		t.Errorf("absent name: %v", err)
	}
	_, err := c.LookupTXT(ctx, "slow.example.com")
	var d *net.DNSError
	if !errors.As(err, &d) || !d.IsTimeout {
		t.Errorf("timeout name: %v", err)
	}
	z.Delete("mixed.example.com", 16) // TXT
	if _, err := c.LookupTXT(ctx, "mixed.example.com"); !notFound(err) {
		t.Errorf("after Delete: %v", err)
	}
}
