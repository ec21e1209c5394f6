package warmup_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/warmup"
)

func TestDefaultScheduleCaps(t *testing.T) {
	s := warmup.Default()
	if err := s.Validate("warmup"); err != nil {
		t.Fatal(err)
	}
	// 1,000 a day for 5 days, 2,000 for 3, 5,000 for 2, then 10,000
	// rising by 4,000 a day.
	want := []int64{1000, 1000, 1000, 1000, 1000, 2000, 2000, 2000, 5000, 5000, 10000, 14000, 18000}
	for day, w := range want {
		if c, warm := s.Cap(day); c != w || warm {
			t.Errorf("day %d: cap %d warm %v, want %d", day, c, warm, w)
		}
	}
	// 10,000 + 4,000·k reaches 100,000 at k = 23 (day 33).
	if d := s.WarmDay(); d != 33 {
		t.Errorf("warm day %d, want 33", d)
	}
	if c, warm := s.Cap(32); warm || c != 98000 {
		t.Errorf("day 32: %d %v", c, warm)
	}
	if _, warm := s.Cap(33); !warm {
		t.Error("day 33 is not warm")
	}
}

func TestNext(t *testing.T) {
	s := warmup.Default()
	for _, tc := range []struct {
		name  string
		day   int
		sig   warmup.Signal
		share float64
		want  int
	}{
		{"clean, little volume: the calendar", 0, warmup.Clean, 0.1, 1},
		{"clean, cap used: faster", 0, warmup.Clean, 0.95, 2},
		{"clean across a level", 4, warmup.Clean, 0.5, 5},
		{"throttled holds", 6, warmup.Throttled, 1, 6},
		{"paused in the first level stays at the start", 3, warmup.Paused, 1, 0},
		{"paused in the second level goes back to the first", 6, warmup.Paused, 1, 0},
		{"paused in the third level goes back to the second", 9, warmup.Paused, 0, 5},
		{"paused on the first growth day goes back to the last level", 10, warmup.Paused, 0, 8},
		{"paused in the growth phase goes back a day", 14, warmup.Paused, 0, 13},
	} {
		if got := s.Next(tc.day, tc.sig, tc.share); got != tc.want {
			t.Errorf("%s: Next(%d, %v, %g) = %d, want %d", tc.name, tc.day, tc.sig, tc.share, got, tc.want)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for want, mut := range map[string]func(*warmup.Schedule){
		"levels[0].days":    func(s *warmup.Schedule) { s.Levels[0].Days = 0 },
		"levels[1].per_day": func(s *warmup.Schedule) { s.Levels[1].PerDay = 10 },
		"then.per_day":      func(s *warmup.Schedule) { s.Then.PerDay = 100 },
		"then.until":        func(s *warmup.Schedule) { s.Then.Until = 1 },
		"then.increase":     func(s *warmup.Schedule) { s.Then.Increase = 0 },
		"fast_share":        func(s *warmup.Schedule) { s.FastShare = 1.5 },
		"fast_step":         func(s *warmup.Schedule) { s.FastStep = 0 },
	} {
		s := warmup.Default()
		mut(&s)
		err := s.Validate("pools.bulk.warmup")
		if !errors.Is(err, warmup.ErrInvalid) || !strings.Contains(err.Error(), "pools.bulk.warmup."+want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}
