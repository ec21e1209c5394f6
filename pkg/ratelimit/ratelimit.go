package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors returned by the Limiter's methods. Invalid arguments are caught
// before anything is sent to Redis.
var (
	// ErrInvalidKey: a key is empty.
	ErrInvalidKey = errors.New("ratelimit: invalid key")
	// ErrInvalidWindow: a window has a limit, period or burst out of range,
	// or two windows of one call share a period.
	ErrInvalidWindow = errors.New("ratelimit: invalid window")
	// ErrCostExceedsBurst: a request costs more than a window's burst, so
	// it could never pass.
	ErrCostExceedsBurst = errors.New("ratelimit: cost exceeds burst")
	// ErrInvalidLease: a lease maximum below 1 or a TTL below a millisecond.
	ErrInvalidLease = errors.New("ratelimit: invalid lease")
	// ErrLeaseLost: the lease expired (or was released) before Renew or
	// Release; its slot may already belong to someone else.
	ErrLeaseLost = errors.New("ratelimit: lease lost")
	// ErrReply: Redis answered a script with something the package does not
	// understand.
	ErrReply = errors.New("ratelimit: unexpected reply")
)

// Options configures a Limiter.
type Options struct {
	// Prefix starts every key; empty means "mw:".
	Prefix string
	// Now, when set, is the clock the scripts use instead of Redis TIME.
	// Tests set it to move time without waiting; production leaves it nil
	// so that all replicas share the Redis server's clock. Keys written
	// on an injected clock get no expiry.
	Now func() time.Time
}

// Limiter checks rate windows and hands out connection leases. It is safe
// for concurrent use; all its state is in Redis.
type Limiter struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time
}

// New returns a Limiter on rdb.
func New(rdb redis.UniversalClient, o Options) *Limiter {
	p := o.Prefix
	if p == "" {
		p = "mw:"
	}
	return &Limiter{rdb: rdb, prefix: p, now: o.Now}
}

// Window is one GCRA rate: on average Limit requests per Per, with up to
// Burst at once. See the package documentation for the exact guarantee.
type Window struct {
	// Limit is the number of requests per Per; it may be fractional (a
	// throttled rate). It must be positive.
	Limit float64
	// Per is the period. It also names the window's Redis key, so the
	// windows of one call must have different periods.
	Per time.Duration
	// Burst is how many requests may pass at once after a quiet spell; at
	// least 1.
	Burst int64
}

// Rate returns the window of limit requests per period whose burst is the
// whole limit (at least 1): a token bucket that holds one period's worth.
func Rate(limit float64, per time.Duration) Window {
	return Window{Limit: limit, Per: per, Burst: max(1, int64(limit))}
}

// Scale returns the window with its limit multiplied by f and its burst
// shrunk in the same proportion (never below 1): how a throttle of the
// reputation monitor applies. The period, and so the Redis key, stays.
// f must be positive; a factor of 0 (a pause) has no window: callers check
// for it before asking the limiter.
func (w Window) Scale(f float64) Window {
	w.Limit *= f
	w.Burst = max(1, int64(math.Floor(float64(w.Burst)*f)))
	return w
}

// String returns the window as "LIMIT/PER burst B".
func (w Window) String() string {
	return strconv.FormatFloat(w.Limit, 'g', -1, 64) + "/" + w.Per.String() + " burst " + strconv.FormatInt(w.Burst, 10)
}

// interval returns the emission interval in microseconds, rounded up so
// that rounding never admits a request early.
func (w Window) interval() (int64, error) {
	if math.IsNaN(w.Limit) || math.IsInf(w.Limit, 0) || w.Limit <= 0 {
		return 0, fmt.Errorf("%w: limit must be positive, got %v", ErrInvalidWindow, w.Limit)
	}
	if w.Per < time.Microsecond {
		return 0, fmt.Errorf("%w: period must be at least 1µs, got %s", ErrInvalidWindow, w.Per)
	}
	if w.Burst < 1 {
		return 0, fmt.Errorf("%w: burst must be at least 1, got %d", ErrInvalidWindow, w.Burst)
	}
	t := math.Ceil(float64(w.Per.Microseconds()) / w.Limit)
	// A TAT must stay an exact integer in a Lua double (2^53 µs is 285
	// years): bound the interval and the burst's tolerance well below.
	const maxSpan = float64(100 * 365 * 24 * time.Hour / time.Microsecond)
	if t*float64(w.Burst) > maxSpan {
		return 0, fmt.Errorf("%w: %s spans more than 100 years", ErrInvalidWindow, w)
	}
	return max(1, int64(t)), nil
}

// Result is the answer to one rate request.
type Result struct {
	// Allowed reports whether the request passed; it was then charged to
	// every window.
	Allowed bool
	// RetryAfter is, for a refused request, how long until the same request
	// would pass if nothing else is charged meanwhile; 0 when allowed.
	RetryAfter time.Duration
	// Window is the index of the refusing window with the longest wait, or
	// -1 when allowed.
	Window int
	// Reserved reports that the request was not allowed now but holds a
	// slot RetryAfter from now: it was charged, and the same request (the
	// same Reservation) is allowed from then on without being charged
	// again. See Request.Reservation.
	Reserved bool
	// Held reports that the request was allowed by a reservation made
	// earlier, without a charge: Redeem it once the slot is used.
	Held bool
}

// Request is one entry of AllowBatch.
type Request struct {
	Key     string
	N       int64
	Windows []Window
	// Reservation, when set, names the request (a message id) and makes
	// its charge a reservation: the slot it is charged for — now, or up to
	// Horizon ahead, which the answer reports as Reserved — is held under
	// that name until Redeem, and asking again with the same Reservation
	// is allowed from the slot on without a second charge. A caller
	// waiting its turn so comes back once, at its own slot, instead of
	// with every other caller at the first free one; and a caller allowed
	// to go that then finds no connection free keeps the slot it paid for.
	// A slot beyond Horizon is refused and charges nothing.
	Reservation string
	Horizon     time.Duration
	// Lazy, with a Reservation, records nothing for a request allowed at
	// once: the caller that uses its slot straight away has nothing to
	// redeem, and one that cannot (no connection free) keeps the slot it
	// paid for with Hold. A slot ahead is reserved as without Lazy.
	Lazy bool
}

// Allow charges n requests to key against every window, all or nothing, in
// one script call. It never waits: a refusal says how long to wait. With no
// windows it allows without asking Redis. Errors wrap ErrInvalidKey,
// ErrInvalidWindow, ErrCostExceedsBurst or ErrReply, or are Redis errors.
func (l *Limiter) Allow(ctx context.Context, key string, n int64, windows ...Window) (Result, error) {
	return l.Do(ctx, Request{Key: key, N: n, Windows: windows})
}

// Redemption names a reservation: the Key and Reservation of its Request.
type Redemption struct{ Key, ID string }

// Redeem ends the reservation id on key: the request it paid for has gone.
// A reservation is also dropped when its key expires.
func (l *Limiter) Redeem(ctx context.Context, key, id string) error {
	return l.RedeemBatch(ctx, []Redemption{{Key: key, ID: id}})
}

// RedeemBatch is Redeem for many reservations in one round trip.
func (l *Limiter) RedeemBatch(ctx context.Context, rs []Redemption) error {
	for _, r := range rs {
		if err := checkKey(r.Key); err != nil {
			return err
		}
	}
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, r := range rs {
			p.HDel(ctx, l.prefix+"rl:"+r.Key, "r:"+r.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ratelimit: redeem: %w", err)
	}
	return nil
}

// Hold records that the request id on key holds a slot it was charged
// for now (a Lazy request allowed at once that could not use it): the
// same request is then allowed without a charge until Redeem, as a
// reservation is. The record lasts at least horizon.
func (l *Limiter) Hold(ctx context.Context, key, id string, horizon time.Duration) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if id == "" || horizon <= 0 {
		return fmt.Errorf("%w: a hold needs an id and a positive horizon", ErrInvalidWindow)
	}
	if err := holdScript.Run(ctx, l.rdb, []string{l.prefix + "rl:" + key}, l.nowArg(), id, horizon.Microseconds()).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("ratelimit: hold %s: %w", key, err)
	}
	return nil
}

// holdScript records a held slot at now (ARGV[1] in µs, or "" for Redis
// TIME) for request ARGV[2], and keeps the hash at least ARGV[3] µs.
var holdScript = redis.NewScript(scriptClock + `
redis.call('HSET', KEYS[1], 'r:' .. ARGV[2], string.format('%.0f', now))
if not injected then
  local ms = math.ceil(tonumber(ARGV[3]) / 1000)
  if redis.call('PTTL', KEYS[1]) < ms then
    redis.call('PEXPIRE', KEYS[1], ms)
  end
end
return 1
`)

// Do is Allow for one Request, which may ask for a reservation. Errors are
// those of Allow.
func (l *Limiter) Do(ctx context.Context, r Request) (Result, error) {
	if len(r.Windows) == 0 {
		if err := checkKey(r.Key); err != nil {
			return Result{}, err
		}
		return Result{Allowed: true, Window: -1}, nil
	}
	keys, args, err := l.gcraArgs(r)
	if err != nil {
		return Result{}, err
	}
	v, err := gcraScript.Run(ctx, l.rdb, keys, args...).Result()
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit: %s: %w", r.Key, err)
	}
	return gcraResult(v)
}

// AllowBatch is Allow for many requests in one round trip (a pipeline of
// EVALSHA calls). Each request is decided on its own, in order. All
// requests are checked before anything is sent; after a Redis error some
// requests may have been charged, and the caller should treat them all as
// refused.
func (l *Limiter) AllowBatch(ctx context.Context, reqs []Request) ([]Result, error) {
	type call struct {
		keys []string
		args []any
	}
	calls := make([]call, len(reqs))
	out := make([]Result, len(reqs))
	for i, r := range reqs {
		if len(r.Windows) == 0 {
			if err := checkKey(r.Key); err != nil {
				return nil, err
			}
			out[i] = Result{Allowed: true, Window: -1}
			continue
		}
		keys, args, err := l.gcraArgs(r)
		if err != nil {
			return nil, err
		}
		calls[i] = call{keys, args}
	}
	pending := make([]int, 0, len(reqs))
	for i := range reqs {
		if calls[i].keys != nil {
			pending = append(pending, i)
		}
	}
	// A script cache flushed by a Redis restart answers NOSCRIPT without
	// running the script, so those requests are sent again once after
	// loading it.
	for try := 0; len(pending) > 0; try++ {
		cmds := make([]*redis.Cmd, len(pending))
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range pending {
				cmds[j] = gcraScript.EvalSha(ctx, p, calls[i].keys, calls[i].args...)
			}
			return nil
		})
		if err != nil && !isNoScript(err) {
			return nil, fmt.Errorf("ratelimit: batch: %w", err)
		}
		var again []int
		for j, i := range pending {
			v, err := cmds[j].Result()
			if isNoScript(err) && try == 0 {
				again = append(again, i)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("ratelimit: %s: %w", reqs[i].Key, err)
			}
			if out[i], err = gcraResult(v); err != nil {
				return nil, err
			}
		}
		if len(again) > 0 {
			if err := gcraScript.Load(ctx, l.rdb).Err(); err != nil {
				return nil, fmt.Errorf("ratelimit: load script: %w", err)
			}
		}
		pending = again
	}
	return out, nil
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return nil
}

// nowArg is the script's time argument: the injected clock in
// microseconds, or "" for Redis TIME.
func (l *Limiter) nowArg() string {
	if l.now == nil {
		return ""
	}
	return strconv.FormatInt(l.now().UnixMicro(), 10)
}

func (l *Limiter) gcraArgs(r Request) ([]string, []any, error) {
	key, n, windows := r.Key, r.N, r.Windows
	if err := checkKey(key); err != nil {
		return nil, nil, err
	}
	if n < 1 {
		return nil, nil, fmt.Errorf("%w: cost must be at least 1, got %d", ErrInvalidWindow, n)
	}
	if r.Reservation != "" && r.Horizon <= 0 {
		return nil, nil, fmt.Errorf("%w: a reservation needs a positive horizon, got %s", ErrInvalidWindow, r.Horizon)
	}
	args := make([]any, 5, 5+3*len(windows))
	lazy := 0
	if r.Lazy {
		lazy = 1
	}
	args[0], args[1], args[2], args[3], args[4] = l.nowArg(), n, r.Reservation, r.Horizon.Microseconds(), lazy
	for i, w := range windows {
		t, err := w.interval()
		if err != nil {
			return nil, nil, err
		}
		if n > w.Burst {
			return nil, nil, fmt.Errorf("%w: cost %d, window %s", ErrCostExceedsBurst, n, w)
		}
		for _, v := range windows[:i] {
			if v.Per == w.Per {
				return nil, nil, fmt.Errorf("%w: two windows of period %s", ErrInvalidWindow, w.Per)
			}
		}
		args = append(args, w.Per.String(), t, w.Burst)
	}
	return []string{l.prefix + "rl:" + key}, args, nil
}

func gcraResult(v any) (Result, error) {
	r, err := ints(v, 3)
	if err != nil {
		return Result{}, err
	}
	switch r[0] {
	case 1:
		return Result{Allowed: true, Window: -1}, nil
	case 3:
		return Result{Allowed: true, Held: true, Window: -1}, nil
	case 2:
		return Result{Reserved: true, RetryAfter: time.Duration(r[1]) * time.Microsecond, Window: int(r[2]) - 1}, nil
	}
	return Result{RetryAfter: time.Duration(r[1]) * time.Microsecond, Window: int(r[2]) - 1}, nil
}

// ints reads a script reply of n integers.
func ints(v any, n int) ([]int64, error) {
	a, ok := v.([]any)
	if !ok || len(a) != n {
		return nil, fmt.Errorf("%w: %v", ErrReply, v)
	}
	out := make([]int64, n)
	for i, x := range a {
		if out[i], ok = x.(int64); !ok {
			return nil, fmt.Errorf("%w: %v", ErrReply, v)
		}
	}
	return out, nil
}

// gcraScript checks every window and charges all of them or none. A key's
// windows are fields of one hash, so a check is one HMGET and one HSET.
//
//	KEYS[1]    the key's hash: field = window period, value = its TAT in µs;
//	           field "r:<id>" = the slot of a reservation in µs
//	ARGV[1]    now in µs since the epoch, or "" for Redis TIME
//	ARGV[2]    the cost n
//	ARGV[3]    a reservation id, or ""
//	ARGV[4]    the reservation horizon in µs
//	ARGV[5]    1: lazy (no reservation is recorded for a slot that is now)
//	ARGV[3i+3] window i's field (its period)
//	ARGV[3i+4] window i's emission interval T in µs
//	ARGV[3i+5] window i's burst
//
// It returns {1, 0, 0} when allowed, {3, 0, 0} when allowed by a held
// reservation, {2, wait µs, i} when a reservation was made or is still
// ahead, else {0, wait µs, i} for the window i with the longest wait. A
// reservation whose slot has come is allowed without a charge, until
// Redeem deletes it: it was charged when it was made.
// Reservations live in the same hash as the windows, so a call still
// touches one key; the hash expires when its latest TAT and every
// reservation's slot plus the horizon have passed. The hash's expiry is never shortened (another
// caller may use other periods on the key), and is set only on the Redis
// clock, since Redis expires keys by its own clock, which an injected one
// does not follow. Numbers are written with %.0f: the µs values need 16
// digits, more than Lua's default number format keeps.
var gcraScript = redis.NewScript(scriptClock + `
local n = tonumber(ARGV[2])
local rid = ARGV[3]
local horizon = tonumber(ARGV[4])
if rid ~= '' then
  local slot = redis.call('HGET', KEYS[1], 'r:' .. rid)
  if slot then
    slot = tonumber(slot)
    if slot <= now then
      return {3, 0, 0}
    end
    return {2, slot - now, 0}
  end
end
local lazy = ARGV[5] == '1'
local m = (#ARGV - 5) / 3
local fields = {}
for i = 1, m do
  fields[i] = ARGV[3 * i + 3]
end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local set = {}
local wait, worst, longest = 0, 0, 0
for i = 1, m do
  local iv = tonumber(ARGV[3 * i + 4])
  local burst = tonumber(ARGV[3 * i + 5])
  local tat = now
  if stored[i] then
    tat = math.max(tonumber(stored[i]), now)
  end
  local new = tat + iv * n
  local allow_at = new - iv * burst
  if allow_at > now and allow_at - now > wait then
    wait, worst = allow_at - now, i
  end
  set[2 * i - 1] = fields[i]
  set[2 * i] = string.format('%.0f', new)
  longest = math.max(longest, new - now)
end
local answer = {1, 0, 0}
if worst > 0 then
  if rid == '' or wait > horizon then
    return {0, wait, worst}
  end
  answer = {2, wait, worst}
end
if rid ~= '' and not (lazy and worst == 0) then
  set[#set + 1] = 'r:' .. rid
  set[#set + 1] = string.format('%.0f', now + wait)
  -- A held slot outlives an idle key's last TAT by the horizon.
  longest = math.max(longest, wait + horizon)
end
redis.call('HSET', KEYS[1], unpack(set))
if not injected then
  local ms = math.ceil(longest / 1000)
  if redis.call('PTTL', KEYS[1]) < ms then
    redis.call('PEXPIRE', KEYS[1], ms)
  end
end
return answer
`)
