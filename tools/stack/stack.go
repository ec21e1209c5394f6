// Package stack runs the whole Mailwave platform in one process: an
// embedded NATS server (or NATS_URL), Redis (REDIS_URL, else redis-server
// from PATH, else an in-process store), the ISP simulator, and the five
// services wired to them. `make run`, the end-to-end tests and the
// benchmark all start the platform through it.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mailwave/mailwave/pkg/embedded"
	"github.com/mailwave/mailwave/pkg/inbound"
	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
	"github.com/mailwave/mailwave/services/inbound-dsn/inbounddsn"
	"github.com/mailwave/mailwave/services/planner/planner"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
	"github.com/mailwave/mailwave/services/sender/sender"
)

// Options configure a stack.
type Options struct {
	// DataDir holds the embedded NATS store and redis-server files.
	DataDir string
	// NATSURL and RedisURL point at external servers instead of embedded ones.
	NATSURL, RedisURL string
	// NoRedisServer skips redis-server on PATH (use the in-process store).
	NoRedisServer bool
	// DNSServer and SMTPPort tell the sender where MX lookups and SMTP go
	// (the simulator's DNS and its shared SMTP port).
	DNSServer string
	SMTPPort  int
	// SourceIPs and HeloNames are the pool's addresses (127.0.0.x locally).
	SourceIPs, HeloNames []string
	// BounceDomain receives bounces (VERP return paths); empty means the
	// planner's default, bounces.<sending domain>, and inbound-dsn then
	// takes mail for DefaultBounceDomain.
	BounceDomain string
	// SenderReplicas is the number of sender replicas (default 1); they
	// share every limit through Redis, as pods do. Their HTTP addresses
	// are "sender", "sender-2", …
	SenderReplicas int
	// NoSender starts no sender in process (a test runs sender processes
	// of its own against the stack's NATS and Redis).
	NoSender bool
	// AckWait is every consumer's redelivery delay (0: their defaults).
	AckWait time.Duration
	// SenderWorkers is the sender's concurrency (default 64).
	SenderWorkers int
	// Logger receives every service's logs.
	Logger *slog.Logger
	// Tune, when set, adjusts each service's configuration before start.
	TunePlanner func(*planner.Config)
	TuneSender  func(*sender.Config)
	// TuneReputation adjusts the reputation monitor (policy file,
	// intervals, domains to audit).
	TuneReputation func(*reputation.Config)
	// TuneInbound and TuneFBL adjust inbound-dsn and fbl-parser.
	TuneInbound func(*inbounddsn.Config)
	TuneFBL     func(*fblparser.Config)
	// FeedbackMailboxes are the feedback mailboxes fbl-parser reads: the
	// simulator's IMAP mailbox in development and in the tests.
	FeedbackMailboxes []fblparser.Mailbox
	// NoReputation starts no reputation monitor in process (a test runs,
	// stops and restarts its own against the stack's NATS and Redis).
	NoReputation bool
}

// Stack is a running platform.
type Stack struct {
	// NATSURL and RedisURL are where the services connect.
	NATSURL  string
	RedisURL string
	// RedisKind says which Redis was chosen (external, redis-server, in-process).
	RedisKind string
	// VERPKey signs the return paths of this stack.
	VERPKey string
	// HTTP maps each service to its /healthz, /readyz and /metrics address.
	HTTP map[string]string
	// InboundDSN is the address of inbound-dsn's SMTP receiver: route the
	// bounce domain there (ispsim's SetRoute) so DSNs reach it.
	InboundDSN string
	// FBL is the address of fbl-parser's SMTP intake: route the domain of
	// DefaultFBLAddress there so complaints sent by SMTP reach it.
	FBL string

	nats   *server.Server
	redis  *embedded.Redis
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// DefaultBounceDomain is the bounce domain of the simulator's sending
// domain, mailwave.test, as the planner derives it.
const DefaultBounceDomain = "bounces.mailwave.test"

// DefaultFBLAddress is the address the simulator's providers send their
// complaints to by SMTP (its default profile), and fbl-parser's FBL
// address in the stack.
const DefaultFBLAddress = "fbl@mailwave.test"

// Start brings the platform up and returns once every service is ready.
// Stop shuts it down.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{HTTP: map[string]string{}}
	if o.NATSURL == "" {
		ns, err := embedded.StartNATS(embedded.NATSOptions{Dir: filepath.Join(o.DataDir, "nats"), Port: -1, HTTPPort: -1})
		if err != nil {
			return nil, err
		}
		s.nats = ns
		s.NATSURL = ns.ClientURL()
	} else {
		s.NATSURL = o.NATSURL
	}
	r, err := embedded.StartRedis(ctx, embedded.RedisOptions{URL: o.RedisURL, Dir: filepath.Join(o.DataDir, "redis"), NoServer: o.NoRedisServer})
	if err != nil {
		s.shutdownInfra()
		return nil, err
	}
	s.redis, s.RedisURL, s.RedisKind = r, r.URL, r.Kind

	var key [24]byte
	_, _ = rand.Read(key[:])
	s.VERPKey = hex.EncodeToString(key[:])
	common := service.Common{
		NATSURL: s.NATSURL, RedisURL: s.RedisURL, HTTPAddr: "127.0.0.1:0", LogLevel: "info",
		Replicas: 1, DrainTimeout: 20 * time.Second, AckWait: o.AckWait,
	}
	pcfg := planner.Config{Common: common, VERPKeys: []string{s.VERPKey}, Pool: "default",
		SourceIPs: o.SourceIPs, HeloNames: o.HeloNames, BounceDomain: o.BounceDomain, MaxAge: 72 * time.Hour, Workers: 4,
		TxWorkers: 64, EventWorkers: 4, DNSServer: o.DNSServer, WaveInterval: time.Minute, WaveShare: 0.8,
		Recheck: 5 * time.Minute, HoldMax: 24 * time.Hour, CampaignTTL: 45 * 24 * time.Hour}
	if o.TunePlanner != nil {
		o.TunePlanner(&pcfg)
	}
	scfg := sender.Config{Common: common, DNSServer: o.DNSServer, SMTPPort: o.SMTPPort, HeloName: "mailwave.localhost",
		Workers: max(o.SenderWorkers, 1), MaxPerConnection: 100, IdleTimeout: 15 * time.Second,
		RetryMax: 30 * time.Hour, PauseRecheck: 2 * time.Second, ReserveHorizon: 10 * time.Second}
	if o.SenderWorkers == 0 {
		scfg.Workers = 64
	}
	if o.TuneSender != nil {
		o.TuneSender(&scfg)
	}
	bounceDomain := o.BounceDomain
	if bounceDomain == "" {
		bounceDomain = DefaultBounceDomain
	}
	// inbound-dsn's and fbl-parser's SMTP receivers.
	receiverSettings := inbound.Settings{MaxMessageBytes: 983040, MaxConnsPerIP: 10, MaxConns: 100,
		SessionTimeout: time.Minute, CommandTimeout: 30 * time.Second, StoreTimeout: 30 * time.Second}
	inboundAddr := make(chan net.Addr, 1)
	icfg := inbounddsn.Config{Common: common, SMTPAddr: "127.0.0.1:0", BounceDomains: []string{bounceDomain},
		VERPKeys: []string{s.VERPKey}, Settings: receiverSettings, Workers: 4,
		OnSMTPListen: func(a net.Addr) { inboundAddr <- a }}
	if o.TuneInbound != nil {
		o.TuneInbound(&icfg)
	}
	fblAddr := make(chan net.Addr, 1)
	fcfg := fblparser.Config{Common: common, Mailboxes: o.FeedbackMailboxes, SMTPAddr: "127.0.0.1:0",
		Addresses: []string{DefaultFBLAddress}, VERPKeys: []string{s.VERPKey}, DNSServer: o.DNSServer,
		Settings: receiverSettings,
		// The simulator's IMAP server (go-imap's in-memory one) does not
		// announce a message that arrived just before IDLE began until
		// another one does; renewing IDLE every few seconds bounds that.
		PollInterval: 2 * time.Second, ReconnectMin: 100 * time.Millisecond, ReconnectMax: 5 * time.Second,
		DedupTTL: 30 * 24 * time.Hour, CounterTTL: 8 * 24 * time.Hour, Workers: 4,
		OnSMTPListen: func(a net.Addr) { fblAddr <- a }}
	if o.TuneFBL != nil {
		o.TuneFBL(&fcfg)
	}
	for _, v := range []service.Validator{&pcfg, &scfg, &icfg, &fcfg} {
		if err := v.Validate(); err != nil {
			s.shutdownInfra()
			return nil, err
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	ready := map[string]chan net.Addr{}
	start := func(name string, run func(ctx context.Context, log *slog.Logger, opts service.Options) error) {
		ch := make(chan net.Addr, 1)
		ready[name] = ch
		s.wg.Go(func() {
			err := run(runCtx, o.Logger.With("service", name), service.Options{OnListen: func(a net.Addr) { ch <- a }})
			if err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, fmt.Errorf("%s: %w", name, err))
				s.mu.Unlock()
				close(ch)
			}
		})
	}
	start("planner", func(ctx context.Context, l *slog.Logger, op service.Options) error {
		return planner.Run(ctx, pcfg, l, op)
	})
	replicas := max(o.SenderReplicas, 1)
	if o.NoSender {
		replicas = 0
	}
	for i := range replicas {
		name := "sender"
		if i > 0 {
			name = fmt.Sprintf("sender-%d", i+1)
		}
		start(name, func(ctx context.Context, l *slog.Logger, op service.Options) error {
			return sender.Run(ctx, scfg, l, op)
		})
	}
	start("inbound-dsn", func(ctx context.Context, l *slog.Logger, op service.Options) error {
		return inbounddsn.Run(ctx, icfg, l, op)
	})
	start("fbl-parser", func(ctx context.Context, l *slog.Logger, op service.Options) error {
		return fblparser.Run(ctx, fcfg, l, op)
	})
	if !o.NoReputation {
		// Blocklist and audit lookups go to the same DNS as the sender's,
		// never to the machine's resolver.
		rcfg := reputation.Config{Common: common, DNSServer: o.DNSServer, SourceIPs: o.SourceIPs,
			HeloNames: o.HeloNames, BounceDomain: o.BounceDomain}
		if o.TuneReputation != nil {
			o.TuneReputation(&rcfg)
		}
		start("reputation-monitor", func(ctx context.Context, l *slog.Logger, op service.Options) error {
			return reputation.Run(ctx, rcfg, l, op)
		})
	}
	for name, ch := range ready {
		select {
		case a, ok := <-ch:
			if !ok {
				err := s.Stop()
				return nil, fmt.Errorf("stack: %s did not start: %w", name, err)
			}
			s.HTTP[name] = a.String()
		case <-time.After(30 * time.Second):
			_ = s.Stop()
			return nil, fmt.Errorf("stack: %s did not start in 30s", name)
		}
	}
	select {
	case a := <-inboundAddr:
		s.InboundDSN = a.String()
	default:
		_ = s.Stop()
		return nil, errors.New("stack: inbound-dsn is ready but did not say where it listens")
	}
	if fcfg.SMTPEnabled() {
		select {
		case a := <-fblAddr:
			s.FBL = a.String()
		default:
			_ = s.Stop()
			return nil, errors.New("stack: fbl-parser is ready but did not say where it listens")
		}
	}
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls every service's /readyz.
func (s *Stack) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for name, addr := range s.HTTP {
		for {
			resp, err := client.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("stack: %s not ready: %v", name, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// Stop drains every service, then stops the embedded servers. It returns
// the services' errors, if any.
func (s *Stack) Stop() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.shutdownInfra()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

func (s *Stack) shutdownInfra() {
	if s.redis != nil {
		_ = s.redis.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
}

// NATSServer returns the embedded NATS server, or nil with NATS_URL.
func (s *Stack) NATSServer() *server.Server { return s.nats }
