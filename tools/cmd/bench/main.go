// Command bench measures the whole delivery pipeline on this machine:
// publish → planner → DISPATCH stream on file storage → sender → a fast
// SMTP sink on loopback, with events emitted, as `make bench` runs it.
// It prints a table and writes the figures as JSON.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailwave/mailwave/pkg/events"
	"github.com/mailwave/mailwave/pkg/spf/dnstest"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/sender/sender"
	"github.com/mailwave/mailwave/tools/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	n, size, workers, domains int
	dkim, out                 string
	timeout                   time.Duration
}

// Result is what the benchmark writes to -out.
type Result struct {
	Messages        int     `json:"messages"`
	BytesPerMessage int     `json:"bytes_per_message"`
	DKIM            string  `json:"dkim"`
	MsgsPerSec      float64 `json:"msgs_per_sec"`
	P50ms           float64 `json:"p50_ms"`
	P99ms           float64 `json:"p99_ms"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	MaxRSSMBPerProc float64 `json:"max_rss_mb_per_process"`
	WallSeconds     float64 `json:"wall_seconds"`
	SenderWorkers   int     `json:"sender_workers"`
	Redis           string  `json:"redis"`
	Cores           int     `json:"cores"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 20000, "messages")
	fs.IntVar(&o.size, "size", 10240, "bytes per message")
	fs.StringVar(&o.dkim, "dkim", "off", "DKIM signing: rsa, ed25519 or off")
	fs.StringVar(&o.out, "out", "", "write the result as JSON to this file")
	fs.IntVar(&o.workers, "workers", 64, "sender workers")
	fs.IntVar(&o.domains, "domains", 8, "recipient domains (destination sites)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.n < 1 || o.size < 512 || o.workers < 1 || o.domains < 1 {
		return fmt.Errorf("-n ≥ 1, -size ≥ 512, -workers ≥ 1 and -domains ≥ 1 are required")
	}
	if o.dkim != "off" {
		return fmt.Errorf("-dkim %s: DKIM signing is not wired into the sender yet; run with DKIM=off", o.dkim)
	}
	res, err := bench(ctx, o)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "messages\tbytes\tdkim\tmsgs/s\tp50 ms\tp99 ms\tcpu s\tmax RSS MB")
	fmt.Fprintf(tw, "%d\t%d\t%s\t%.0f\t%.1f\t%.1f\t%.1f\t%.0f\n", res.Messages, res.BytesPerMessage, res.DKIM,
		res.MsgsPerSec, res.P50ms, res.P99ms, res.CPUSeconds, res.MaxRSSMBPerProc)
	_ = tw.Flush()
	if o.out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", o.out)
	}
	return nil
}

func bench(ctx context.Context, o options) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	sinkAddr := netip.MustParseAddr("127.0.0.50")
	received := make([]atomic.Int64, o.n)
	var count atomic.Int64
	done := make(chan struct{})
	sink, err := startSink(sinkAddr, func(idx int, at time.Time) {
		if idx < 0 || idx >= o.n || !received[idx].CompareAndSwap(0, at.UnixNano()) {
			return
		}
		if count.Add(1) == int64(o.n) {
			close(done)
		}
	})
	if err != nil {
		return nil, err
	}
	defer sink.Close()

	zone := dnstest.NewZone()
	zone.Addr("mx.sink.bench", sinkAddr)
	for i := range o.domains {
		zone.MX(fmt.Sprintf("d%d.bench", i), 10, "mx.sink.bench")
	}
	zone.Addr("mta.bench", netip.MustParseAddr("127.0.0.3"))
	dns, err := dnstest.Start(zone)
	if err != nil {
		return nil, err
	}
	defer dns.Close()

	dir, err := os.MkdirTemp("", "mailwave-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	st, err := stack.Start(ctx, stack.Options{
		DataDir: dir, RedisURL: os.Getenv("REDIS_URL"), DNSServer: dns.Addr(), SMTPPort: sink.Port(),
		SourceIPs: []string{"127.0.0.3"}, HeloNames: []string{"mta.bench"}, SenderWorkers: o.workers,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		TuneSender: func(c *sender.Config) {
			c.MaxPerConnection = 1000
		},
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Stop() }()

	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	pub := events.NewPublisher(js)
	body := make([]byte, 0, o.size)
	for len(body) < o.size {
		body = append(body, "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"...)
	}
	body = body[:o.size]

	cpu0 := cpuSeconds()
	published := make([]int64, o.n)
	start := time.Now()
	var futures []jetstream.PubAckFuture
	for i := range o.n {
		rcpt := fmt.Sprintf("user%d@d%d.bench", i, i%o.domains)
		raw := []byte("From: Bench <bench@mailwave.bench>\r\nTo: <" + rcpt + ">\r\nSubject: bench\r\n" +
			"Message-ID: <bench-" + strconv.Itoa(i) + "@mailwave.bench>\r\nX-Bench-Id: " + strconv.Itoa(i) + "\r\n\r\n")
		raw = append(raw, body...)
		req := &mailwavev1.SendRequest{
			IdempotencyKey: "bench-" + strconv.Itoa(i), Tenant: "bench", Brand: "bench",
			Priority:   mailwavev1.Priority_PRIORITY_TRANSACTIONAL,
			Recipients: []*mailwavev1.Recipient{{Address: rcpt}},
			Content:    &mailwavev1.SendRequest_Raw{Raw: raw},
		}
		published[i] = time.Now().UnixNano()
		f, err := pub.PublishAsync(ctx, mailwavev1.SubjectSend(mailwavev1.LaneTransactional, "bench"), req,
			events.WithMsgID(req.IdempotencyKey))
		if err != nil {
			return nil, err
		}
		futures = append(futures, f)
		if len(futures) >= 1024 {
			if err := waitAll(ctx, futures); err != nil {
				return nil, err
			}
			futures = futures[:0]
		}
	}
	if err := waitAll(ctx, futures); err != nil {
		return nil, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("only %d of %d messages reached the sink: %w", count.Load(), o.n, ctx.Err())
	}
	wall := time.Since(start)
	cpu := cpuSeconds() - cpu0
	lat := make([]float64, o.n)
	for i := range o.n {
		lat[i] = float64(received[i].Load()-published[i]) / 1e6
	}
	sort.Float64s(lat)
	return &Result{
		Messages: o.n, BytesPerMessage: o.size, DKIM: o.dkim,
		MsgsPerSec: float64(o.n) / wall.Seconds(),
		P50ms:      lat[o.n/2], P99ms: lat[min(o.n-1, o.n*99/100)],
		CPUSeconds: cpu, MaxRSSMBPerProc: maxRSSMB(), WallSeconds: wall.Seconds(),
		SenderWorkers: o.workers, Redis: st.RedisKind, Cores: numCPU(),
	}, nil
}

func waitAll(ctx context.Context, fs []jetstream.PubAckFuture) error {
	for _, f := range fs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
