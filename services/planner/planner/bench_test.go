package planner

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailwave/mailwave/pkg/service"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// BenchmarkAudienceExpansion expands a stored audience of 1,000,000
// recipients (NDJSON in the JetStream object store of a real NATS server,
// read chunk by chunk) with the suppression checks of every recipient
// (global, brand and communication type, against a mirror of 100,000
// suppressions) and the per-provider count that sizes waves: the first
// pass over a campaign. It reports recipients per second.
//
//	go test -run '^$' -bench AudienceExpansion -benchtime 3x ./services/planner/planner/
func BenchmarkAudienceExpansion(b *testing.B) {
	const (
		recipients   = 1_000_000
		suppressed   = 100_000
		everySupress = recipients / suppressed
	)
	ns := testenv.NATS(b)
	_, js := testenv.JetStream(b, ns)
	ctx := testenv.Context(b)
	domains := []string{"gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "globex.example", "aol.com", "icloud.com", "web.de"}
	var aud bytes.Buffer
	aud.Grow(recipients * 80)
	for i := range recipients {
		fmt.Fprintf(&aud, `{"address":"reader%d@%s","vars":{"name":"Reader %d","city":"Springfield"}}`+"\n", i, domains[i%len(domains)], i)
	}
	store, err := js.ObjectStore(ctx, mailwavev1.ObjectStoreAudiences)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: "million.ndjson"}, bytes.NewReader(aud.Bytes())); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	sup := newSuppressions(nil, nil, log)
	req := &mailwavev1.SendRequest{IdempotencyKey: "bench", Tenant: "acme", Brand: "shop", CommunicationType: "weekly",
		Audience: &mailwavev1.AudienceRef{Object: "million.ndjson", Format: mailwavev1.AudienceFormat_AUDIENCE_FORMAT_NDJSON}}
	scopes := []mailwavev1.SuppressionScope{mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL,
		mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE}
	for i := 0; i < recipients; i += everySupress {
		addr := fmt.Sprintf("reader%d@%s", i, domains[i%len(domains)])
		scope := scopes[(i/everySupress)%3]
		sup.put(mailwavev1.SuppressionKey(scope, "acme", "shop", "weekly", addr), &mailwavev1.Suppression{Reason: "manual", Scope: scope})
	}
	provs, err := newProviders("none", log)
	if err != nil {
		b.Fatal(err)
	}
	p := &planner{rt: &service.Runtime{JS: js}, log: log, suppress: sup, provs: provs}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		r := &request{req: req, counts: map[string]int{}}
		if err := p.count(ctx, r); err != nil {
			b.Fatal(err)
		}
		total := 0
		for _, n := range r.counts {
			total += n
		}
		if total != recipients-suppressed {
			b.Fatalf("%d recipients to plan, want %d", total, recipients-suppressed)
		}
	}
	b.ReportMetric(float64(recipients*b.N)/time.Since(start).Seconds(), "recipients/s")
}
