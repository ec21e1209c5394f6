package reputation_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 30, 0, time.UTC)

func TestWindowsSlide(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	st := &reputation.Store{Redis: rdb, Prefix: "t:"}
	sc := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "google"}
	rec := func(id string, at time.Time, counts map[string]int64) {
		t.Helper()
		if _, err := st.Record(ctx, id, []reputation.Scope{sc}, counts, at); err != nil {
			t.Fatal(err)
		}
	}
	rec("a", t0.Add(-20*time.Minute), map[string]int64{reputation.Delivered: 10})
	rec("b", t0.Add(-5*time.Minute), map[string]int64{reputation.Delivered: 5, reputation.Complained: 1})
	rec("c", t0.Add(-3*time.Hour), map[string]int64{reputation.Delivered: 100})
	rec("d", t0.Add(-3*24*time.Hour), map[string]int64{reputation.Delivered: 1000})
	rec("e", t0.Add(-8*24*time.Hour), map[string]int64{reputation.Delivered: 9999})
	// The same event id again counts nothing.
	if added, err := st.Record(ctx, "b", []reputation.Scope{sc}, map[string]int64{reputation.Delivered: 5}, t0); err != nil || added {
		t.Fatalf("duplicate added=%v err=%v", added, err)
	}
	got, err := st.Read(ctx, sc, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		window           string
		delivered, compl int64
	}{
		{"15m", 5, 1},
		{"1h", 15, 1},
		{"24h", 115, 1},
		{"7d", 1115, 1},
	} {
		c := got[tc.window]
		if c[reputation.Delivered] != tc.delivered || c[reputation.Complained] != tc.compl {
			t.Errorf("%s: delivered %d complained %d, want %d %d", tc.window, c[reputation.Delivered], c[reputation.Complained], tc.delivered, tc.compl)
		}
	}
	// Twenty minutes later the 15-minute window is empty.
	later, err := st.Read(ctx, sc, t0.Add(20*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n := later["15m"][reputation.Delivered]; n != 0 {
		t.Errorf("15m after 20 minutes: %d", n)
	}
	scopes, err := st.Scopes(ctx, t0.Add(-time.Hour), 10)
	if err != nil || len(scopes) != 1 || scopes[0] != sc {
		t.Fatalf("scopes %v %v", scopes, err)
	}
}

// A batch counts what the same events counted one by one would: each
// event id once (also twice in one batch), events without an id every
// time, each in the windows of its own instant, and no counts for an
// event with nothing to count.
func TestRecordBatchCountsAsOneByOne(t *testing.T) {
	rdb, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	one := &reputation.Store{Redis: rdb, Prefix: "one:"}
	many := &reputation.Store{Redis: rdb, Prefix: "many:"}
	ip := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "127_0_0_3", Provider: "google"}
	tenant := reputation.Scope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "_"}
	entries := []reputation.Entry{
		{EventID: "a", Scopes: []reputation.Scope{ip, tenant}, Counts: map[string]int64{reputation.Delivered: 1}, At: t0},
		{EventID: "b", Scopes: []reputation.Scope{ip}, Counts: map[string]int64{reputation.Deferred: 1, reputation.Blocked: 1}, At: t0.Add(-10 * time.Minute)},
		{EventID: "a", Scopes: []reputation.Scope{ip, tenant}, Counts: map[string]int64{reputation.Delivered: 1}, At: t0},
		{EventID: "", Scopes: []reputation.Scope{tenant}, Counts: map[string]int64{reputation.Complained: 1}, At: t0.Add(-2 * time.Hour)},
		{EventID: "", Scopes: []reputation.Scope{tenant}, Counts: map[string]int64{reputation.Complained: 1}, At: t0.Add(-2 * time.Hour)},
		{EventID: "c", Scopes: []reputation.Scope{ip}, Counts: nil, At: t0},
		{EventID: "d", Scopes: []reputation.Scope{ip, tenant}, Counts: map[string]int64{reputation.Delivered: 3}, At: t0.Add(-3 * 24 * time.Hour)},
	}
	want := []bool{true, true, false, true, true, false, true}
	for i, e := range entries {
		added, err := one.Record(ctx, e.EventID, e.Scopes, e.Counts, e.At)
		if err != nil || added != want[i] {
			t.Fatalf("one by one, entry %d: added %v err %v, want %v", i, added, err, want[i])
		}
	}
	got, err := many.RecordBatch(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("batch, entry %d: added %v, want %v", i, got[i], want[i])
		}
	}
	// The batch again counts nothing but the events without an id.
	again, err := many.RecordBatch(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again) != fmt.Sprint([]bool{false, false, false, true, true, false, false}) {
		t.Errorf("batch again: %v", again)
	}
	if _, err := one.RecordBatch(ctx, entries[3:5]); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []reputation.Scope{ip, tenant} {
		a, err := one.Read(ctx, sc, t0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := many.Read(ctx, sc, t0)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: one by one %v, batch %v", sc, a, b)
		}
	}
	if c := a7d(t, many, tenant); c[reputation.Delivered] != 4 || c[reputation.Complained] != 4 {
		t.Errorf("tenant 7d: %v", c)
	}
	sa, _ := one.Scopes(ctx, t0.Add(-time.Hour), 10)
	sb, _ := many.Scopes(ctx, t0.Add(-time.Hour), 10)
	if len(sa) != 2 || fmt.Sprint(sa) != fmt.Sprint(sb) {
		t.Errorf("scopes one by one %v, batch %v", sa, sb)
	}
}

func a7d(t *testing.T, st *reputation.Store, sc reputation.Scope) reputation.Counts {
	t.Helper()
	w, err := st.Read(testenv.Context(t), sc, t0)
	if err != nil {
		t.Fatal(err)
	}
	return w["7d"]
}

func TestScopesAndCountsOfEvent(t *testing.T) {
	ev := &mailwavev1.DeliveryEvent{Kind: mailwavev1.EventKind_EVENT_KIND_DEFERRED, Tenant: "acme", Brand: "shop",
		CampaignId: "c1", SourceIp: "127.0.0.3", SendingDomain: "mailwave.test", Provider: "google",
		Signal: mailwavev1.Signal_SIGNAL_BLOCKED}
	c := reputation.CountsOf(ev)
	if c[reputation.Deferred] != 1 || c[reputation.Blocked] != 1 {
		t.Errorf("counts %v", c)
	}
	keys := map[string]bool{}
	for _, s := range reputation.ScopesOf(ev) {
		keys[s.Key()] = true
	}
	for _, k := range []string{"source_ip.127_0_0_3.google", "sending_domain.mailwave_test.google", "tenant.acme.google",
		"campaign.c1.google", "tenant.acme._", "brand.shop._", "campaign.c1._"} {
		if !keys[k] {
			t.Errorf("missing scope %s in %v", k, keys)
		}
	}
	if reputation.CountsOf(&mailwavev1.DeliveryEvent{Kind: mailwavev1.EventKind_EVENT_KIND_ACCEPTED}) != nil {
		t.Error("accepted counted")
	}
	hard := reputation.CountsOf(&mailwavev1.DeliveryEvent{Kind: mailwavev1.EventKind_EVENT_KIND_BOUNCED, BounceClass: mailwavev1.BounceClass_BOUNCE_CLASS_HARD})
	if hard[reputation.HardBounced] != 1 || hard[reputation.Blocked] != 0 {
		t.Errorf("hard %v", hard)
	}
}
