// Package fblparser is the fbl-parser service: it reads spam complaints —
// ARF reports (RFC 5965) and the provider variants package arf knows —
// from feedback mailboxes over IMAP (RFC 9051) and from the FBL addresses
// over SMTP, and acts on them within seconds.
//
// Every report is stored raw in the INBOUND stream (mail.inbound.fbl)
// before anything else happens to it: the SMTP intake (package inbound)
// answers 250 only then, and the IMAP intake moves a message out of its
// folder only then. The consumer of mail.inbound.fbl runs the Processor:
// it parses the report, checks its source against the configured trust
// (per mailbox, and for SMTP the reporter's domain with a DKIM signature
// that verifies), recovers the recipient from our signed VERP return path
// or our Message-ID in the reported message, de-duplicates by the
// report's fingerprint, and for a trusted report publishes one complained
// DeliveryEvent and one ComplaintReport, suppresses the recipient for the
// whole brand and counts the complaint per source IP, sending domain,
// provider, tenant and campaign in Redis. An untrusted report is kept in
// quarantine: stored, reported with trusted=false and the reason,
// counted in metrics, never acted on.
package fblparser

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/verp"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// BucketIntake is the key-value bucket that keeps each feedback mailbox's
// IntakeState (UIDVALIDITY and the last stored UID), one key per mailbox.
// The service creates it at start.
const BucketIntake = "fbl-intake"

// Run runs the service until ctx is cancelled: one IMAP intake per
// feedback mailbox, the SMTP intake, and the consumer of mail.inbound.fbl.
// It connects to NATS and Redis, creates the topology and serves its
// health and metrics endpoints.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts service.Options) error {
	if !cfg.validated {
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	signer, err := verp.ParseKeys(cfg.VERPKeys)
	if err != nil {
		return err
	}
	return service.Run(ctx, "fbl-parser", cfg.Common, opts, log, func(ctx context.Context, rt *service.Runtime) (map[string]http.Handler, func(context.Context) error, error) {
		s, err := newService(ctx, cfg, rt, signer, log)
		if err != nil {
			return nil, nil, err
		}
		var srv *inbound.Server
		var ln net.Listener
		if cfg.SMTPEnabled() {
			if err := cfg.FitPayload(rt.NC.MaxPayload()); err != nil {
				return nil, nil, err
			}
			if srv, ln, err = s.listenSMTP(); err != nil {
				return nil, nil, err
			}
		}
		consumer := &events.Consumer[*mailwavev1.InboundMessage]{
			JS: rt.JS, Stream: mailwavev1.StreamInbound, Name: mailwavev1.ConsumerFBLParser,
			New:     func() *mailwavev1.InboundMessage { return &mailwavev1.InboundMessage{} },
			Handle:  s.proc.Handle,
			Workers: cfg.Workers,
			Logger:  log,
			OnDead:  rt.OnDead(mailwavev1.StreamInbound),
		}
		loop := func(ctx context.Context) error {
			g, gctx := errgroup.WithContext(ctx)
			if srv != nil {
				// Sessions in progress finish (their report is stored or
				// refused) within the drain timeout.
				g.Go(func() error { return srv.Run(gctx, ln, cfg.DrainTimeout) })
			}
			// Each mailbox has its own loop: one that cannot be reached
			// or logged into retries with backoff and holds up nothing
			// else. An intake returns only when ctx ends.
			for _, in := range s.intakes {
				g.Go(func() error { return in.Run(gctx) })
			}
			g.Go(func() error { return consumer.Run(gctx) })
			return g.Wait()
		}
		return nil, loop, nil
	})
}

type svc struct {
	cfg     Config
	rt      *service.Runtime
	log     *slog.Logger
	proc    *Processor
	intakes []*Intake

	reports   *prometheus.CounterVec
	stored    *prometheus.CounterVec
	failures  *prometheus.CounterVec
	refused   *prometheus.CounterVec
	mailboxes prometheus.Gauge
}

func newService(ctx context.Context, cfg Config, rt *service.Runtime, signer *verp.Signer, log *slog.Logger) (*svc, error) {
	messages, err := rt.JS.KeyValue(ctx, mailwavev1.BucketMessages)
	if err != nil {
		return nil, fmt.Errorf("fblparser: messages bucket: %w", err)
	}
	supp, err := rt.JS.KeyValue(ctx, mailwavev1.BucketSuppressions)
	if err != nil {
		return nil, fmt.Errorf("fblparser: suppressions bucket: %w", err)
	}
	state, err := rt.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketIntake, Description: "where each feedback mailbox was read up to (UIDVALIDITY, last stored UID)",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("fblparser: intake bucket: %w", err)
	}
	s := &svc{cfg: cfg, rt: rt, log: log}
	s.reports = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_fbl_reports_total",
		Help: "Stored reports processed, by source (imap, smtp) and result (acted, opt-out, untrusted = quarantined, duplicate, unparseable, ignored)."},
		[]string{"source", "result"})
	s.stored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_fbl_received_total",
		Help: "Reports stored in INBOUND, by intake (imap:<mailbox> or smtp)."}, []string{"intake"})
	s.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_fbl_imap_session_failures_total",
		Help: "Failed IMAP sessions (connect, login, fetch, store, move), by mailbox; each is retried with backoff."}, []string{"mailbox"})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailwave_fbl_smtp_refused_total",
		Help: "Recipients, messages and connections the SMTP intake refused, by SMTP code."}, []string{"code"})
	s.mailboxes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mailwave_fbl_mailboxes",
		Help: "Feedback mailboxes configured."})
	for _, c := range []prometheus.Collector{s.reports, s.stored, s.failures, s.refused, s.mailboxes} {
		if err := rt.Metrics.Register(c); err != nil {
			return nil, fmt.Errorf("fblparser: metrics: %w", err)
		}
	}
	trust := &Trust{
		Mailboxes: map[string]SourceTrust{},
		SMTP:      SourceTrust{Trusted: len(cfg.Reporters) > 0, Domains: cfg.Reporters, RequireDKIM: true},
		LookupTXT: ResolverLookupTXT(cfg.DNSServer),
	}
	holder := replicaName()
	for _, m := range cfg.mailboxes {
		trust.Mailboxes[m.Name] = MailboxTrust(m)
		intake := "imap:" + m.Name
		s.intakes = append(s.intakes, &Intake{
			Mailbox:      m,
			Store:        inbound.JetStream(rt.Pub),
			State:        KVState{KV: state},
			Lease:        &Lease{Redis: rt.Redis, Key: LeaseKey(m.Name), Holder: holder},
			Logger:       log,
			PollInterval: cfg.PollInterval,
			MaxBytes:     cfg.MaxMessageBytes,
			MinBackoff:   cfg.ReconnectMin,
			MaxBackoff:   cfg.ReconnectMax,
			OnStored:     func(*mailwavev1.InboundMessage) { s.stored.WithLabelValues(intake).Inc() },
			OnFailed:     func(error) { s.failures.WithLabelValues(m.Name).Inc() },
		})
		log.Info("feedback mailbox", "mailbox", m)
	}
	s.mailboxes.Set(float64(len(cfg.mailboxes)))
	s.proc = &Processor{
		Signer: signer, Messages: messages, Suppressions: supp, Pub: rt.Pub, Redis: rt.Redis,
		Trust: trust, DedupTTL: cfg.DedupTTL, CounterTTL: cfg.CounterTTL, Logger: log,
		OnOutcome: func(source string, o Outcome) { s.reports.WithLabelValues(source, string(o)).Inc() },
	}
	return s, nil
}

// listenSMTP builds the SMTP intake and binds its listener.
func (s *svc) listenSMTP() (*inbound.Server, net.Listener, error) {
	cfg := s.cfg
	host := cfg.SMTPHostname
	if host == "" {
		a := cfg.Addresses[0]
		host = a[strings.LastIndexByte(a, '@')+1:]
	}
	icfg := inbound.Config{
		Domain:    host,
		Policy:    ReceiverPolicy(cfg.Addresses),
		Store:     inbound.JetStream(s.rt.Pub),
		Source:    "smtp",
		Logger:    s.log,
		OnStored:  func(*mailwavev1.InboundMessage) { s.stored.WithLabelValues("smtp").Inc() },
		OnRefused: func(code int, _ string) { s.refused.WithLabelValues(strconv.Itoa(code)).Inc() },
	}
	cfg.Apply(&icfg)
	srv, err := inbound.New(icfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.SMTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("fblparser: listen %s: %w", cfg.SMTPAddr, err)
	}
	s.log.Info("smtp intake listening", "addr", ln.Addr().String(), "addresses", strings.Join(cfg.Addresses, ","),
		"reporters", strings.Join(cfg.Reporters, ","))
	if cfg.OnSMTPListen != nil {
		cfg.OnSMTPListen(ln.Addr())
	}
	return srv, ln, nil
}

// replicaName names this process as a lease holder: the host name (the
// pod name on Kubernetes) and a random suffix, so two processes on one
// host differ.
func replicaName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
