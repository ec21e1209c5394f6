package ispsim_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

// complainedAbout sends n messages to google and returns the recipients
// the seeded complaint share picked.
func complainedAbout(t *testing.T, seed int64, n int) []string {
	sim, clk := start(t, nil)
	if err := sim.Provider("google").SetComplaints(ispsim.ComplaintConfig{Rate: 0.3, Seed: seed, Delay: time.Minute, IMAPUser: "fbl@mailwave.test"}); err != nil {
		t.Fatal(err)
	}
	c, err := client(t, sim, "127.0.0.2", "x@gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		to := fmt.Sprintf("u%02d@gmail.com", i)
		if err := transact(c, "b@bounce.mailwave.test", to, msg("news@mailwave.test", to, "rng-"+to, "x")); err != nil {
			t.Fatal(err)
		}
	}
	snap := sim.Ledger().Snapshot()
	var picked []string
	for _, m := range snap.Messages {
		if m.Fates[m.Rcpts[0]] == "complaint" {
			picked = append(picked, m.Rcpts[0])
		}
	}
	clk.Advance(time.Minute)
	if _, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return len(s.ReportsOf("arf")) == len(picked) }); err != nil {
		t.Fatal(err)
	}
	return picked
}

func TestComplaintRateSeeded(t *testing.T) {
	a := complainedAbout(t, 42, 40)
	b := complainedAbout(t, 42, 40)
	if strings.Join(a, ",") != strings.Join(b, ",") {
		t.Errorf("same seed, different picks:\n%v\n%v", a, b)
	}
	if len(a) < 4 || len(a) > 20 {
		t.Errorf("%d of 40 picked at rate 0.3", len(a))
	}
}

func TestAutoBlockAfterComplaintSpike(t *testing.T) {
	sim, clk := start(t, nil)
	g := sim.Provider("google")
	g.SetAutoBlock(ispsim.AutoBlockConfig{Complaints: 2, Window: time.Hour, Duration: time.Hour})
	const from = "b@bounce.mailwave.test"
	for _, to := range []string{"complain-a@gmail.com", "complain-b@gmail.com"} {
		if err := send(t, sim, "127.0.0.3", from, to, msg("news@mailwave.test", to, "cs-"+to, "x")); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(10 * time.Minute)
	if _, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return len(s.ReportsOf("arf")) == 2 }); err != nil {
		t.Fatal(err)
	}
	err := send(t, sim, "127.0.0.3", from, "a@gmail.com", msg("news@mailwave.test", "a@gmail.com", "cs-after", "x"))
	if code(err) != 554 || !strings.Contains(err.Error(), "complaint spike") {
		t.Fatalf("after the spike: %v", err)
	}
	if err := send(t, sim, "127.0.0.2", from, "a@gmail.com", msg("news@mailwave.test", "a@gmail.com", "cs-other", "x")); err != nil {
		t.Fatalf("another source IP: %v", err)
	}
}

func TestNoDSNWhenNotWanted(t *testing.T) {
	sim, clk := start(t, nil)
	inbound, addr := startSink(t)
	if err := sim.SetRoute("*", addr); err != nil {
		t.Fatal(err)
	}
	c, err := client(t, sim, "127.0.0.2", "x@gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// NOTIFY=NEVER (RFC 3461 §4.1) and the null reverse-path (RFC 5321
	// §4.5.5) get no DSN; the third, plain one does.
	if err := c.Mail("b@bounce.mailwave.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("dsn-full-1@gmail.com", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever}}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte(msg("news@mailwave.test", "dsn-full-1@gmail.com", "never", "x")))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := transact(c, "", "dsn-full-2@gmail.com", msg("news@mailwave.test", "dsn-full-2@gmail.com", "null", "x")); err != nil {
		t.Fatal(err)
	}
	if err := transact(c, "b@bounce.mailwave.test", "dsn-full-3@gmail.com", msg("news@mailwave.test", "dsn-full-3@gmail.com", "plain", "x")); err != nil {
		t.Fatal(err)
	}
	if n := clk.Pending(); n != 1 {
		t.Errorf("%d DSNs scheduled, want 1", n)
	}
	clk.Advance(time.Hour)
	got := inbound.next(t, sim)
	if !strings.Contains(string(got.data), "dsn-full-3@gmail.com") {
		t.Errorf("unexpected DSN %q", got.data)
	}
	if _, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return len(s.ReportsOf("dsn")) == 1 }); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerBounded(t *testing.T) {
	sim, _ := start(t, func(p *ispsim.Profile) { p.Ledger.MaxEntries = 5 })
	c, err := client(t, sim, "127.0.0.2", "x@gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := sim.Ledger().Snapshot()
	for i := range 12 {
		to := fmt.Sprintf("b%02d@gmail.com", i)
		if err := transact(c, "b@bounce.mailwave.test", to, msg("news@mailwave.test", to, "bound-"+to, "x")); err != nil {
			t.Fatal(err)
		}
	}
	snap := sim.Ledger().Snapshot()
	if n := len(snap.Messages); n > 5 || n == 0 {
		t.Errorf("%d messages kept, max 5", n)
	}
	if last := snap.Messages[len(snap.Messages)-1]; last.Rcpts[0] != "b11@gmail.com" {
		t.Errorf("newest kept is %v", last.Rcpts)
	}
	if c := snap.Counter("google", ip2); c.Accepted != 12 {
		t.Errorf("counter %d, want 12", c.Accepted)
	}
	if len(before.Messages) != 0 {
		t.Error("an old snapshot changed")
	}
}
