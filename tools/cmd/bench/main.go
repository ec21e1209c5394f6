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
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailwave/mailwave/pkg/dkim"
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
	dkim, out, cpuprofile     string
	postfixN                  int
	noPostfix                 bool
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
	// CPUSeconds is the CPU time of the whole pipeline: this process (the
	// five services, NATS, the sink) and redis-server when it was started
	// here or is reachable for INFO.
	CPUSeconds float64 `json:"cpu_seconds"`
	// MaxRSSMBPerProcess is the largest peak resident set among the
	// pipeline's processes (this one, redis-server).
	MaxRSSMBPerProc float64 `json:"max_rss_mb_per_process"`
	ProcessCPU      float64 `json:"process_cpu_seconds"`
	ProcessRSSMB    float64 `json:"process_max_rss_mb"`
	RedisCPU        float64 `json:"redis_cpu_seconds"`
	RedisRSSMB      float64 `json:"redis_rss_mb"`
	// DKIMVerified says that a delivered message's signatures verified
	// against the published key (nil with DKIM off).
	DKIMVerified  *bool   `json:"dkim_verified,omitempty"`
	WallSeconds   float64 `json:"wall_seconds"`
	SenderWorkers int     `json:"sender_workers"`
	Redis         string  `json:"redis"`
	Cores         int     `json:"cores"`
	// LoadAverage is /proc/loadavg's 1-minute figure at the start: how
	// busy the machine was with other work.
	LoadAverage float64 `json:"load_average_1m"`
	// Postfix figures: null when Postfix is not installed (PostfixNote
	// says why).
	PostfixMsgsPerSec *float64 `json:"postfix_msgs_per_sec"`
	CeilingMsgsPerSec *float64 `json:"ceiling_msgs_per_sec"`
	PostfixMessages   int      `json:"postfix_messages,omitempty"`
	PostfixVersion    string   `json:"postfix_version,omitempty"`
	PostfixNote       string   `json:"postfix_note,omitempty"`
	MultipleOfPostfix float64  `json:"multiple_of_postfix,omitempty"`
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
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the pipeline run to this file")
	fs.IntVar(&o.postfixN, "postfix-n", 0, "messages for the Postfix figures (default: -n)")
	fs.BoolVar(&o.noPostfix, "no-postfix", false, "skip the Postfix figures even when Postfix is installed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if o.n < 1 || o.size < 512 || o.workers < 1 || o.domains < 1 {
		return fmt.Errorf("-n ≥ 1, -size ≥ 512, -workers ≥ 1 and -domains ≥ 1 are required")
	}
	if o.dkim != "off" && o.dkim != "rsa" && o.dkim != "ed25519" {
		return fmt.Errorf("-dkim %s: want rsa, ed25519 or off", o.dkim)
	}
	if o.postfixN == 0 {
		o.postfixN = o.n
	}
	res, err := bench(ctx, o)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "messages\tbytes\tdkim\tmsgs/s\tp50 ms\tp99 ms\tcpu s\tmax RSS MB\tpostfix msgs/s\tceiling msgs/s\tload")
	figure := func(f *float64) string {
		if f == nil {
			return "-"
		}
		return fmt.Sprintf("%.0f", *f)
	}
	fmt.Fprintf(tw, "%d\t%d\t%s\t%.0f\t%.1f\t%.1f\t%.1f\t%.0f\t%s\t%s\t%.2f\n", res.Messages, res.BytesPerMessage, res.DKIM,
		res.MsgsPerSec, res.P50ms, res.P99ms, res.CPUSeconds, res.MaxRSSMBPerProc,
		figure(res.PostfixMsgsPerSec), figure(res.CeilingMsgsPerSec), res.LoadAverage)
	_ = tw.Flush()
	if res.DKIMVerified != nil {
		fmt.Fprintf(stdout, "DKIM (%s) of a delivered message verified: %v\n", res.DKIM, *res.DKIMVerified)
	}
	if res.PostfixNote != "" {
		fmt.Fprintln(stdout, "postfix:", res.PostfixNote)
	} else if res.PostfixMsgsPerSec != nil {
		fmt.Fprintf(stdout, "Mailwave: %.1f× Postfix %s relaying into the same sink\n", res.MultipleOfPostfix, res.PostfixVersion)
	}
	if o.out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", o.out)
	}
	return nil
}

// benchShaping lifts the shaping limits far above what one machine can
// send, so that the benchmark measures the pipeline; the limits are still
// checked in Redis for every message and connection.
const benchShaping = `providers:
  default: {max_connections: 64, max_messages_per_connection: 100000, messages_per_second: 100000,
            messages_per_minute: 0, messages_per_hour: 0, connections_per_minute: 100000}
`

// benchMessage is message i as published: the sink finds i in X-Bench-Id.
func benchMessage(i int, rcpt string, body []byte) []byte {
	raw := []byte("From: Bench <bench@mailwave.bench>\r\nTo: <" + rcpt + ">\r\nSubject: bench\r\n" +
		"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench-" + strconv.Itoa(i) + "@mailwave.bench>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\nX-Bench-Id: " + strconv.Itoa(i) + "\r\n\r\n")
	return append(raw, body...)
}

func bench(ctx context.Context, o options) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	load := loadAverage()
	sinkAddr := netip.MustParseAddr("127.0.0.50")
	received := make([]atomic.Int64, o.n)
	var count atomic.Int64
	done := make(chan struct{})
	sk, err := startSink(sinkAddr)
	if err != nil {
		return nil, err
	}
	defer sk.Close()
	sk.phase(func(idx int, at time.Time) {
		if idx < 0 || idx >= o.n || !received[idx].CompareAndSwap(0, at.UnixNano()) {
			return
		}
		if count.Add(1) == int64(o.n) {
			close(done)
		}
	})

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
	shapingPath := filepath.Join(dir, "shaping.yaml")
	if err := os.WriteFile(shapingPath, []byte(benchShaping), 0o600); err != nil {
		return nil, err
	}
	var key *dkim.Key
	keyDir := ""
	if o.dkim != "off" {
		keyDir = filepath.Join(dir, "dkim")
		if key, err = writeBenchKey(keyDir, o.dkim); err != nil {
			return nil, err
		}
	}
	st, err := stack.Start(ctx, stack.Options{
		DataDir: filepath.Join(dir, "data"), RedisURL: os.Getenv("REDIS_URL"), DNSServer: dns.Addr(), SMTPPort: sk.Port(),
		SourceIPs: []string{"127.0.0.3"}, HeloNames: []string{"mta.bench"}, SenderWorkers: o.workers,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		TuneSender: func(c *sender.Config) {
			c.MaxPerConnection = 1000
			c.ShapingFile = shapingPath
			c.DKIMKeys = keyDir
		},
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Stop() }()
	redisStats := newRedisStats(st.RedisURL)
	defer redisStats.close()

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
	body = body[:o.size-2]
	body = append(body, "\r\n"...)

	// What earlier runs (or Postfix) left for the disk to write back
	// would otherwise be written during this one: start on a quiet disk.
	syscall.Sync()
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, redisCPU0 := cpuSeconds(), redisStats.cpu()
	published := make([]int64, o.n)
	start := time.Now()
	var futures []jetstream.PubAckFuture
	for i := range o.n {
		rcpt := fmt.Sprintf("user%d@d%d.bench", i, i%o.domains)
		req := &mailwavev1.SendRequest{
			IdempotencyKey: "bench-" + strconv.Itoa(i), Tenant: "bench", Brand: "bench",
			Priority:   mailwavev1.Priority_PRIORITY_TRANSACTIONAL,
			Recipients: []*mailwavev1.Recipient{{Address: rcpt}},
			Content:    &mailwavev1.SendRequest_Raw{Raw: benchMessage(i, rcpt, body)},
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
	redisCPU := redisStats.cpu() - redisCPU0
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	lat := make([]float64, o.n)
	for i := range o.n {
		lat[i] = float64(received[i].Load()-published[i]) / 1e6
	}
	sort.Float64s(lat)
	res := &Result{
		Messages: o.n, BytesPerMessage: o.size, DKIM: o.dkim,
		MsgsPerSec: float64(o.n) / wall.Seconds(),
		P50ms:      lat[o.n/2], P99ms: lat[min(o.n-1, o.n*99/100)],
		CPUSeconds: cpu + redisCPU, ProcessCPU: cpu, RedisCPU: redisCPU,
		ProcessRSSMB: maxRSSMB(), RedisRSSMB: redisStats.rssMB(),
		WallSeconds: wall.Seconds(), SenderWorkers: o.workers, Redis: st.RedisKind, Cores: numCPU(),
		LoadAverage: load,
	}
	res.MaxRSSMBPerProc = max(res.ProcessRSSMB, res.RedisRSSMB)
	if key != nil {
		ok := verifyDKIM(sk.first(), key)
		res.DKIMVerified = &ok
	}

	// Postfix, into the same sink, once the pipeline is done.
	tools, why := postfixTools()
	switch {
	case o.noPostfix:
		res.PostfixNote = "skipped (-no-postfix)"
	case tools == nil:
		res.PostfixNote = "skipped: " + why
	default:
		res.PostfixVersion = postfixVersion(tools)
		res.PostfixMessages = o.postfixN
		syscall.Sync() // as before the pipeline's run
		rate, err := measurePostfixRelay(ctx, tools, sk, netip.AddrPortFrom(sinkAddr, uint16(sk.Port())).String(),
			benchMessage(0, "user@d0.bench", body), o.postfixN)
		if err != nil {
			return nil, err
		}
		res.PostfixMsgsPerSec = &rate
		res.MultipleOfPostfix = res.MsgsPerSec / rate
		ceiling, err := measureCeiling(ctx, tools, o.size, o.postfixN)
		if err != nil {
			return nil, err
		}
		res.CeilingMsgsPerSec = &ceiling
	}
	return res, nil
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
