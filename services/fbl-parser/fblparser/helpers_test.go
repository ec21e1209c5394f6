package fblparser_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/miekg/dns"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/dkim"
	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/testenv"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
)

// testVERPKey is the planner's key in these tests.
const testVERPKey = "test-verp-key-0123456789"

// platform is what the processor works against: a real NATS server with
// the contract's topology and a real Redis.
type platform struct {
	natsURL  string
	redisURL string
	js       jetstream.JetStream
	pub      *events.Publisher
	rdb      *redis.Client
	messages jetstream.KeyValue
	supp     jetstream.KeyValue
	signer   *verp.Signer
}

func newPlatform(t *testing.T) *platform {
	t.Helper()
	ctx := testenv.Context(t)
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	rdb, rurl := testenv.Redis(t)
	messages, err := js.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		t.Fatal(err)
	}
	supp, err := js.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := verp.NewSigner([]byte(testVERPKey))
	if err != nil {
		t.Fatal(err)
	}
	return &platform{natsURL: ns.ClientURL(), redisURL: rurl, js: js, pub: events.NewPublisher(js), rdb: rdb,
		messages: messages, supp: supp, signer: signer}
}

// sent is a message the platform sent, as the planner records it.
type sent struct {
	rec        *mailwavev1.MessageRecord
	returnPath string
}

// send records a message to rcpt as the planner would: a MessageRecord in
// the messages bucket, a signed VERP return path and our Message-ID.
func (p *platform) send(t *testing.T, rcpt, stream, campaign string) sent {
	t.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	rp, err := p.signer.Address(id, rcpt, "bounces.shop.example")
	if err != nil {
		t.Fatal(err)
	}
	rec := &mailwavev1.MessageRecord{
		MessageId: id, RequestId: "req-" + id[:8], Tenant: "acme", Brand: "shop", MailStream: stream,
		CommunicationType: "offers", CampaignId: campaign, Recipient: rcpt, Pool: "default", SourceIp: "127.0.0.3",
		SendingDomain: "shop.example", Site: "google", ReturnPath: rp, HeaderMessageId: id + "@shop.example",
	}
	data, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.messages.Put(testenv.Context(t), id, data); err != nil {
		t.Fatal(err)
	}
	return sent{rec: rec, returnPath: rp}
}

// reportFields fill testdata/report.eml.tmpl.
type reportFields struct {
	Reporter     string // From address of the report
	FeedbackType string
	ReturnPath   string
	ShownRcpt    string // Original-Rcpt-To and To, possibly redacted
	SourceIP     string
	MessageID    string // of the reported message, without brackets
	FeedbackID   string
	ReportID     string
}

func (f reportFields) ReporterDomain() string {
	return f.Reporter[strings.LastIndexByte(f.Reporter, '@')+1:]
}

var reportTmpl = template.Must(template.ParseFiles(filepath.Join("testdata", "report.eml.tmpl")))

// arfAbout writes an ARF report about s, from reporter, with the
// recipient redacted as several providers do.
func arfAbout(t *testing.T, s sent, reporter string) []byte {
	t.Helper()
	return arfReport(t, reportFields{
		Reporter: reporter, FeedbackType: "abuse", ReturnPath: s.returnPath,
		ShownRcpt: "redacted@" + s.rec.GetRecipient()[strings.IndexByte(s.rec.GetRecipient(), '@')+1:],
		SourceIP:  s.rec.GetSourceIp(), MessageID: s.rec.GetHeaderMessageId(),
		FeedbackID: "spring:" + s.rec.GetMailStream() + ":shop:acme",
	})
}

func arfReport(t *testing.T, f reportFields) []byte {
	t.Helper()
	if f.ReportID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		f.ReportID = hex.EncodeToString(b[:])
	}
	var buf bytes.Buffer
	if err := reportTmpl.Execute(&buf, f); err != nil {
		t.Fatal(err)
	}
	return crlf(buf.Bytes())
}

func crlf(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return crlf(b)
}

// countEvents counts the messages stored on subject in the EVENTS stream.
func (p *platform) countSubject(t *testing.T, stream, subject string) int {
	t.Helper()
	st, err := p.js.Stream(testenv.Context(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(testenv.Context(t), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Subjects[subject])
}

func (p *platform) complaints(t *testing.T) int {
	return p.countSubject(t, mailwavev1.StreamEvents, mailwavev1.SubjectEvent(mailwavev1.EventKind_EVENT_KIND_COMPLAINED, "acme"))
}

// suppression returns the brand-wide suppression of rcpt, or nil.
func (p *platform) suppression(t *testing.T, rcpt string) *mailwavev1.Suppression {
	t.Helper()
	key := mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme", "shop", "", rcpt)
	e, err := p.supp.Get(testenv.Context(t), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var s mailwavev1.Suppression
	if err := proto.Unmarshal(e.Value(), &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// complaintReports returns the ComplaintReports published for acme.
func (p *platform) complaintReports(t *testing.T) []*mailwavev1.ComplaintReport {
	t.Helper()
	ctx := testenv.Context(t)
	c, err := p.js.OrderedConsumer(ctx, mailwavev1.StreamReports, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{mailwavev1.SubjectComplaintReport("acme")}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*mailwavev1.ComplaintReport
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var cr mailwavev1.ComplaintReport
			if err := proto.Unmarshal(m.Data(), &cr); err != nil {
				t.Fatal(err)
			}
			out = append(out, &cr)
		}
		if n == 0 {
			return out
		}
	}
}

// counter reads a complaint counter of the current hour.
func (p *platform) counter(t *testing.T, dim, value string) int {
	t.Helper()
	n, err := p.rdb.Get(testenv.Context(t), fblparser.CounterKey(dim, value, time.Now())).Int()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// imapServer is a real IMAP server (go-imap v2) holding one feedback
// mailbox in memory.
type imapServer struct {
	t    *testing.T
	user *imapmemserver.User
	mem  *imapmemserver.Server
	addr string

	mu   sync.Mutex
	srv  *imapserver.Server
	done chan struct{}
}

const (
	imapUser     = "fbl@fbl.mailwave.test"
	imapPassword = "fbl-password"
)

func newIMAPServer(t *testing.T) *imapServer {
	t.Helper()
	s := &imapServer{t: t, mem: imapmemserver.New(), user: imapmemserver.NewUser(imapUser, imapPassword)}
	if err := s.user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	s.mem.AddUser(s.user)
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *imapServer) start(addr string) {
	s.t.Helper()
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return flushingSession{s.mem.NewSession().(imapserver.SessionIMAP4rev2)}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true, // loopback, no TLS
		// Connections cut by stop and restart are expected here.
		Logger: log.New(io.Discard, "", 0),
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.srv, s.addr, s.done = srv, ln.Addr().String(), make(chan struct{})
	done := s.done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// stop closes the server and every connection to it.
func (s *imapServer) stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

// restart stops the server and starts a new one on the same address, with
// the same mailboxes: clients must reconnect.
func (s *imapServer) restart() {
	s.stop()
	s.start(s.addr)
}

func (s *imapServer) mailbox(name string) fblparser.Mailbox {
	host, port, _ := net.SplitHostPort(s.addr)
	var p int
	_, _ = fmt.Sscanf(port, "%d", &p)
	return fblparser.Mailbox{Name: name, Host: host, Port: p, TLS: fblparser.TLSNone, Username: imapUser,
		Password: imapPassword, Trusted: true}
}

func (s *imapServer) deliver(folder string, raw []byte) {
	s.t.Helper()
	if _, err := s.user.Append(folder, literal{bytes.NewReader(raw)}, &imap.AppendOptions{Time: time.Now()}); err != nil {
		s.t.Fatal(err)
	}
}

// count returns the number of messages in folder (0 when it does not
// exist).
func (s *imapServer) count(folder string) int {
	st, err := s.user.Status(folder, &imap.StatusOptions{NumMessages: true})
	if err != nil {
		return 0
	}
	return int(*st.NumMessages)
}

// flushingSession sends the mailbox updates queued before IDLE as soon as
// IDLE starts, as RFC 2177 servers do: go-imap's in-memory server leaves
// them queued until the next update, so a message that arrived between the
// client's last command and its IDLE would go unannounced.
type flushingSession struct{ imapserver.SessionIMAP4rev2 }

func (s flushingSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if err := s.SessionIMAP4rev2.Poll(w, true); err != nil {
		return err
	}
	return s.SessionIMAP4rev2.Idle(w, stop)
}

type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }

// dnsServer is an authoritative DNS server on loopback (UDP) answering TXT
// queries from a table, for DKIM key lookups.
type dnsServer struct {
	addr string
	mu   sync.Mutex
	txt  map[string][]string
	fail map[string]bool
}

func newDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	d := &dnsServer{txt: map[string][]string{}, fail: map[string]bool{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: d}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return d
}

func (d *dnsServer) setTXT(name string, txt ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[dns.Fqdn(strings.ToLower(name))] = txt
}

// setFailing makes name answer SERVFAIL.
func (d *dnsServer) setFailing(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail[dns.Fqdn(strings.ToLower(name))] = true
}

func (d *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		if d.fail[name] {
			m.Rcode = dns.RcodeServerFailure
			continue
		}
		txt, ok := d.txt[name]
		if !ok {
			m.Rcode = dns.RcodeNameError
			continue
		}
		if q.Qtype == dns.TypeTXT {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: txt})
		}
	}
	_ = w.WriteMsg(m)
}

// reporterKey makes an Ed25519 DKIM key for domain and publishes it in d.
func reporterKey(t *testing.T, d *dnsServer, domain string) *dkim.Signer {
	t.Helper()
	k, err := dkim.GenerateEd25519(domain, "fbl")
	if err != nil {
		t.Fatal(err)
	}
	d.setTXT(k.RecordName(), k.TXT()...)
	s, err := dkim.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sign(t *testing.T, s *dkim.Signer, domain string, raw []byte) []byte {
	t.Helper()
	out, err := s.Sign(domain, nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runConsumer runs the fbl-parser consumer with p until the test ends.
func runConsumer(t *testing.T, pl *platform, p *fblparser.Processor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &events.Consumer[*mailwavev1.InboundMessage]{
		JS: pl.js, Stream: mailwavev1.StreamInbound, Name: mailwavev1.ConsumerFBLParser,
		New:    func() *mailwavev1.InboundMessage { return &mailwavev1.InboundMessage{} },
		Handle: p.Handle, Workers: 2,
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
}

func newSignerFor(key string) (*verp.Signer, error) { return verp.NewSigner([]byte(key)) }
