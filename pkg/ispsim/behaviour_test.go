package ispsim_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/mailwave/mailwave/pkg/ispsim"
)

func TestRateLimitPerSourceIP(t *testing.T) {
	sim, clk := start(t, nil)
	sim.Provider("google").SetRate(3, time.Minute)
	const from, to = "news@mailwave.test", "alice@gmail.com"

	c, err := client(t, sim, "127.0.0.2", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		if err := transact(c, from, to, msg(from, to, "r"+string(rune('a'+i)), "x")); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	err = c.Mail(from, nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 421 || enh(se) != "4.7.28" || !strings.Contains(se.Message, "unusual rate") {
		t.Fatalf("4th MAIL: %v, want Gmail's 421-4.7.28", err)
	}
	// 421 closes the session (RFC 5321 §3.8).
	if err := c.Noop(); err == nil {
		t.Error("session still open after 421")
	}

	// Another source IP has its own budget.
	if err := send(t, sim, "127.0.0.3", from, to, msg(from, to, "other-ip", "x")); err != nil {
		t.Fatalf("127.0.0.3: %v", err)
	}
	// Still limited within the window...
	clk.Advance(59 * time.Second)
	if err := send(t, sim, "127.0.0.2", from, to, msg(from, to, "early", "x")); code(err) != 421 {
		t.Fatalf("within the window: %v", err)
	}
	// ...and accepted once it has passed.
	clk.Advance(time.Second)
	if err := send(t, sim, "127.0.0.2", from, to, msg(from, to, "after", "x")); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	snap := sim.Ledger().Snapshot()
	if n := len(snap.RejectionsFor("google", ip2, "rate")); n != 2 {
		t.Errorf("rate rejections %d", n)
	}
	if got := snap.MaxInWindow("google", ip2, time.Minute); got != 3 {
		t.Errorf("max per minute %d, want 3", got)
	}
	if c := snap.Counter("google", ip2); c.Accepted != 4 || c.Deferred != 2 {
		t.Errorf("counter %+v", c)
	}
}

func TestRateReplyStyles(t *testing.T) {
	tests := []struct {
		provider, to string
		code         int
		text         string
	}{
		{"yahoo", "a@yahoo.com", 421, "[TSS04] Messages from 127.0.0.2 temporarily deferred"},
		{"microsoft", "a@outlook.com", 451, "4.7.500 Server busy"},
	}
	sim, _ := start(t, nil)
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			sim.Provider(tt.provider).SetRate(1, time.Hour)
			const from = "news@mailwave.test"
			if err := send(t, sim, "127.0.0.2", from, tt.to, msg(from, tt.to, "s1"+tt.provider, "x")); err != nil {
				t.Fatal(err)
			}
			err := send(t, sim, "127.0.0.2", from, tt.to, msg(from, tt.to, "s2"+tt.provider, "x"))
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != tt.code || !strings.Contains(enh(se)+" "+se.Message, tt.text) {
				t.Fatalf("got %v, want %d %s", err, tt.code, tt.text)
			}
		})
	}
}

func TestGreylisting(t *testing.T) {
	sim, clk := start(t, nil) // the corporate provider greylists every triplet
	const from, to = "news@mailwave.test", "erin@globex.example"
	data := msg(from, to, "grey-1", "x")

	err := send(t, sim, "127.0.0.2", from, to, data)
	if code(err) != 450 || !strings.Contains(err.Error(), "Greylisted") {
		t.Fatalf("first attempt: %v", err)
	}
	clk.Advance(time.Minute)
	if err := send(t, sim, "127.0.0.2", from, to, data); code(err) != 450 {
		t.Fatalf("retry before the delay: %v", err)
	}
	clk.Advance(5 * time.Minute)
	if err := send(t, sim, "127.0.0.2", from, to, data); err != nil {
		t.Fatalf("retry after the delay: %v", err)
	}
	// The triplet includes the source IP: another IP starts over.
	if err := send(t, sim, "127.0.0.3", from, to, data); code(err) != 450 {
		t.Fatalf("other source IP: %v", err)
	}
	// A passed triplet stays whitelisted.
	clk.Advance(24 * time.Hour)
	if err := send(t, sim, "127.0.0.2", from, to, data); err != nil {
		t.Fatalf("whitelisted triplet: %v", err)
	}
	snap := sim.Ledger().Snapshot()
	if got, want := len(snap.RejectionsFor("corporate", ip2, "greylist")), 2; got != want {
		t.Errorf("greylist deferrals %d, want %d", got, want)
	}
	if n := snap.Delivered("grey-1", to); n != 2 {
		t.Errorf("delivered %d", n)
	}
}

func TestGreylistWindowExpires(t *testing.T) {
	sim, clk := start(t, nil)
	const from, to = "news@mailwave.test", "grey-bob@gmail.com" // the grey* rule of google
	data := msg(from, to, "grey-2", "x")
	if err := send(t, sim, "127.0.0.2", from, to, data); code(err) != 451 {
		t.Fatalf("first: %v", err)
	}
	clk.Advance(5 * time.Hour) // past the 4h window: treated as a first attempt
	if err := send(t, sim, "127.0.0.2", from, to, data); code(err) != 451 {
		t.Fatalf("after the window: %v", err)
	}
	clk.Advance(6 * time.Minute)
	if err := send(t, sim, "127.0.0.2", from, to, data); err != nil {
		t.Fatalf("proper retry: %v", err)
	}
}

func TestBlockedSourceIP(t *testing.T) {
	sim, clk := start(t, nil)
	const from, to = "news@mailwave.test", "carol@yahoo.com"
	sim.Provider("yahoo").BlockFor(ip2, time.Hour, "complaint spike")

	err := send(t, sim, "127.0.0.2", from, to, msg(from, to, "b1", "x"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "127.0.0.2") {
		t.Fatalf("blocked IP: %v", err)
	}
	if err := send(t, sim, "127.0.0.3", from, to, msg(from, to, "b2", "x")); err != nil {
		t.Fatalf("other IP of the same sender: %v", err)
	}
	clk.Advance(time.Hour)
	if err := send(t, sim, "127.0.0.2", from, to, msg(from, to, "b3", "x")); err != nil {
		t.Fatalf("after the block: %v", err)
	}
	r := sim.Ledger().Snapshot().RejectionsFor("yahoo", ip2, "blocked")
	if len(r) != 1 || r[0].Code != 554 || r[0].Enhanced != "5.7.1" || r[0].Stage != "mail" {
		t.Errorf("rejections %+v", r)
	}
}

func TestDNSBLListing(t *testing.T) {
	sim, _ := start(t, nil)
	const from, to = "news@mailwave.test", "erin@globex.example"
	if err := sim.Provider("corporate").SetGreylist(ispsim.GreylistConfig{Delay: time.Minute, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := sim.DNS().ListIP("b.barracudacentral.org", ip3, ""); err != nil {
		t.Fatal(err)
	}
	err := send(t, sim, "127.0.0.3", from, to, msg(from, to, "l1", "x"))
	if code(err) != 554 || !strings.Contains(err.Error(), "blocked using b.barracudacentral.org") {
		t.Fatalf("listed IP: %v", err)
	}
	// "Query refused" answers are not listings.
	if err := sim.DNS().SetRefused("b.barracudacentral.org", "127.255.255.254"); err != nil {
		t.Fatal(err)
	}
	if err := send(t, sim, "127.0.0.3", from, to, msg(from, to, "l2", "x")); err != nil {
		t.Fatalf("refused zone: %v", err)
	}
	if err := sim.DNS().SetRefused("b.barracudacentral.org", ""); err != nil {
		t.Fatal(err)
	}
	if err := sim.DNS().Delist("b.barracudacentral.org", "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	if err := send(t, sim, "127.0.0.3", from, to, msg(from, to, "l3", "x")); err != nil {
		t.Fatalf("delisted: %v", err)
	}
}

func TestAutoBlockAfterBounceSpike(t *testing.T) {
	sim, clk := start(t, nil)
	g := sim.Provider("google")
	g.SetAutoBlock(ispsim.AutoBlockConfig{Bounces: 3, Window: time.Hour, Duration: 2 * time.Hour, ListIn: "zen.spamhaus.org"})
	g.SetDNSBL() // consult no list, so the expiry of the block shows
	const from = "news@mailwave.test"
	c, err := client(t, sim, "127.0.0.2", "x@gmail.com")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"unknown1@gmail.com", "unknown2@gmail.com", "full3@gmail.com"} {
		if err := c.Rcpt(rcpt, nil); code(err) != 550 && code(err) != 552 {
			t.Fatalf("rcpt %s: %v", rcpt, err)
		}
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); code(err) != 554 || !strings.Contains(err.Error(), "bounce spike") {
		t.Fatalf("after the spike: %v", err)
	}
	if _, ok := sim.DNS().Listed("zen.spamhaus.org", ip2); !ok {
		t.Error("spike not listed in zen.spamhaus.org")
	}
	clk.Advance(2 * time.Hour)
	if blocked, _ := g.Blocked(ip2); blocked {
		t.Error("block did not expire")
	}
}

func TestConnectionCap(t *testing.T) {
	sim, _ := start(t, nil) // corporate: 2 connections per source IP
	var open []*smtp.Client
	for range 2 {
		c, err := client(t, sim, "127.0.0.2", "x@globex.example")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if _, err := client(t, sim, "127.0.0.2", "x@globex.example"); code(err) != 421 {
		t.Fatalf("3rd connection: %v", err)
	}
	c, err := client(t, sim, "127.0.0.3", "x@globex.example")
	if err != nil {
		t.Fatalf("other source IP: %v", err)
	}
	c.Close()
	open[0].Quit()
	// The slot is free once the server has seen the close.
	if _, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return s.Counter("corporate", ip2).Active == 1 }); err != nil {
		t.Fatal(err)
	}
	c, err = client(t, sim, "127.0.0.2", "x@globex.example")
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	c.Close()
	open[1].Close()
}

func TestMessagesPerConnection(t *testing.T) {
	sim, _ := start(t, nil)
	sim.Provider("yahoo").SetMaxMessagesPerConnection(2)
	const from, to = "news@mailwave.test", "a@yahoo.com"
	c, err := client(t, sim, "127.0.0.2", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 2 {
		if err := transact(c, from, to, msg(from, to, "pc"+string(rune('0'+i)), "x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Mail(from, nil); code(err) != 421 || !strings.Contains(err.Error(), "Max message per connection") {
		t.Fatalf("3rd message: %v", err)
	}
}

func TestOutages(t *testing.T) {
	sim, _ := start(t, nil)
	ms := sim.Provider("microsoft")
	const to = "a@outlook.com"

	ms.SetOutage(ispsim.OutageGreeting)
	if _, err := client(t, sim, "127.0.0.2", to); code(err) != 421 {
		t.Errorf("greeting outage: %v", err)
	}

	ms.SetOutage(ispsim.OutageTempFail)
	c, err := client(t, sim, "127.0.0.2", to)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("news@mailwave.test", nil); code(err)/100 != 4 {
		t.Errorf("tempfail outage: %v", err)
	}
	c.Close()

	ms.SetOutage(ispsim.OutageReset)
	if _, err := client(t, sim, "127.0.0.2", to); err == nil {
		t.Error("reset outage: session opened")
	}

	ms.SetOutage(ispsim.OutageSilent)
	nc, err := net.Dial("tcp", mxAddr(t, sim, to))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	if _, err := nc.Read(b[:]); !errors.Is(err, timeoutErr(err)) {
		t.Errorf("silent server said something: %v", err)
	}

	ms.SetOutage(ispsim.OutageNone)
	if err := send(t, sim, "127.0.0.2", "news@mailwave.test", to, msg("news@mailwave.test", to, "o1", "x")); err != nil {
		t.Errorf("after the outage: %v", err)
	}
}

// timeoutErr returns err when it is a timeout, so errors.Is passes only
// for timeouts.
func timeoutErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

func TestSlowServer(t *testing.T) {
	sim, _ := start(t, nil)
	sim.Provider("longtail").SetSlow(ispsim.SlowConfig{Command: 150 * time.Millisecond})
	c, err := client(t, sim, "127.0.0.2", "a@bakery.example")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	if err := c.Mail("news@mailwave.test", nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Errorf("MAIL answered in %v", d)
	}
}

func TestRecipientRules(t *testing.T) {
	sim, _ := start(t, nil)
	const from = "news@mailwave.test"
	tests := []struct {
		to       string
		code     int
		enhanced string
	}{
		{"unknown-x@gmail.com", 550, "5.1.1"},
		{"full-x@gmail.com", 552, "5.2.2"},
		{"defer-x@gmail.com", 450, "4.2.1"},
		{"reject-x@gmail.com", 550, "5.7.1"},
		{"unknown-y@hotmail.com", 550, "5.5.0"},
		{"someone@gmail.com", 250, ""},
	}
	for _, tt := range tests {
		t.Run(tt.to, func(t *testing.T) {
			err := send(t, sim, "127.0.0.2", from, tt.to, msg(from, tt.to, "rr-"+tt.to, "x"))
			if tt.code == 250 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != tt.code || enh(se) != tt.enhanced {
				t.Fatalf("got %v, want %d %s", err, tt.code, tt.enhanced)
			}
		})
	}
	// Rules change at run time.
	if err := sim.Provider("google").AddRule(ispsim.RecipientRule{Match: "vip@gmail.com", Action: ispsim.ActionFull}); err != nil {
		t.Fatal(err)
	}
	if err := send(t, sim, "127.0.0.2", from, "vip@gmail.com", msg(from, "vip@gmail.com", "vip", "x")); code(err) != 552 {
		t.Fatalf("run-time rule: %v", err)
	}
}

func TestStartTLS(t *testing.T) {
	sim, _ := start(t, nil)
	const from, to = "news@mailwave.test", "alice@gmail.com"
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	nc, err := d.Dial("tcp", mxAddr(t, sim, to))
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(nc, &tls.Config{InsecureSkipVerify: true, ServerName: "gmail-smtp-in.l.google.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := transact(c, from, to, msg(from, to, "tls-1", "x")); err != nil {
		t.Fatal(err)
	}
	snap, err := sim.Ledger().Wait(ctxT(t), func(s *ispsim.Snapshot) bool { return s.Delivered("tls-1", "") == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if !snap.MessagesWithID("tls-1")[0].TLS {
		t.Error("TLS not recorded")
	}
	// The corporate server offers no STARTTLS.
	c2, err := client(t, sim, "127.0.0.2", "x@globex.example")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if ok, _ := c2.Extension("STARTTLS"); ok {
		t.Error("corporate offers STARTTLS")
	}
}

// sink is a test SMTP server that keeps what it receives.
type sink struct {
	ch chan sinkMsg
}

type sinkMsg struct {
	from, to string
	data     []byte
}

func (k *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{k: k}, nil }

type sinkSession struct {
	k        *sink
	from, to string
}

func (s *sinkSession) Reset()        {}
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.k.ch <- sinkMsg{s.from, s.to, b}
	return nil
}

// startSink runs a sink on 127.0.0.1:0 and returns its address.
func startSink(t *testing.T) (*sink, string) {
	t.Helper()
	k := &sink{ch: make(chan sinkMsg, 16)}
	srv := smtp.NewServer(k)
	srv.Domain = "inbound.mailwave.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return k, l.Addr().String()
}

// next returns the next message the sink receives; on a time-out it
// fails the test, showing the simulator's reports.
func (k *sink) next(t *testing.T, sim *ispsim.Sim) sinkMsg {
	t.Helper()
	select {
	case m := <-k.ch:
		return m
	case <-ctxT(t).Done():
		for _, r := range sim.Ledger().Snapshot().Reports {
			t.Logf("report %+v", *r)
		}
		t.Fatal("nothing received")
		return sinkMsg{}
	}
}

// reportParts splits a multipart/report into its parts, checking the
// report type.
func reportParts(t *testing.T, data []byte, reportType string) map[string][]byte {
	t.Helper()
	e, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	ct, params, err := e.Header.ContentType()
	if err != nil || ct != "multipart/report" || params["report-type"] != reportType {
		t.Fatalf("content type %s %v %v", ct, params, err)
	}
	mr := e.MultipartReader()
	parts := map[string][]byte{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pct, _, _ := p.Header.ContentType()
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		parts[pct] = b
	}
	return parts
}

// fields parses "Key: value" blocks (RFC 3464 and RFC 5965 fields).
func fields(t *testing.T, b []byte) []textproto.Header {
	t.Helper()
	var out []textproto.Header
	for _, block := range bytes.Split(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n\n")) {
		if len(bytes.TrimSpace(block)) == 0 {
			continue
		}
		h, err := textproto.ReadHeader(bufioReader(append(block, '\n', '\n')))
		if err != nil {
			t.Fatalf("fields %q: %v", block, err)
		}
		out = append(out, h)
	}
	return out
}

func enh(se *smtp.SMTPError) string {
	c := se.EnhancedCode
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}
