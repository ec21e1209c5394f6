package service_test

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// TestCatalog lists vectors without series, which a scrape leaves out,
// with their types and labels; it also pins the descriptor format the
// catalog reads.
func TestCatalog(t *testing.T) {
	reg := service.NewRegistry()
	empty := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_attempts_total", Help: `odd "help", {with} braces`,
		ConstLabels: prometheus.Labels{"zone": `a,"b"}`}}, []string{"outcome", "provider"})
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "t_seconds", Help: "h"}, []string{"provider"})
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_known", Help: "g"})
	single := prometheus.NewSummary(prometheus.SummaryOpts{Name: "t_size", Help: "s"})
	constrained := prometheus.V2.NewCounterVec(prometheus.CounterVecOpts{
		CounterOpts:    prometheus.CounterOpts{Name: "t_constrained_total", Help: "c"},
		VariableLabels: prometheus.ConstrainedLabels{{Name: "kind", Constraint: func(s string) string { return s }}},
	})
	reg.MustRegister(empty, hist, gauge, single, constrained)
	gone := prometheus.NewCounter(prometheus.CounterOpts{Name: "t_gone_total", Help: "x"})
	reg.MustRegister(gone)
	reg.Unregister(gone)
	if err := reg.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "t_known", Help: "dup"})); err == nil {
		t.Fatal("a duplicate registration was accepted")
	}

	got, err := reg.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	want := []service.MetricDesc{
		{Name: "t_attempts_total", Help: `odd "help", {with} braces`, Type: "counter", Labels: []string{"outcome", "provider", "zone"}},
		{Name: "t_constrained_total", Help: "c", Type: "counter", Labels: []string{"kind"}},
		{Name: "t_known", Help: "g", Type: "gauge"},
		{Name: "t_seconds", Help: "h", Type: "histogram", Labels: []string{"provider"}},
		{Name: "t_size", Help: "s", Type: "summary"},
	}
	if len(got) != len(want) {
		t.Fatalf("catalog = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Help != w.Help || g.Type != w.Type || !slices.Equal(g.Labels, w.Labels) {
			t.Errorf("catalog[%d] = %+v, want %+v", i, g, w)
		}
	}
	if s := got[3].Series(); !slices.Equal(s, []string{"t_seconds_bucket", "t_seconds_sum", "t_seconds_count"}) {
		t.Errorf("histogram series %v", s)
	}
	// The wrapped registry still serves what was registered.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 2 { // t_known and t_size have a series; the vectors have none
		t.Errorf("gathered %d families, want 2", len(mfs))
	}
}

// TestQueueMetrics: a service's /metrics reports the backlog of the
// consumers it owns, and only those.
func TestQueueMetrics(t *testing.T) {
	ns := testenv.NATS(t)
	ctx := testenv.Context(t)
	c := service.Common{NATSURL: ns.ClientURL(), RedisURL: "redis://127.0.0.1:1/0", Replicas: 1}
	rt, err := service.Open(ctx, "sender", c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)

	scrape := func() map[string]map[string]float64 {
		t.Helper()
		mfs, err := rt.Metrics.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]map[string]float64{}
		for _, mf := range mfs {
			out[mf.GetName()] = map[string]float64{}
			for _, m := range mf.GetMetric() {
				out[mf.GetName()][labelsOf(m)] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	// The sender owns its two consumers: bulk and the transactional lane.
	const key, txKey = "DISPATCH/sender", "DISPATCH/sender-transactional"
	if got := scrape()["mailwave_queue_pending"]; len(got) != 2 || got[key] != 0 || got[txKey] != 0 {
		t.Fatalf("empty queue: pending = %v, want only %s = 0 and %s = 0", got, key, txKey)
	}

	for i := range 3 {
		if _, err := rt.Pub.Publish(ctx, "mail.dispatch.default.example_com", &mailwavev1.DispatchMessage{MessageId: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A retry parked outside the sender's filter is not its backlog.
	if _, err := rt.Pub.Publish(ctx, mailwavev1.SubjectRetry("r1"), &mailwavev1.DispatchMessage{MessageId: "r1"}); err != nil {
		t.Fatal(err)
	}
	st, err := rt.JS.Stream(ctx, mailwavev1.StreamDispatch)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := rt.JS.Consumer(ctx, mailwavev1.StreamDispatch, mailwavev1.ConsumerSender)
	if err != nil {
		t.Fatal(err)
	}
	// One message out for delivery, two waiting.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var fetched jetstream.Msg
	for m := range batch.Messages() {
		fetched = m
	}
	if fetched == nil {
		t.Fatal("nothing fetched")
	}
	before := time.Now()
	got := scrape()
	after := time.Now()
	if p, u := got["mailwave_queue_pending"][key], got["mailwave_queue_unacked"][key]; p != 2 || u != 1 {
		t.Fatalf("pending %v, unacked %v; want 2 and 1", p, u)
	}
	age := got["mailwave_queue_oldest_seconds"][key]
	if lo, hi := before.Sub(first.Time).Seconds(), after.Sub(first.Time).Seconds(); age < lo || age > hi {
		t.Fatalf("oldest age %.3fs, want between %.3fs and %.3fs", age, lo, hi)
	}

	// Acknowledged, the first message no longer counts: the oldest is now
	// the second one.
	if err := fetched.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := st.GetMsg(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	got = scrape()
	if age2 := got["mailwave_queue_oldest_seconds"][key]; age2 > time.Since(second.Time).Seconds() || got["mailwave_queue_unacked"][key] != 0 {
		t.Fatalf("after the ack: oldest %.3fs (second message is %.3fs old), unacked %v",
			age2, time.Since(second.Time).Seconds(), got["mailwave_queue_unacked"][key])
	}

	// The planner owns three consumers, the sender's are not among them.
	prt, err := service.Open(ctx, "planner", c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prt.Close)
	mfs, err := prt.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var owned []string
	for _, mf := range mfs {
		if mf.GetName() == "mailwave_queue_pending" {
			for _, m := range mf.GetMetric() {
				owned = append(owned, labelsOf(m))
			}
		}
	}
	slices.Sort(owned)
	if want := []string{"EVENTS/planner-events", "SEND/planner", "SEND/planner-transactional"}; !slices.Equal(owned, want) {
		t.Fatalf("planner reports %v, want %v", owned, want)
	}
}

func labelsOf(m *dto.Metric) string {
	var stream, consumer string
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "stream":
			stream = l.GetValue()
		case "consumer":
			consumer = l.GetValue()
		}
	}
	return stream + "/" + consumer
}
