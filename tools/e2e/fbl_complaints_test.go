package e2e_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/dkim"
	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
	"github.com/mailwave/mailwave/tools/stack"
)

// The simulator's feedback mailbox in its default profile.
const (
	simFBLUser     = "fbl@mailwave.test"
	simFBLPassword = "fbl-secret"
)

// startFBL starts the simulator on clock and the platform, with fbl-parser
// reading the simulator's IMAP mailbox (trusting Google's reports there)
// and taking SMTP reports for stack.DefaultFBLAddress (trusting Yahoo's,
// when DKIM-signed). The simulator's providers do not sign what they
// send, so their SMTP complaints go through signer, a relay that signs
// Yahoo's reports with a key published in the simulator's DNS — as
// Yahoo's outbound MTAs do — and passes the others on as they are.
func startFBL(t *testing.T, clock ispsim.Clock) *env {
	t.Helper()
	ctx := testenv.Context(t)
	prof, err := ispsim.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := ispsim.Start(ctx, prof, ispsim.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	host, port, _ := net.SplitHostPort(sim.IMAPAddr())
	imapPort, _ := strconv.Atoi(port)
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	st, err := stack.Start(ctx, stack.Options{
		DataDir: t.TempDir(), RedisURL: os.Getenv("MW_TEST_REDIS_URL"),
		DNSServer: sim.DNSAddr(), SMTPPort: sim.SMTPPort(),
		SourceIPs: []string{"127.0.0.3"}, HeloNames: []string{"mta2.mailwave.test"},
		Logger: logger,
		FeedbackMailboxes: []fblparser.Mailbox{{Name: "ispsim", Host: host, Port: imapPort, TLS: fblparser.TLSNone,
			Username: simFBLUser, Password: simFBLPassword, Trusted: true, Reporters: []string{"google.com"}}},
		TuneFBL: func(c *fblparser.Config) { c.Reporters = []string{"yahoo.com"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stack stop: %v", err)
		}
	})
	relay := startSigningRelay(t, sim, "yahoo.com", st.FBL)
	if err := sim.SetRoute(stack.DefaultBounceDomain, st.InboundDSN); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetRoute("mailwave.test", relay); err != nil {
		t.Fatal(err)
	}
	nc := testenv.ConnectURL(t, st.NATSURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, st: st, nc: nc, js: js, cl: cl}
}

// startSigningRelay runs an SMTP server that DKIM-signs the mail whose
// From is in domain (with a key it publishes in the simulator's DNS) and
// forwards everything to next, answering with next's answer.
func startSigningRelay(t *testing.T, sim *ispsim.Sim, domain, next string) string {
	t.Helper()
	key, err := dkim.GenerateEd25519(domain, "fbl2026")
	if err != nil {
		t.Fatal(err)
	}
	sim.DNS().SetTXT(key.RecordName(), key.TXT()...)
	signer, err := dkim.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(relayBackend{domain: domain, signer: signer, next: next})
	srv.Domain = "relay." + domain
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

type relayBackend struct {
	domain string
	signer *dkim.Signer
	next   string
}

func (b relayBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &signingRelaySession{b: b}, nil
}

type signingRelaySession struct {
	b    relayBackend
	from string
	to   []string
}

func (s *signingRelaySession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *signingRelaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *signingRelaySession) Reset()        { s.from, s.to = "", nil }
func (s *signingRelaySession) Logout() error { return nil }

var fromDomain = regexp.MustCompile(`(?mi)^From:[^\r\n]*@([a-z0-9.-]+)>?\s*$`)

func (s *signingRelaySession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	hdr := raw
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		hdr = raw[:i+2]
	}
	if m := fromDomain.FindSubmatch(hdr); m != nil {
		d := strings.ToLower(string(m[1]))
		if d == s.b.domain || strings.HasSuffix(d, "."+s.b.domain) {
			if raw, err = s.b.signer.Sign(s.b.domain, nil, raw); err != nil {
				return err
			}
		}
	}
	c, err := smtp.Dial(s.b.next)
	if err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: err.Error()}
	}
	defer c.Close()
	if err := c.Hello("relay." + s.b.domain); err != nil {
		return err
	}
	if err := c.Mail(s.from, nil); err != nil {
		return err
	}
	for _, to := range s.to {
		if err := c.Rcpt(to, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(raw); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// complaintReports returns every ComplaintReport published for tenant.
func (e *env) complaintReports(t *testing.T, tenant string) []*mailwavev1.ComplaintReport {
	t.Helper()
	return fetchAll(t, e.js, mailwavev1.StreamReports, mailwavev1.SubjectComplaintReport(tenant), func() *mailwavev1.ComplaintReport { return &mailwavev1.ComplaintReport{} })
}

// complaintEvents returns every complained event published for tenant.
func (e *env) complaintEvents(t *testing.T, tenant string) []*mailwavev1.DeliveryEvent {
	t.Helper()
	return fetchAll(t, e.js, mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_COMPLAINED, tenant), func() *mailwavev1.DeliveryEvent { return &mailwavev1.DeliveryEvent{} })
}

func fetchAll[T proto.Message](t *testing.T, js jetstream.JetStream, stream, subject string, newT func() T) []T {
	t.Helper()
	ctx := testenv.Context(t)
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			v := newT()
			if err := proto.Unmarshal(m.Data(), v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		if n == 0 {
			return out
		}
	}
}

func (e *env) brandSuppression(t *testing.T, tenant, brand, rcpt string) *mailwavev1.Suppression {
	t.Helper()
	ctx := testenv.Context(t)
	kv, err := e.js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, tenant, brand, "", rcpt))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var s mailwavev1.Suppression
	if err := proto.Unmarshal(entry.Value(), &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// simFolder counts the messages in a folder of the simulator's feedback
// mailbox, over IMAP.
func simFolder(t *testing.T, sim *ispsim.Sim, folder string) int {
	t.Helper()
	c, err := imapclient.DialInsecure(sim.IMAPAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(simFBLUser, simFBLPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(folder, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return int(*st.NumMessages)
}

var fblReports = regexp.MustCompile(`(?m)^mailwave_fbl_reports_total\{result="duplicate",source="imap"\} (\S+)`)

// TestFBLComplaintsSuppressBrandWide follows complaints from the
// simulator's providers — Google's into the IMAP feedback mailbox, Yahoo's
// DKIM-signed by SMTP, Microsoft's by SMTP from a source nobody
// configured — to their effects, then sends again from another mail
// stream of the same brand.
func TestFBLComplaintsSuppressBrandWide(t *testing.T) {
	clock := ispsim.NewFakeClock(time.Now())
	e := startFBL(t, clock)
	ctx := testenv.Context(t)
	const (
		viaIMAP   = "complain-ann@gmail.com"   // Google: IMAP mailbox, trusted
		viaSMTP   = "complain-bob@yahoo.com"   // Yahoo: SMTP, signed, trusted
		untrusted = "complain-cat@outlook.com" // Microsoft: SMTP from hotmail.com, not configured
	)
	send := func(key, stream, ctype string, prio mailwavev1.Priority) map[string]*mailwavev1.DeliveryEvent {
		t.Helper()
		req := &mailwavev1.SendRequest{
			IdempotencyKey: key, Tenant: "acme", Brand: "shop", MailStream: stream, CommunicationType: ctype,
			CampaignId: "autumn", Priority: prio,
			Recipients: []*mailwavev1.Recipient{{Address: viaIMAP}, {Address: viaSMTP}, {Address: untrusted}},
			Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
				From: "Shop <news@mailwave.test>", Subject: "Autumn offers", Text: "Everything must go."}},
		}
		if _, err := e.cl.Send(ctx, req); err != nil {
			t.Fatal(err)
		}
		return e.terminal(t, "acme", key, 3)
	}
	for rcpt, ev := range send("fbl-news-1", "newsletter", "offers", mailwavev1.Priority_PRIORITY_BULK) {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
			t.Fatalf("%s: %v %s", rcpt, ev.GetKind(), ev.GetResponse())
		}
	}
	// The providers report the complaints once their delays (10 to 30
	// minutes on the simulator's clock) have passed.
	clock.Advance(31 * time.Minute)
	if _, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool {
		n := 0
		for _, r := range s.ReportsOf("arf") {
			if r.Delivered() {
				n++
			}
		}
		return n == 3
	}); err != nil {
		t.Fatal(err)
	}
	// Google's report a second time (same report, new envelope): it must
	// count once.
	annMsg := e.sim.Ledger().Snapshot().To(viaIMAP)
	if len(annMsg) != 1 {
		t.Fatalf("%d messages to %s", len(annMsg), viaIMAP)
	}
	if err := e.sim.Complain(annMsg[0].MessageID, viaIMAP); err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, 30*time.Second, func() bool {
		var quarantined bool
		for _, r := range e.complaintReports(t, "acme") {
			quarantined = quarantined || !r.GetTrusted() && r.GetCorrelation().GetRecipient() == untrusted
		}
		return quarantined && e.brandSuppression(t, "acme", "shop", viaIMAP) != nil &&
			e.brandSuppression(t, "acme", "shop", viaSMTP) != nil &&
			e.metric(t, "fbl-parser", fblReports) == 1
	}, "the complaints were not all handled")

	perRcpt := map[string]int{}
	for _, ev := range e.complaintEvents(t, "acme") {
		perRcpt[ev.GetRecipient()]++
		if ev.GetBrand() != "shop" || ev.GetCampaignId() != "autumn" || ev.GetOrigin() != mailwavev1.Origin_ORIGIN_FBL ||
			ev.GetSourceIp() != "127.0.0.3" || ev.GetMailStream() != "newsletter" {
			t.Errorf("complaint event %v", ev)
		}
	}
	if perRcpt[viaIMAP] != 1 || perRcpt[viaSMTP] != 1 || perRcpt[untrusted] != 0 || len(perRcpt) != 2 {
		t.Errorf("complaint events per recipient %v, want one each for %s and %s only", perRcpt, viaIMAP, viaSMTP)
	}
	for _, rcpt := range []string{viaIMAP, viaSMTP} {
		s := e.brandSuppression(t, "acme", "shop", rcpt)
		if s.GetReason() != "complaint" || s.GetOrigin() != mailwavev1.Origin_ORIGIN_FBL {
			t.Errorf("%s: suppression %v", rcpt, s)
		}
	}
	if s := e.brandSuppression(t, "acme", "shop", untrusted); s != nil {
		t.Errorf("an unconfigured source suppressed %s: %v", untrusted, s)
	}
	// Both copies of Google's report left the inbox for Processed.
	if in, done := simFolder(t, e.sim, "INBOX"), simFolder(t, e.sim, "Processed"); in != 0 || done != 2 {
		t.Errorf("simulator mailbox: INBOX %d, Processed %d; want 0, 2", in, done)
	}

	// The next send from another stream and communication type of the
	// brand: the complainers are suppressed, the other recipient is not.
	// A transactional request names one recipient: one request each.
	evs := map[string]*mailwavev1.DeliveryEvent{}
	for i, rcpt := range []string{viaIMAP, viaSMTP, untrusted} {
		key := fmt.Sprintf("fbl-receipt-%d", i)
		if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{
			IdempotencyKey: key, Tenant: "acme", Brand: "shop", MailStream: "transactional", CommunicationType: "receipts",
			Priority:   mailwavev1.Priority_PRIORITY_TRANSACTIONAL,
			Recipients: []*mailwavev1.Recipient{{Address: rcpt}},
			Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
				From: "Shop <receipts@mailwave.test>", Subject: "Your receipt", Text: "Thank you."}},
		}); err != nil {
			t.Fatal(err)
		}
		for r, ev := range e.terminal(t, "acme", key, 1) {
			evs[r] = ev
		}
	}
	for _, rcpt := range []string{viaIMAP, viaSMTP} {
		if ev := evs[rcpt]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_SUPPRESSED || ev.GetReason() != "complaint" {
			t.Errorf("%s on the transactional stream: %v %q, want suppressed (complaint)", rcpt, ev.GetKind(), ev.GetReason())
		}
	}
	if ev := evs[untrusted]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Errorf("%s: %v, want delivered (its complaint came from an unconfigured source)", untrusted, ev.GetKind())
	}
	snap := e.sim.Ledger().Snapshot()
	if n := len(snap.To(viaIMAP)) + len(snap.To(viaSMTP)); n != 2 {
		t.Errorf("the complainers received %d messages, want only the 2 of the first send", n)
	}
}
