package service

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailwave/mailwave/pkg/events"
)

// queueCollector exports, at each scrape, the backlog of the durable
// consumers a service reads: how many messages wait, how many are out
// for delivery, and how old the oldest unacknowledged one is. A service
// owns the consumers named after it ("sender") or prefixed with its name
// ("planner-events"), as the contract names them. Every replica exports
// the same values; dashboards take the max per stream and consumer.
type queueCollector struct {
	js        jetstream.JetStream
	log       *slog.Logger
	consumers []queueOf
	now       func() time.Time
	timeout   time.Duration

	pending, unacked, redelivered, oldest *prometheus.Desc
}

type queueOf struct{ stream, consumer string }

func newQueueCollector(js jetstream.JetStream, service string, consumers map[string]events.ConsumerSpec, log *slog.Logger) *queueCollector {
	labels := []string{"stream", "consumer"}
	c := &queueCollector{
		js: js, log: log, now: time.Now, timeout: 5 * time.Second,
		pending: prometheus.NewDesc("mailwave_queue_pending",
			"Messages of the stream the consumer has not handed to any replica yet.", labels, nil),
		unacked: prometheus.NewDesc("mailwave_queue_unacked",
			"Messages handed to a replica and not acknowledged yet: in delivery, or waiting to be redelivered.", labels, nil),
		redelivered: prometheus.NewDesc("mailwave_queue_redelivered",
			"Unacknowledged messages that were delivered more than once (a replica died, timed out or asked to retry).", labels, nil),
		oldest: prometheus.NewDesc("mailwave_queue_oldest_seconds",
			"Age of the oldest message the consumer has not acknowledged; 0 when none waits.", labels, nil),
	}
	for name, spec := range consumers {
		if name == service || strings.HasPrefix(name, service+"-") {
			c.consumers = append(c.consumers, queueOf{stream: spec.Stream, consumer: name})
		}
	}
	slices.SortFunc(c.consumers, func(a, b queueOf) int { return strings.Compare(a.consumer, b.consumer) })
	return c
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.unacked
	ch <- c.redelivered
	ch <- c.oldest
}

// Collect asks the server about each consumer. A consumer the server does
// not answer for is left out of this scrape rather than reported as empty.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, q := range c.consumers {
		info, age, err := c.inspect(ctx, q)
		if err != nil {
			c.log.Debug("queue metrics unavailable", "stream", q.stream, "consumer", q.consumer, "err", err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), q.stream, q.consumer)
		ch <- prometheus.MustNewConstMetric(c.unacked, prometheus.GaugeValue, float64(info.NumAckPending), q.stream, q.consumer)
		ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(info.NumRedelivered), q.stream, q.consumer)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age.Seconds(), q.stream, q.consumer)
	}
}

// inspect returns the consumer's state and the age of its oldest
// unacknowledged message: the first message after the ack floor that
// matches one of the consumer's filters.
func (c *queueCollector) inspect(ctx context.Context, q queueOf) (*jetstream.ConsumerInfo, time.Duration, error) {
	cons, err := c.js.Consumer(ctx, q.stream, q.consumer)
	if err != nil {
		return nil, 0, err
	}
	info := cons.CachedInfo()
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return info, 0, nil
	}
	st, err := c.js.Stream(ctx, q.stream)
	if err != nil {
		return nil, 0, err
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	var first time.Time
	for _, f := range filters {
		m, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(f))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		if first.IsZero() || m.Time.Before(first) {
			first = m.Time
		}
	}
	if first.IsZero() {
		return info, 0, nil
	}
	return info, max(c.now().Sub(first), 0), nil
}
