package reputation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Counter names: what the monitor counts per scope.
const (
	Delivered    = "delivered"
	Deferred     = "deferred"
	Blocked      = "blocked"
	HardBounced  = "hard_bounced"
	SoftBounced  = "soft_bounced"
	Complained   = "complained"
	Unsubscribed = "unsubscribed"
)

// CounterNames lists every counter, in a stable order.
var CounterNames = []string{Delivered, Deferred, Blocked, HardBounced, SoftBounced, Complained, Unsubscribed}

// Window is a sliding window of counts, summed from buckets of Bucket
// length: minute buckets for the short windows, hour buckets for the long
// ones, so a window is at most one bucket longer than its name says.
type Window struct {
	Name   string
	Length time.Duration
	Bucket time.Duration
}

// Windows are the sliding windows the monitor keeps.
var Windows = []Window{
	{"15m", 15 * time.Minute, time.Minute},
	{"1h", time.Hour, time.Minute},
	{"24h", 24 * time.Hour, time.Hour},
	{"7d", 7 * 24 * time.Hour, time.Hour},
}

// WindowByName returns the window called name.
func WindowByName(name string) (Window, bool) {
	for _, w := range Windows {
		if w.Name == name {
			return w, true
		}
	}
	return Window{}, false
}

// Scope is what a rate is counted for and what a policy applies to.
type Scope struct {
	Kind     mailwavev1.ScopeKind
	Value    string
	Provider string
}

// Proto returns the scope as the contract's PolicyScope.
func (s Scope) Proto() *mailwavev1.PolicyScope {
	return &mailwavev1.PolicyScope{Kind: s.Kind, Value: s.Value, Provider: s.Provider}
}

// Key is the scope's key in the policy bucket.
func (s Scope) Key() string { return mailwavev1.PolicyKey(s.Proto()) }

// KindWord is the lower-case word of the scope kind ("tenant").
func (s Scope) KindWord() string { return kindWord(s.Kind) }

func kindWord(k mailwavev1.ScopeKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "SCOPE_KIND_"))
}

// Shape is the scope's kind, with "@provider" when it is narrowed to one
// provider: the form rules name scopes in ("tenant@provider").
func (s Scope) Shape() string {
	if s.Provider != "" {
		return s.KindWord() + "@provider"
	}
	return s.KindWord()
}

func (s Scope) String() string {
	if s.Provider == "" {
		return s.KindWord() + "=" + s.Value
	}
	return s.KindWord() + "=" + s.Value + "@" + s.Provider
}

// member encodes the scope for the Redis set of known scopes; \x1f does
// not occur in names.
func (s Scope) member() string {
	return strconv.Itoa(int(s.Kind)) + "\x1f" + s.Value + "\x1f" + s.Provider
}

func parseMember(m string) (Scope, bool) {
	parts := strings.Split(m, "\x1f")
	if len(parts) != 3 {
		return Scope{}, false
	}
	k, err := strconv.Atoi(parts[0])
	if err != nil {
		return Scope{}, false
	}
	return Scope{Kind: mailwavev1.ScopeKind(k), Value: parts[1], Provider: parts[2]}, true
}

// ScopesOf lists the scopes an event counts in: source IP, sending domain,
// tenant and campaign at the event's provider; tenant, brand and campaign
// everywhere. Empty values are left out.
func ScopesOf(ev *mailwavev1.DeliveryEvent) []Scope {
	var out []Scope
	add := func(k mailwavev1.ScopeKind, v, provider string) {
		if v != "" {
			out = append(out, Scope{Kind: k, Value: v, Provider: provider})
		}
	}
	p := ev.GetProvider()
	if p != "" {
		add(mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, ev.GetSourceIp(), p)
		add(mailwavev1.ScopeKind_SCOPE_KIND_SENDING_DOMAIN, ev.GetSendingDomain(), p)
		add(mailwavev1.ScopeKind_SCOPE_KIND_TENANT, ev.GetTenant(), p)
		add(mailwavev1.ScopeKind_SCOPE_KIND_CAMPAIGN, ev.GetCampaignId(), p)
	}
	add(mailwavev1.ScopeKind_SCOPE_KIND_TENANT, ev.GetTenant(), "")
	add(mailwavev1.ScopeKind_SCOPE_KIND_BRAND, ev.GetBrand(), "")
	add(mailwavev1.ScopeKind_SCOPE_KIND_CAMPAIGN, ev.GetCampaignId(), "")
	return out
}

// CountsOf says what an event adds to the counters; nil for events the
// monitor does not count. A block (signal BLOCKED or reason "blocked")
// counts as blocked besides deferred or bounced.
func CountsOf(ev *mailwavev1.DeliveryEvent) map[string]int64 {
	c := map[string]int64{}
	blocked := ev.GetSignal() == mailwavev1.Signal_SIGNAL_BLOCKED || ev.GetReason() == "blocked"
	switch ev.GetKind() {
	case mailwavev1.EventKind_EVENT_KIND_DELIVERED:
		c[Delivered] = 1
	case mailwavev1.EventKind_EVENT_KIND_DEFERRED:
		c[Deferred] = 1
	case mailwavev1.EventKind_EVENT_KIND_BOUNCED:
		if ev.GetBounceClass() == mailwavev1.BounceClass_BOUNCE_CLASS_SOFT {
			c[SoftBounced] = 1
		} else {
			c[HardBounced] = 1
		}
	case mailwavev1.EventKind_EVENT_KIND_COMPLAINED:
		c[Complained] = 1
	case mailwavev1.EventKind_EVENT_KIND_UNSUBSCRIBED:
		c[Unsubscribed] = 1
	default:
		return nil
	}
	if blocked && (c[Deferred] == 1 || c[HardBounced] == 1 || c[SoftBounced] == 1) {
		c[Blocked] = 1
	}
	return c
}

// Counts holds counter values by name.
type Counts map[string]int64

// Store keeps windowed counters in Redis: one hash per scope and minute and
// one per scope and hour, expiring when no window needs them any more, so
// any number of replicas share them and a restart loses nothing.
type Store struct {
	Redis *redis.Client
	// Prefix of every key (default "rep:").
	Prefix string
	// SeenTTL is how long an event id is remembered so a redelivered event
	// is not counted twice (default 2h).
	SeenTTL time.Duration
}

// ErrStore wraps Redis failures of the store.
var ErrStore = errors.New("reputation: window store")

func (s *Store) prefix() string {
	if s.Prefix == "" {
		return "rep:"
	}
	return s.Prefix
}

func (s *Store) scopesKey() string { return s.prefix() + "scopes" }

func (s *Store) bucketKey(sc Scope, unit string, n int64) string {
	return s.prefix() + "c:" + sc.Key() + ":" + unit + ":" + strconv.FormatInt(n, 10)
}

// recordScript counts a batch of events, each once: it remembers each
// event id (when asked), adds the counts of the events not seen before to
// the minute and hour hash of every scope, summed per hash and counter so
// a busy batch costs one HINCRBY per hash and counter rather than per
// event, and notes each scope as seen at its latest event.
//
// KEYS: the scopes set, one seen key per event, then the bucket hashes.
// ARGV: seen TTL, minute TTL, hour TTL, number of events, then per event:
// de-duplicate (1 or 0), instant (unix seconds), number of counters,
// number of scopes, counter/value pairs, and per scope the index in KEYS
// of its minute hash and of its hour hash, and its member.
// Returns one 1 (counted) or 0 (seen before) per event.
var recordScript = redis.NewScript(`
local seenTTL, mttl, httl, ne = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
local added, sums, ttls, order, members = {}, {}, {}, {}, {}
local latest = 0
for i = 1, ne do
  local dedup, score, nc, ns = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local c0, s0 = a + 4, a + 4 + 2 * nc
  a = s0 + 3 * ns
  local fresh = true
  if dedup == '1' and seenTTL > 0 then
    fresh = redis.call('SET', KEYS[1 + i], '1', 'NX', 'EX', seenTTL)
  end
  if fresh then
    added[i] = 1
    if score > latest then latest = score end
    for j = 0, ns - 1 do
      local mk, hk, member = KEYS[tonumber(ARGV[s0 + 3 * j])], KEYS[tonumber(ARGV[s0 + 3 * j + 1])], ARGV[s0 + 3 * j + 2]
      for _, k in ipairs({mk, hk}) do
        if not sums[k] then
          sums[k] = {}
          order[#order + 1] = k
          ttls[k] = (k == mk) and mttl or httl
        end
        for q = 0, nc - 1 do
          local f = ARGV[c0 + 2 * q]
          sums[k][f] = (sums[k][f] or 0) + tonumber(ARGV[c0 + 2 * q + 1])
        end
      end
      if (members[member] or 0) < score then members[member] = score end
    end
  else
    added[i] = 0
  end
end
for _, k in ipairs(order) do
  for f, n in pairs(sums[k]) do
    redis.call('HINCRBY', k, f, n)
  end
  redis.call('EXPIRE', k, ttls[k])
end
for member, score in pairs(members) do
  redis.call('ZADD', KEYS[1], 'GT', score, member)
end
if latest > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', latest - 691200)
end
return added
`)

// Entry is one event to count: its counts in every scope at instant At.
// An EventID, when not empty, makes counting idempotent: the same id
// counts once.
type Entry struct {
	EventID string
	Scopes  []Scope
	Counts  map[string]int64
	At      time.Time
}

// Record adds counts to every scope at instant now, atomically. eventID,
// when not empty, makes the call idempotent: the same id counts once. It
// reports whether the counts were added.
func (s *Store) Record(ctx context.Context, eventID string, scopes []Scope, counts map[string]int64, now time.Time) (bool, error) {
	added, err := s.RecordBatch(ctx, []Entry{{EventID: eventID, Scopes: scopes, Counts: counts, At: now}})
	if err != nil {
		return false, err
	}
	return added[0], nil
}

// RecordBatch counts many events in one atomic script call, and reports
// for each whether it was counted (false: seen before, or nothing to
// count).
func (s *Store) RecordBatch(ctx context.Context, entries []Entry) ([]bool, error) {
	out := make([]bool, len(entries))
	seenTTL := s.SeenTTL
	if seenTTL <= 0 {
		seenTTL = 2 * time.Hour
	}
	keys := make([]string, 1, 1+len(entries)+2*len(entries))
	keys[0] = s.scopesKey()
	var counted []int // the entries the script sees, by position in out
	for i, e := range entries {
		if len(e.Scopes) == 0 || len(e.Counts) == 0 {
			continue
		}
		counted = append(counted, i)
		keys = append(keys, s.prefix()+"seen:"+e.EventID)
	}
	if len(counted) == 0 {
		return out, nil
	}
	index := map[string]int{} // bucket key → its position in KEYS, from 1
	bucket := func(k string) int {
		if n, ok := index[k]; ok {
			return n
		}
		keys = append(keys, k)
		index[k] = len(keys)
		return len(keys)
	}
	args := []any{int64(seenTTL / time.Second), int64((time.Hour + 5*time.Minute) / time.Second),
		int64((7*24*time.Hour + 2*time.Hour) / time.Second), len(counted)}
	names := make([]string, 0, len(CounterNames))
	for _, i := range counted {
		e := entries[i]
		dedup := 0
		if e.EventID != "" {
			dedup = 1
		}
		names = names[:0]
		for n := range e.Counts {
			names = append(names, n)
		}
		sort.Strings(names)
		args = append(args, dedup, e.At.Unix(), len(names), len(e.Scopes))
		for _, n := range names {
			args = append(args, n, e.Counts[n])
		}
		minute, hour := e.At.Unix()/60, e.At.Unix()/3600
		for _, sc := range e.Scopes {
			args = append(args, bucket(s.bucketKey(sc, "m", minute)), bucket(s.bucketKey(sc, "h", hour)), sc.member())
		}
	}
	res, err := recordScript.Run(ctx, s.Redis, keys, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("%w: record: %w", ErrStore, err)
	}
	if len(res) != len(counted) {
		return nil, fmt.Errorf("%w: record: %d answers for %d events", ErrStore, len(res), len(counted))
	}
	for k, i := range counted {
		out[i] = res[k] == 1
	}
	return out, nil
}

// Read returns the counts of scope in every window ending at now.
func (s *Store) Read(ctx context.Context, sc Scope, now time.Time) (map[string]Counts, error) {
	minute, hour := now.Unix()/60, now.Unix()/3600
	type read struct {
		age int64 // buckets before the current one
		cmd *redis.SliceCmd
	}
	var minutes, hours []read
	pipe := s.Redis.Pipeline()
	for i := range int64(60) {
		minutes = append(minutes, read{i, pipe.HMGet(ctx, s.bucketKey(sc, "m", minute-i), CounterNames...)})
	}
	for i := range int64(7 * 24) {
		hours = append(hours, read{i, pipe.HMGet(ctx, s.bucketKey(sc, "h", hour-i), CounterNames...)})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: read %s: %w", ErrStore, sc, err)
	}
	out := map[string]Counts{}
	for _, w := range Windows {
		c := Counts{}
		for _, n := range CounterNames {
			c[n] = 0
		}
		src, buckets := minutes, int64(w.Length/w.Bucket)
		if w.Bucket == time.Hour {
			src = hours
		}
		for _, r := range src {
			if r.age >= buckets {
				continue
			}
			vals, _ := r.cmd.Result()
			for i, v := range vals {
				if str, ok := v.(string); ok {
					n, _ := strconv.ParseInt(str, 10, 64)
					c[CounterNames[i]] += n
				}
			}
		}
		out[w.Name] = c
	}
	return out, nil
}

// Scopes lists the scopes that counted an event since since, most recent
// first, at most limit of them.
func (s *Store) Scopes(ctx context.Context, since time.Time, limit int64) ([]Scope, error) {
	ms, err := s.Redis.ZRevRangeByScore(ctx, s.scopesKey(), &redis.ZRangeBy{
		Min: strconv.FormatInt(since.Unix(), 10), Max: "+inf", Count: limit}).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: scopes: %w", ErrStore, err)
	}
	out := make([]Scope, 0, len(ms))
	for _, m := range ms {
		if sc, ok := parseMember(m); ok {
			out = append(out, sc)
		}
	}
	return out, nil
}
