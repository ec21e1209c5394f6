// Package warmup ramps up the volume a new sending IP or sending domain
// may send to each mailbox provider, one day at a time, as mailbox
// providers expect of a sender without a reputation: too much mail from an
// unknown IP is deferred, filtered or blocked.
//
// A Schedule lists the daily caps of the ramp; the default is the one
// deliverability teams use for a dedicated IP (1,000 a day for 5 days,
// 2,000 for 3, 5,000 for 2, then 10,000 rising by 4,000 a day) until the
// cap reaches the schedule's end, when the subject counts as warm and is no
// longer capped. The ramp adapts to what the reputation monitor decided
// (Signal, read from the policy bucket): a pause steps it back one level, a
// throttle holds it, and a clean day that used most of its cap advances it
// faster than the calendar.
//
// Ramp keeps the position of every (subject, provider) and the volume of
// each day in Redis, so every planner replica enforces the same caps, and
// takes the current time as an argument, so tests run weeks in seconds.
// Days are UTC calendar days.
package warmup

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalid wraps every schedule validation error; the message names the
// field.
var ErrInvalid = errors.New("warmup: invalid schedule")

// Level is a stretch of days with one daily cap.
type Level struct {
	Days   int   `yaml:"days"`
	PerDay int64 `yaml:"per_day"`
}

// Growth is the ramp after the levels: PerDay on its first day, Increase
// more each day after, until the cap reaches Until and the subject is warm.
type Growth struct {
	PerDay   int64 `yaml:"per_day"`
	Increase int64 `yaml:"increase"`
	Until    int64 `yaml:"until"`
}

// Schedule is a warm-up ramp. Day 0 is the first day a subject sends.
type Schedule struct {
	Levels []Level `yaml:"levels"`
	Then   Growth  `yaml:"then"`
	// FastShare and FastStep: a clean day on which the subject used at
	// least FastShare of its cap advances the ramp FastStep days instead
	// of one.
	FastShare float64 `yaml:"fast_share"`
	FastStep  int     `yaml:"fast_step"`
}

// Default is the shipped schedule: 1,000 a day for 5 days, 2,000 for 3,
// 5,000 for 2, then 10,000 rising by 4,000 a day until 100,000, when the
// subject is warm. A clean day that used 90 % of its cap advances two
// days.
func Default() Schedule {
	return Schedule{
		Levels:    []Level{{Days: 5, PerDay: 1000}, {Days: 3, PerDay: 2000}, {Days: 2, PerDay: 5000}},
		Then:      Growth{PerDay: 10000, Increase: 4000, Until: 100000},
		FastShare: 0.9,
		FastStep:  2,
	}
}

// Validate checks the schedule; errors wrap ErrInvalid and name the field
// under path (for example "warmup.levels[1].per_day").
func (s *Schedule) Validate(path string) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrInvalid, path, field, fmt.Sprintf(format, args...))
	}
	var prev int64
	for i, l := range s.Levels {
		if l.Days < 1 {
			return bad(fmt.Sprintf("levels[%d].days", i), "must be at least 1, got %d", l.Days)
		}
		if l.PerDay < 1 {
			return bad(fmt.Sprintf("levels[%d].per_day", i), "must be at least 1, got %d", l.PerDay)
		}
		if l.PerDay < prev {
			return bad(fmt.Sprintf("levels[%d].per_day", i), "a ramp never goes down: %d after %d", l.PerDay, prev)
		}
		prev = l.PerDay
	}
	if s.Then.PerDay < max(prev, 1) {
		return bad("then.per_day", "must be at least %d (the last level), got %d", max(prev, 1), s.Then.PerDay)
	}
	if s.Then.Increase < 0 {
		return bad("then.increase", "must not be negative, got %d", s.Then.Increase)
	}
	if s.Then.Until < s.Then.PerDay {
		return bad("then.until", "must be at least then.per_day (%d), got %d", s.Then.PerDay, s.Then.Until)
	}
	if s.Then.Increase == 0 && s.Then.Until > s.Then.PerDay {
		return bad("then.increase", "must be above 0 for the cap to reach then.until")
	}
	if !(s.FastShare > 0 && s.FastShare <= 1) {
		return bad("fast_share", "must be above 0 and at most 1, got %g", s.FastShare)
	}
	if s.FastStep < 1 {
		return bad("fast_step", "must be at least 1, got %d", s.FastStep)
	}
	return nil
}

// levelDays is the number of days the fixed levels last.
func (s *Schedule) levelDays() int {
	n := 0
	for _, l := range s.Levels {
		n += l.Days
	}
	return n
}

// Cap returns the daily cap on ramp day (0 for the first day), and warm
// when the ramp is over and nothing is capped.
func (s *Schedule) Cap(day int) (cap int64, warm bool) {
	day = max(day, 0)
	for _, l := range s.Levels {
		if day < l.Days {
			return l.PerDay, false
		}
		day -= l.Days
	}
	c := s.Then.PerDay + int64(day)*s.Then.Increase
	if c >= s.Then.Until {
		return 0, true
	}
	return c, false
}

// WarmDay is the first ramp day on which the subject is warm.
func (s *Schedule) WarmDay() int {
	d := s.levelDays()
	if s.Then.Increase <= 0 {
		return d
	}
	return d + int((s.Then.Until-s.Then.PerDay+s.Then.Increase-1)/s.Then.Increase)
}

// levelStart returns the first ramp day of the level day is in; each day
// of the growth phase is a level of its own.
func (s *Schedule) levelStart(day int) int {
	start := 0
	for _, l := range s.Levels {
		if day < start+l.Days {
			return start
		}
		start += l.Days
	}
	return day
}

// Signal is what the reputation monitor decided about a subject during a
// day: the worst policy in force at any moment of it.
type Signal int

// Signals, from best to worst.
const (
	// Clean: no throttle or pause.
	Clean Signal = iota
	// Throttled: a throttle or a pinned rate was in force.
	Throttled
	// Paused: a pause was in force.
	Paused
)

func (s Signal) String() string {
	switch s {
	case Throttled:
		return "throttled"
	case Paused:
		return "paused"
	default:
		return "clean"
	}
}

// Next returns the ramp day that follows day after a sending day with
// signal sig on which the subject used share of its cap (0..1):
//
//   - paused: back to the first day of the previous level (the last fixed
//     level's start, or the day before, in the growth phase);
//   - throttled: the same day again (the ramp holds);
//   - clean, with at least FastShare of the cap used: FastStep days on;
//   - clean otherwise: the next day.
func (s *Schedule) Next(day int, sig Signal, share float64) int {
	day = max(day, 0)
	switch sig {
	case Paused:
		start := s.levelStart(day)
		if start == 0 {
			return 0
		}
		return s.levelStart(start - 1)
	case Throttled:
		return day
	}
	if share >= s.FastShare {
		return day + s.FastStep
	}
	return day + 1
}

// DayOf returns the UTC day number of t (days since 1970-01-01), the unit
// of the ramp's calendar.
func DayOf(t time.Time) int64 { return t.Unix() / 86400 }

// DayStart returns the first instant of UTC day d.
func DayStart(d int64) time.Time { return time.Unix(d*86400, 0).UTC() }
