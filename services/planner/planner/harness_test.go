package planner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

// clock is the planner's clock in a test: real time plus an offset the
// test moves forward.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// harness is a planner in process over a real NATS server and Redis,
// without a sender: what it plans stays in the DISPATCH stream.
type harness struct {
	t     *testing.T
	ns    *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	rdb   *redis.Client
	url   string // Redis
	cl    *client.Client
	http  string
	clock *clock
	cfg   planner.Config
	stop  func()
}

const testVERPKey = "0123456789abcdef0123"

func baseConfig(natsURL, redisURL string) planner.Config {
	return planner.Config{
		Common: service.Common{NATSURL: natsURL, RedisURL: redisURL, HTTPAddr: "127.0.0.1:0", LogLevel: "info",
			Replicas: 1, DrainTimeout: 10 * time.Second},
		VERPKeys: []string{testVERPKey}, Pool: "default", MaxAge: 72 * time.Hour, Workers: 2, TxWorkers: 2, EventWorkers: 2,
		DNSServer: "none", WaveInterval: time.Second, WaveShare: 1, Recheck: time.Second, HoldMax: time.Hour,
		CampaignTTL: 24 * time.Hour,
	}
}

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs a planner; tune adjusts its configuration.
func start(t *testing.T, tune func(*planner.Config)) *harness {
	t.Helper()
	ns := testenv.NATS(t)
	nc, js := testenv.JetStream(t, ns)
	rdb, url := testenv.Redis(t)
	cl, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ns: ns, nc: nc, js: js, rdb: rdb, url: url, cl: cl, clock: &clock{}}
	h.cfg = baseConfig(ns.ClientURL(), url)
	h.cfg.Clock = h.clock.Now
	if tune != nil {
		tune(&h.cfg)
	}
	h.http, h.stop = h.run(h.cfg)
	t.Cleanup(h.stop)
	return h
}

// run starts one planner replica with cfg and returns its HTTP address
// and a function that stops it and waits.
func (h *harness) run(cfg planner.Config) (string, func()) {
	h.t.Helper()
	if err := cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- planner.Run(ctx, cfg, logger(), service.Options{OnListen: func(a net.Addr) { addr <- a }})
	}()
	var a net.Addr
	select {
	case a = <-addr:
	case err := <-done:
		cancel()
		h.t.Fatalf("planner did not start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		h.t.Fatal("planner did not start in 20s")
	}
	var once sync.Once
	return a.String(), func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("planner: %v", err)
			}
		})
	}
}

// tenancyFile writes a tenancy file for the test.
func tenancyFile(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tenancy.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) send(req *mailwavev1.SendRequest) {
	h.t.Helper()
	if _, err := h.cl.Send(testenv.Context(h.t), req); err != nil {
		h.t.Fatal(err)
	}
}

// outcomes waits for the planner's decision (accepted, suppressed or
// dropped) on want recipients of a request.
func (h *harness) outcomes(requestID string, want int) map[string]*mailwavev1.DeliveryEvent {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(h.t), 30*time.Second)
	defer cancel()
	out := map[string]*mailwavev1.DeliveryEvent{}
	for ev, err := range h.cl.Events(ctx, tenantOf(requestID), requestID, time.Now().Add(-time.Hour)) {
		if err != nil {
			h.t.Fatalf("events: %v", err)
		}
		switch ev.GetKind() {
		case mailwavev1.EventKind_EVENT_KIND_ACCEPTED, mailwavev1.EventKind_EVENT_KIND_SUPPRESSED, mailwavev1.EventKind_EVENT_KIND_DROPPED:
			if prev, dup := out[ev.GetRecipient()]; dup {
				h.t.Fatalf("second planner event for %s: %v after %v", ev.GetRecipient(), ev.GetKind(), prev.GetKind())
			}
			out[ev.GetRecipient()] = ev
			if len(out) == want {
				return out
			}
		}
	}
	h.t.Fatalf("%s: %d of %d planner events", requestID, len(out), want)
	return nil
}

// tenantOf: tests name requests "<tenant>/<anything>".
func tenantOf(requestID string) string {
	t, _, _ := strings.Cut(requestID, "/")
	return t
}

// stored is a dispatch in the DISPATCH stream, on its subject (a dispatch
// subject, or mail.retry.<id> when it waits for its wave).
type stored struct {
	subject  string
	schedule string // the Nats-Schedule header
	target   string // the Nats-Schedule-Target header
	d        *mailwavev1.DispatchMessage
}

// dispatches returns every message in the DISPATCH stream. A schedule
// that fires during a read moves its message to a sequence past the end
// of that read, so a read during which the stream grew is done again.
func (h *harness) dispatches() []stored {
	h.t.Helper()
	ctx := testenv.Context(h.t)
	st, err := h.js.Stream(ctx, mailwavev1.StreamDispatch)
	if err != nil {
		h.t.Fatal(err)
	}
	last := func() uint64 {
		info, err := st.Info(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		return info.State.LastSeq
	}
	for {
		before := last()
		out := h.readDispatches(st, before)
		if last() == before {
			return out
		}
	}
}

func (h *harness) readDispatches(st jetstream.Stream, lastSeq uint64) []stored {
	h.t.Helper()
	ctx := testenv.Context(h.t)
	var out []stored
	for seq := uint64(1); seq <= lastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		var d mailwavev1.DispatchMessage
		if err := proto.Unmarshal(m.Data, &d); err != nil {
			h.t.Fatalf("dispatch %d: %v", seq, err)
		}
		out = append(out, stored{subject: m.Subject, schedule: m.Header.Get(mailwavev1.HeaderSchedule),
			target: m.Header.Get(mailwavev1.HeaderScheduleTarget), d: &d})
	}
	return out
}

// dispatchOf returns the dispatch of a message id.
func (h *harness) dispatchOf(id string) stored {
	h.t.Helper()
	return h.lookup(h.byID(), id)
}

// byID indexes every dispatch by message id (the latest copy).
func (h *harness) byID() map[string]stored {
	out := map[string]stored{}
	for _, s := range h.dispatches() {
		out[s.d.GetMessageId()] = s
	}
	return out
}

func (h *harness) lookup(all map[string]stored, id string) stored {
	h.t.Helper()
	s, ok := all[id]
	if !ok {
		h.t.Fatalf("no dispatch for message %s", id)
	}
	return s
}

// campaign reads GET /campaigns/{tenant}/{id}.
func (h *harness) campaign(addr, tenant, id string) (*planner.Campaign, int) {
	h.t.Helper()
	resp, err := http.Get("http://" + addr + "/campaigns/" + tenant + "/" + id)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, resp.StatusCode
	}
	var c planner.Campaign
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		h.t.Fatal(err)
	}
	return &c, resp.StatusCode
}

func (h *harness) kv(bucket string) jetstream.KeyValue {
	h.t.Helper()
	kv, err := h.js.KeyValue(testenv.Context(h.t), bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

func (h *harness) putSuppression(scope mailwavev1.SuppressionScope, tenant, brand, ct, addr, reason string) {
	h.t.Helper()
	b, _ := proto.Marshal(&mailwavev1.Suppression{Address: addr, Tenant: tenant, Brand: brand, Scope: scope,
		CommunicationType: ct, Reason: reason, Origin: mailwavev1.Origin_ORIGIN_USER})
	if _, err := h.kv(mailwavev1.BucketSuppressions).Put(testenv.Context(h.t), mailwavev1.SuppressionKey(scope, tenant, brand, ct, addr), b); err != nil {
		h.t.Fatal(err)
	}
}

func template(from, text, html string) *mailwavev1.SendRequest_Template {
	return &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{From: from, Subject: "Hello {{.name}}", Text: text, Html: html}}
}

func rcpts(addrs ...string) []*mailwavev1.Recipient {
	out := make([]*mailwavev1.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = &mailwavev1.Recipient{Address: a, Vars: map[string]string{"name": fmt.Sprintf("R%d", i)}}
	}
	return out
}

// bodyParts returns the decoded text of a rendered message's body parts.
func bodyParts(t *testing.T, data []byte) []string {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		b, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
		if err != nil {
			t.Fatal(err)
		}
		return []string{string(b)}
	}
	var out []string
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p) // quoted-printable is decoded by the reader
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
}
