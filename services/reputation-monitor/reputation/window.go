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

// recordScript counts an event once: it remembers the event id (when
// given), adds the counts to the minute and hour hash of every scope and
// notes each scope as seen at now.
//
// KEYS: seen key, scopes set, then a minute and an hour key per scope.
// ARGV: seen TTL (0: no de-duplication), minute TTL, hour TTL, number of
// counters, now (score), number of scopes, counter/value pairs, scope
// members.
var recordScript = redis.NewScript(`
local seenTTL = tonumber(ARGV[1])
if seenTTL > 0 then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', seenTTL) then return 0 end
end
local mttl, httl, nc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local score, ns = ARGV[5], tonumber(ARGV[6])
for i = 0, ns - 1 do
  local mk, hk = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  for j = 0, nc - 1 do
    local f, c = ARGV[7 + 2 * j], ARGV[8 + 2 * j]
    redis.call('HINCRBY', mk, f, c)
    redis.call('HINCRBY', hk, f, c)
  end
  redis.call('EXPIRE', mk, mttl)
  redis.call('EXPIRE', hk, httl)
  redis.call('ZADD', KEYS[2], 'GT', score, ARGV[7 + 2 * nc + i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(score) - 691200)
return 1
`)

// Record adds counts to every scope at instant now, atomically. eventID,
// when not empty, makes the call idempotent: the same id counts once. It
// reports whether the counts were added.
func (s *Store) Record(ctx context.Context, eventID string, scopes []Scope, counts map[string]int64, now time.Time) (bool, error) {
	if len(scopes) == 0 || len(counts) == 0 {
		return false, nil
	}
	seenTTL := s.SeenTTL
	if seenTTL <= 0 {
		seenTTL = 2 * time.Hour
	}
	if eventID == "" {
		seenTTL = 0
	}
	minute, hour := now.Unix()/60, now.Unix()/3600
	keys := []string{s.prefix() + "seen:" + eventID, s.scopesKey()}
	for _, sc := range scopes {
		keys = append(keys, s.bucketKey(sc, "m", minute), s.bucketKey(sc, "h", hour))
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	args := []any{int64(seenTTL / time.Second), int64((time.Hour + 5*time.Minute) / time.Second),
		int64((7*24*time.Hour + 2*time.Hour) / time.Second), len(names), now.Unix(), len(scopes)}
	for _, n := range names {
		args = append(args, n, counts[n])
	}
	for _, sc := range scopes {
		args = append(args, sc.member())
	}
	n, err := recordScript.Run(ctx, s.Redis, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("%w: record: %w", ErrStore, err)
	}
	return n == 1, nil
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
