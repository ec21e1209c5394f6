package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailwave/mailwave/pkg/client"
	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/service"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/fbl-parser/fblparser"
	"github.com/mailwave/mailwave/tools/stack"
)

// The pool's source addresses: loopback addresses the simulator sees as
// distinct sending IPs. (127.0.0.2 is the RFC 5782 test point that every
// blocklist lists, so it is not used.)
var (
	sourceIPs = []string{"127.0.0.3", "127.0.0.4"}
	heloNames = []string{"mta2.mailwave.test", "mta3.mailwave.test"}
)

// demo is the demo batch: one recipient per behaviour worth seeing.
var demo = []string{
	"ana@gmail.com",
	"ben@brightworks.example", // Google-hosted: shares Gmail's budget
	"unknown-carl@gmail.com",  // 550 5.1.1
	"cleo@yahoo.com",
	"full-dan@aol.com", // 552 5.2.2
	"eve@outlook.com",
	"fay@fabrikam.example", // Microsoft 365 tenant
	"gus@globex.example",   // corporate, greylists first attempts
	"hal@smallshop.example",
	"ivy@nullmx.example", // RFC 7505 null MX
	"jon@gone.example",   // NXDOMAIN
}

func runPlatform(ctx context.Context, o options, getenv func(string) string, stdout, stderr io.Writer) error {
	level, err := service.ParseLevel(o.logLevel)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	prof, err := loadProfile(o.profile)
	if err != nil {
		return err
	}
	sim, err := ispsim.Start(ctx, prof, ispsim.WithLogger(logger.With("component", "ispsim")))
	if err != nil {
		return err
	}
	defer sim.Close()
	for i, ip := range sourceIPs {
		addr := netip.MustParseAddr(ip)
		sim.DNS().SetA(heloNames[i], addr)
		sim.DNS().SetPTR(addr, heloNames[i])
	}
	st, err := stack.Start(ctx, stack.Options{
		DataDir:   o.dataDir,
		NATSURL:   getenv("NATS_URL"),
		RedisURL:  getenv("REDIS_URL"),
		DNSServer: sim.DNSAddr(),
		SMTPPort:  sim.SMTPPort(),
		SourceIPs: sourceIPs,
		HeloNames: heloNames,
		Logger:    logger,
		// fbl-parser reads the simulator's feedback mailboxes, and acts on
		// the reports its providers mail, which they DKIM-sign.
		FeedbackMailboxes: simMailboxes(sim),
		TuneFBL:           func(c *fblparser.Config) { c.Reporters = simReporters(sim) },
	})
	if err != nil {
		return err
	}
	// DSNs the simulator sends to return paths reach inbound-dsn, and
	// complaints it sends by SMTP reach fbl-parser.
	if err := sim.SetRoute(stack.DefaultBounceDomain, st.InboundDSN); err != nil {
		_ = st.Stop()
		return err
	}
	if err := sim.SetRoute(domainOf(stack.DefaultFBLAddress), st.FBL); err != nil {
		_ = st.Stop()
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "stopping: draining the services")
		if err := st.Stop(); err != nil {
			fmt.Fprintln(stderr, "devstack:", err)
		}
	}()
	simHTTP, err := serveSim(ctx, sim)
	if err != nil {
		return err
	}
	printWhere(stdout, st, sim, simHTTP, filepath.Clean(o.dataDir), getenv("NATS_URL") != "")

	if o.demo {
		if err := runDemo(ctx, stdout, st, sim, o.timeout); err != nil {
			return err
		}
	}
	if o.exit {
		return nil
	}
	fmt.Fprintln(stdout, "\nMailwave is running. Press Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}

// simMailboxes are the simulator's feedback mailboxes, one per IMAP user
// of its profile, trusted: the simulator's providers are the feedback
// loops this platform enrolled in. (Its SMTP complaints carry no DKIM
// signature, so they stay in quarantine.)
func simMailboxes(sim *ispsim.Sim) []fblparser.Mailbox {
	host, port, err := net.SplitHostPort(sim.IMAPAddr())
	if err != nil {
		return nil
	}
	p, _ := strconv.Atoi(port)
	var out []fblparser.Mailbox
	for i, u := range sim.Profile().IMAP.Users {
		out = append(out, fblparser.Mailbox{Name: fmt.Sprintf("ispsim-%d", i+1), Host: host, Port: p,
			TLS: fblparser.TLSNone, Username: u.Username, Password: u.Password, Trusted: true})
	}
	return out
}

// simReporters are the domains the simulator's providers mail their
// complaint reports from.
func simReporters(sim *ispsim.Sim) []string {
	var out []string
	for _, p := range sim.Profile().Providers {
		c := p.Complaints
		if c.Delivery == ispsim.DeliverySMTP && strings.Contains(c.From, "@") && !slices.Contains(out, domainOf(c.From)) {
			out = append(out, domainOf(c.From))
		}
	}
	return out
}

func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

func loadProfile(path string) (*ispsim.Profile, error) {
	if path == "" {
		return ispsim.DefaultProfile()
	}
	return ispsim.LoadProfile(path)
}

// serveSim serves the simulator's ledger (JSON) and metrics.
func serveSim(ctx context.Context, sim *ispsim.Sim) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return l.Addr().String(), nil
}

func printWhere(w io.Writer, st *stack.Stack, sim *ispsim.Sim, simHTTP, dataDir string, externalNATS bool) {
	fmt.Fprintln(w, "Mailwave development stack")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	store := "embedded, data in " + dataDir
	if externalNATS {
		store = "external"
	}
	fmt.Fprintf(tw, "  NATS\t%s\t(%s)\n", st.NATSURL, store)
	fmt.Fprintf(tw, "  Redis\t%s\t(%s)\n", st.RedisURL, st.RedisKind)
	names := make([]string, 0, len(st.HTTP))
	for n := range st.HTTP {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(tw, "  %s\thttp://%s\t/healthz /readyz /metrics\n", n, st.HTTP[n])
	}
	fmt.Fprintf(tw, "  inbound-dsn SMTP\t%s\t(%s)\n", st.InboundDSN, stack.DefaultBounceDomain)
	fmt.Fprintf(tw, "  fbl-parser SMTP\t%s\t(%s; reads the simulator's IMAP mailbox)\n", st.FBL, stack.DefaultFBLAddress)
	fmt.Fprintf(tw, "  simulator DNS\t%s\n", sim.DNSAddr())
	fmt.Fprintf(tw, "  simulator SMTP\tport %d on each provider address\n", sim.SMTPPort())
	fmt.Fprintf(tw, "  simulator IMAP\t%s\n", sim.IMAPAddr())
	fmt.Fprintf(tw, "  simulator ledger\thttp://%s/\n", simHTTP)
	_ = tw.Flush()
}

// runDemo sends the demo batch and prints each recipient's outcome once it
// is final or deferred, then the simulator's tally per provider.
func runDemo(ctx context.Context, w io.Writer, st *stack.Stack, sim *ispsim.Sim, timeout time.Duration) error {
	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	cl, err := client.New(nc)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	rcpts := make([]*mailwavev1.Recipient, len(demo))
	for i, a := range demo {
		rcpts[i] = &mailwavev1.Recipient{Address: a, Vars: map[string]string{"name": strings.SplitN(a, "@", 2)[0]}}
	}
	since := time.Now().Add(-time.Second)
	if _, err := cl.Send(ctx, &mailwavev1.SendRequest{
		IdempotencyKey: key, Tenant: "demo", Brand: "mailwave", MailStream: "newsletter",
		Priority:   mailwavev1.Priority_PRIORITY_BULK,
		Recipients: rcpts,
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Mailwave Demo <news@mailwave.test>", Subject: "Hello {{.name}}",
			Text: "Hello {{.name}},\n\nthis is the Mailwave demo batch.\n",
			Html: "<p>Hello {{.name}},</p><p>this is the Mailwave demo batch.</p>",
		}},
	}); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nsent the demo batch %q: %d recipients; waiting for their outcomes\n", key, len(demo))
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	latest := map[string]*mailwavev1.DeliveryEvent{}
	settled := func() bool {
		for _, a := range demo {
			ev := latest[a]
			if ev == nil || !(client.IsTerminal(ev.GetKind()) || ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_DEFERRED) {
				return false
			}
		}
		return true
	}
	for ev, err := range cl.Events(dctx, "demo", key, since) {
		if err != nil {
			return err
		}
		if prev := latest[ev.GetRecipient()]; prev != nil && client.IsTerminal(prev.GetKind()) {
			continue
		}
		latest[ev.GetRecipient()] = ev
		if settled() {
			break
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\n  RECIPIENT\tOUTCOME\tPROVIDER\tSOURCE IP\tREPLY")
	for _, a := range demo {
		ev := latest[a]
		if ev == nil {
			fmt.Fprintf(tw, "  %s\t(no outcome yet)\t\t\t\n", a)
			continue
		}
		outcome := mailwavev1.EventKindWord(ev.GetKind())
		if ev.GetReason() != "" {
			outcome += " (" + ev.GetReason() + ")"
		}
		if ev.GetKind() == mailwavev1.EventKind_EVENT_KIND_DEFERRED && ev.GetNextAttemptAt() != nil {
			outcome += ", retry " + ev.GetNextAttemptAt().AsTime().Local().Format("15:04:05")
		}
		reply := ev.GetResponse()
		if ev.GetSmtpCode() != 0 {
			reply = fmt.Sprintf("%d %s %s", ev.GetSmtpCode(), ev.GetEnhancedCode(), ev.GetResponse())
		}
		if i := strings.IndexByte(reply, '\n'); i >= 0 {
			reply = reply[:i] + " …"
		}
		if len(reply) > 90 {
			reply = reply[:89] + "…"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", a, outcome, ev.GetProvider(), ev.GetSourceIp(), reply)
	}
	_ = tw.Flush()
	printProviders(w, sim)
	return nil
}

// printProviders prints the simulator's tally per provider: what each one
// accepted, deferred and rejected, from which source IP.
func printProviders(w io.Writer, sim *ispsim.Sim) {
	snap := sim.Ledger().Snapshot()
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\n  PROVIDER\tSOURCE IP\tCONNECTIONS\tACCEPTED\tDEFERRED\tREJECTED")
	counters := append([]ispsim.Counter(nil), snap.Counters...)
	sort.Slice(counters, func(i, j int) bool {
		if counters[i].Provider != counters[j].Provider {
			return counters[i].Provider < counters[j].Provider
		}
		return counters[i].SourceIP.Less(counters[j].SourceIP)
	})
	for _, c := range counters {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\n", c.Provider, c.SourceIP, c.Connections, c.Accepted, c.Deferred, c.Rejected)
	}
	_ = tw.Flush()
}
