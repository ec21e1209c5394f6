package warmup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kind says what a subject warms up.
type Kind string

// Subject kinds.
const (
	IP     Kind = "ip"
	Domain Kind = "domain"
)

// Subject is what a ramp applies to: an IP or a sending domain towards one
// mailbox provider.
type Subject struct {
	Kind Kind
	// ID is the IP address or the domain name.
	ID string
	// Provider is the provider key (a Redis-safe token, as mx.Token
	// gives).
	Provider string
}

func (s Subject) String() string { return string(s.Kind) + " " + s.ID + " at " + s.Provider }

// Signals tells what the reputation monitor decided about a subject
// between from and to.
type Signals interface {
	Signal(ctx context.Context, s Subject, from, to time.Time) (Signal, error)
}

// Ramp keeps warm-up positions and daily volumes in Redis. It is safe for
// concurrent use, and replicas sharing a Redis share every cap.
type Ramp struct {
	rdb     redis.UniversalClient
	prefix  string
	signals Signals
}

// NewRamp returns a Ramp on rdb. Keys start with prefix (default "mw:");
// signals may be nil (every day clean).
func NewRamp(rdb redis.UniversalClient, prefix string, signals Signals) *Ramp {
	if prefix == "" {
		prefix = "mw:"
	}
	return &Ramp{rdb: rdb, prefix: prefix, signals: signals}
}

// Request asks for volume on today's cap of a subject.
type Request struct {
	Subject  Subject
	Schedule *Schedule
	// N is the volume wanted.
	N int64
	// Force counts N whatever the cap (mail that must not wait, such as
	// transactional mail), so campaigns get less of the day.
	Force bool
}

// Grant is what a Request got.
type Grant struct {
	Granted int64
	// Day is the ramp day the subject is on today (0 for its first).
	Day int
	// Cap is today's cap (0 when warm).
	Cap int64
	// Used is today's volume, this grant included.
	Used int64
	// Warm is set once the ramp is over: nothing is capped.
	Warm bool
}

// The state of a subject is a hash: "day" is its ramp day, "on" the
// calendar day it was last used (when the ramp last moved).
const (
	stateTTL = 400 * 24 * time.Hour
	countTTL = 8 * 24 * time.Hour
)

func (r *Ramp) stateKey(s Subject) string {
	return r.prefix + "warmup:" + string(s.Kind) + ":" + s.ID + ":" + s.Provider
}

func (r *Ramp) countKey(s Subject, day int64) string {
	return r.stateKey(s) + ":" + strconv.FormatInt(day, 10)
}

// rollScript moves a subject to calendar day ARGV[1] at ramp day ARGV[2]
// unless a replica did so already, and returns the ramp day in force.
var rollScript = redis.NewScript(`
local on = redis.call('HGET', KEYS[1], 'on')
if not on or tonumber(on) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'on', ARGV[1], 'day', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tonumber(redis.call('HGET', KEYS[1], 'day'))
`)

// reserveScript takes, for each key, ARGV triples (cap, n, force): the
// granted volume is n when forced or uncapped (cap < 0), else what fits
// under cap. It returns granted and used for each key.
var reserveScript = redis.NewScript(`
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[2 + (i-1)*3])
  local n = tonumber(ARGV[3 + (i-1)*3])
  local force = ARGV[4 + (i-1)*3] == '1'
  local used = tonumber(redis.call('GET', key) or '0')
  local g = n
  if not force and cap >= 0 then
    g = math.max(0, math.min(n, cap - used))
  end
  if g > 0 then
    used = redis.call('INCRBY', key, g)
    redis.call('PEXPIRE', key, ttl)
  end
  out[#out+1] = g
  out[#out+1] = used
end
return out
`)

// Reserve grants each request what today's cap of its subject allows, in
// order (two requests for one subject share its cap). On a subject's first
// use of a calendar day its ramp moves on from the last day it sent, by
// what its signals say (Schedule.Next). Errors are Redis's or the
// signals', and temporary.
func (r *Ramp) Reserve(ctx context.Context, now time.Time, reqs []Request) ([]Grant, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	today := DayOf(now)
	days, err := r.positions(ctx, today, reqs)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(reqs))
	args := []any{countTTL.Milliseconds()}
	out := make([]Grant, len(reqs))
	for i, q := range reqs {
		day := days[q.Subject]
		c, warm := q.Schedule.Cap(day)
		out[i] = Grant{Day: day, Cap: c, Warm: warm}
		capArg := c
		if warm {
			capArg = -1
		}
		force := "0"
		if q.Force {
			force = "1"
		}
		keys[i] = r.countKey(q.Subject, today)
		args = append(args, capArg, max(q.N, 0), force)
	}
	res, err := reserveScript.Run(ctx, r.rdb, keys, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("warmup: reserve: %w", err)
	}
	if len(res) != 2*len(reqs) {
		return nil, fmt.Errorf("warmup: reserve: %d results for %d requests", len(res), len(reqs))
	}
	for i := range out {
		out[i].Granted, out[i].Used = res[2*i], res[2*i+1]
	}
	return out, nil
}

// Release gives back n of today's volume of s that was reserved but will
// not be sent.
func (r *Ramp) Release(ctx context.Context, now time.Time, s Subject, n int64) error {
	if n <= 0 {
		return nil
	}
	if err := releaseScript.Run(ctx, r.rdb, []string{r.countKey(s, DayOf(now))}, n).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("warmup: release: %w", err)
	}
	return nil
}

var releaseScript = redis.NewScript(`
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.min(used, tonumber(ARGV[1]))
if n > 0 then redis.call('DECRBY', KEYS[1], n) end
return n
`)

// Status returns where s stands today without reserving anything or
// moving its ramp.
func (r *Ramp) Status(ctx context.Context, now time.Time, s Subject, sched *Schedule) (Grant, error) {
	today := DayOf(now)
	pipe := r.rdb.Pipeline()
	st := pipe.HMGet(ctx, r.stateKey(s), "day", "on")
	used := pipe.Get(ctx, r.countKey(s, today))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Grant{}, fmt.Errorf("warmup: status: %w", err)
	}
	day, on, known := parseState(st.Val())
	if known && on < today {
		// Not used yet today: show the ramp as if clean, which is where
		// it goes at best.
		day = sched.Next(day, Clean, 0)
	}
	c, warm := sched.Cap(day)
	u, _ := used.Int64()
	return Grant{Day: day, Cap: c, Used: u, Warm: warm}, nil
}

func parseState(v []any) (day int, on int64, known bool) {
	if len(v) != 2 || v[0] == nil || v[1] == nil {
		return 0, 0, false
	}
	d, err1 := strconv.Atoi(fmt.Sprint(v[0]))
	o, err2 := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return d, o, true
}

// positions returns today's ramp day of every subject in reqs, moving the
// ramps that were last used before today.
func (r *Ramp) positions(ctx context.Context, today int64, reqs []Request) (map[Subject]int, error) {
	sched := map[Subject]*Schedule{}
	var subjects []Subject
	for _, q := range reqs {
		if q.Schedule == nil {
			return nil, fmt.Errorf("warmup: %s has no schedule", q.Subject)
		}
		if _, ok := sched[q.Subject]; !ok {
			sched[q.Subject] = q.Schedule
			subjects = append(subjects, q.Subject)
		}
	}
	pipe := r.rdb.Pipeline()
	states := make([]*redis.SliceCmd, len(subjects))
	for i, s := range subjects {
		states[i] = pipe.HMGet(ctx, r.stateKey(s), "day", "on")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("warmup: state: %w", err)
	}
	out := make(map[Subject]int, len(subjects))
	type roll struct {
		s   Subject
		day int
		on  int64
		new bool
	}
	var rolls []roll
	for i, s := range subjects {
		day, on, known := parseState(states[i].Val())
		switch {
		case !known:
			rolls = append(rolls, roll{s: s, new: true})
		case on < today:
			rolls = append(rolls, roll{s: s, day: day, on: on})
		default:
			out[s] = day
		}
	}
	if len(rolls) == 0 {
		return out, nil
	}
	// Volumes of the last sending day of the ramps that move.
	pipe = r.rdb.Pipeline()
	used := make([]*redis.StringCmd, len(rolls))
	for i, rl := range rolls {
		if !rl.new {
			used[i] = pipe.Get(ctx, r.countKey(rl.s, rl.on))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("warmup: volume: %w", err)
	}
	pipe = r.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(rolls))
	for i, rl := range rolls {
		next := 0
		if !rl.new {
			sc := sched[rl.s]
			sig := Clean
			if r.signals != nil {
				var err error
				if sig, err = r.signals.Signal(ctx, rl.s, DayStart(rl.on), DayStart(today)); err != nil {
					return nil, fmt.Errorf("warmup: signals of %s: %w", rl.s, err)
				}
			}
			share := 0.0
			if c, warm := sc.Cap(rl.day); !warm && c > 0 {
				u, _ := used[i].Int64()
				share = float64(u) / float64(c)
			}
			next = sc.Next(rl.day, sig, share)
		}
		cmds[i] = rollScript.Eval(ctx, pipe, []string{r.stateKey(rl.s)}, today, next, stateTTL.Milliseconds())
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("warmup: move ramp: %w", err)
	}
	for i, rl := range rolls {
		d, err := cmds[i].Int()
		if err != nil {
			return nil, fmt.Errorf("warmup: move ramp: %w", err)
		}
		out[rl.s] = d
	}
	return out, nil
}
