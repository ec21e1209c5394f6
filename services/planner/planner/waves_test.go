package planner_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/services/planner/planner"
)

// shapingFile writes a shaping policy that lets 3 messages a second reach
// every provider from each IP.
func shapingFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shaping.yaml")
	err := os.WriteFile(p, []byte("providers:\n  default: {messages_per_second: 3, messages_per_minute: 180, messages_per_hour: 10800}\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A campaign with a send window is released per provider in waves: each
// provider's recipients spread evenly over the window, no wave holding
// more than shaping allows in one interval, the later waves waiting as
// JetStream message schedules that move to the dispatch subject when due.
// Two campaigns on one IP share the waves' room.
func TestWavesSpreadEachProviderOverTheWindow(t *testing.T) {
	t.Parallel()
	h := start(t, func(c *planner.Config) {
		withShop(t)(c)
		c.ShapingFile = shapingFile(t)
		c.WaveInterval = time.Second
	})
	// 40 recipients at each of two providers over 20 s: 2 per second per
	// provider, within the capacity of 3.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/wave-a", Tenant: "acme", Brand: "shop", MailStream: "waves",
		CampaignId: "wave-a", SendWindow: durationpb.New(20 * time.Second),
		Recipients: numbered(80, "gmail.com", "yahoo.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	evs := h.outcomes("acme/wave-a", 80)
	first := time.Time{}
	byWave := map[string]map[int64]int{}
	for _, ev := range evs {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_ACCEPTED {
			t.Fatalf("%v %s", ev.GetKind(), ev.GetReason())
		}
		at := ev.GetCreatedAt().AsTime()
		if ev.GetNextAttemptAt() != nil {
			at = ev.GetNextAttemptAt().AsTime()
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if byWave[ev.GetProvider()] == nil {
			byWave[ev.GetProvider()] = map[int64]int{}
		}
		byWave[ev.GetProvider()][at.Unix()]++
	}
	for prov, waves := range byWave {
		secs := make([]int64, 0, len(waves))
		for s, n := range waves {
			secs = append(secs, s)
			if n > 3 {
				t.Errorf("%s: %d in the wave at %d, more than shaping's 3", prov, n, s)
			}
		}
		sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
		// 40 spread over 20 s: about 20 waves, none far beyond the window.
		if len(secs) < 15 || secs[len(secs)-1]-secs[0] > 21 {
			t.Errorf("%s: %d waves from %d to %d: %v", prov, len(secs), secs[0], secs[len(secs)-1], waves)
		}
	}
	// The later waves wait as schedules that target the dispatch subject
	// (those whose wave has come already are on it, with their not_before
	// past the first wave's).
	scheduled := map[string]bool{}
	for _, s := range h.dispatches() {
		switch {
		case strings.HasPrefix(s.subject, "mail.retry."):
			scheduled[s.d.GetMessageId()] = true
			if !strings.HasPrefix(s.schedule, "@at ") || !strings.HasPrefix(s.target, "mail.dispatch.waves.") || s.d.GetNotBefore() == nil {
				t.Errorf("schedule %s %q → %q", s.subject, s.schedule, s.target)
			}
		case s.d.GetNotBefore() != nil && s.d.GetNotBefore().AsTime().After(first.Add(time.Second)):
			scheduled[s.d.GetMessageId()] = true
		}
	}
	if len(scheduled) < 60 {
		t.Errorf("%d of 80 wait for a later wave", len(scheduled))
	}
	// Schedules fire: scheduled messages reach the dispatch subject as
	// their waves come.
	fired := map[string]bool{}
	testenv.Eventually(t, 15*time.Second, func() bool {
		for _, s := range h.dispatches() {
			if strings.HasPrefix(s.subject, "mail.dispatch.waves.") && scheduled[s.d.GetMessageId()] {
				fired[s.d.GetMessageId()] = true
			}
		}
		return len(fired) >= 6
	}, "no scheduled wave reached the dispatch subject")

	// A second campaign on the same IP now: together, no wave to a
	// provider holds more than 3.
	h.send(&mailwavev1.SendRequest{IdempotencyKey: "acme/wave-b", Tenant: "acme", Brand: "shop", MailStream: "waves",
		SendWindow: durationpb.New(10 * time.Second),
		Recipients: numbered(30, "gmail.com"), Content: template("Shop <news@news.shop.test>", compliantText, "")})
	h.outcomes("acme/wave-b", 30)
	// A schedule that fires while the stream is read moves to a sequence
	// past the end of that read: gather the ids over several reads.
	all := map[int64]int{}
	seen := map[string]bool{}
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, s := range h.dispatches() {
			if s.d.GetRouting().GetRecipientDomain() == "gmail.com" && s.d.GetNotBefore() != nil && !seen[s.d.GetMessageId()] {
				seen[s.d.GetMessageId()] = true
				all[s.d.GetNotBefore().AsTime().Unix()]++
			}
		}
		return len(seen) >= 70
	}, "not every gmail.com dispatch was found")
	if len(seen) != 70 {
		t.Errorf("%d gmail.com dispatches, want 70", len(seen))
	}
	for sec, n := range all {
		if n > 3 {
			t.Errorf("two campaigns put %d into the wave at %d", n, sec)
		}
	}
}
