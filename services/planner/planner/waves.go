package planner

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/mx"
	"github.com/mailwave/mailwave/pkg/shaping"
)

// waves releases a campaign per provider in waves: every MW_WAVE_INTERVAL
// a slice of the recipients of each (source IP, provider) becomes due, so
// no provider receives a burst. A campaign spreads each provider's share
// evenly over its send window; a wave never holds more than the IP's
// shaping rate to that provider allows in one interval (times
// MW_WAVE_SHARE, leaving room for retries and other mail). The fill of
// every wave lives in Redis per (IP, provider), shared by all campaigns
// and planner replicas, so two campaigns on one IP never add up to a
// burst either. Recipients a full wave cannot take move to the next.
type waves struct {
	rdb      redis.UniversalClient
	interval time.Duration
	share    float64
	shaping  *shaping.Policy
}

// capacity is how many messages from ip to provider (for tenant) one wave
// holds: the strictest of the shaping rates, over one interval.
func (w *waves) capacity(provider, ip, tenant string) int64 {
	l := w.shaping.Limits(provider, ip, tenant)
	perSec := l.MessagesPerSecond
	if l.MessagesPerMinute > 0 {
		perSec = min(perSec, l.MessagesPerMinute/60)
	}
	if l.MessagesPerHour > 0 {
		perSec = min(perSec, l.MessagesPerHour/3600)
	}
	return max(1, int64(math.Floor(perSec*w.interval.Seconds()*w.share)))
}

func (w *waves) key(ip, provider string) string {
	if ip == "" {
		ip = "default"
	}
	return "mw:wave:" + ip + "|" + mx.Token(provider)
}

// waveTTL keeps wave fills a little longer than any window.
const waveTTL = 8 * 24 * time.Hour

// placeScript places counts into waves of at most ARGV[1] each. ARGV[2]
// is the TTL, ARGV[3] the current wave, then pairs (first wave wanted,
// count). Field "lo" remembers the first wave that may have room; fields
// of past waves are dropped. It returns pairs (wave, count placed).
var placeScript = redis.NewScript(`
local cap = tonumber(ARGV[1])
local now = tonumber(ARGV[3])
local lo = tonumber(redis.call('HGET', KEYS[1], 'lo') or '0')
if lo < now then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if f ~= 'lo' and tonumber(f) < now then redis.call('HDEL', KEYS[1], f) end
  end
  lo = now
end
local out = {}
for i = 4, #ARGV, 2 do
  local w = math.max(tonumber(ARGV[i]), lo)
  local n = tonumber(ARGV[i+1])
  while n > 0 do
    local used = tonumber(redis.call('HGET', KEYS[1], tostring(w)) or '0')
    local take = math.min(cap - used, n)
    if take > 0 then
      redis.call('HINCRBY', KEYS[1], tostring(w), take)
      out[#out+1] = w
      out[#out+1] = take
      n = n - take
      used = used + take
    end
    if used >= cap and w == lo then lo = lo + 1 end
    if n > 0 then w = w + 1 end
  end
end
redis.call('HSET', KEYS[1], 'lo', lo)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return out
`)

// placeWaves gives every item its not_before: the start of the wave it is
// released in.
func (p *planner) placeWaves(ctx context.Context, r *request, items []*item) error {
	type group struct {
		ip, provider string
		items        []*item
	}
	var groups []*group
	byKey := map[string]*group{}
	span := max(r.end.Sub(r.start), 0)
	iv := p.waves.interval
	targets := make(map[*item]int64, len(items))
	for _, it := range items {
		ip := ""
		if it.ip >= 0 {
			ip = r.ips[it.ip].IP
		} else if r.route.Relay != "" {
			ip = "relay-" + r.route.Relay
		}
		k := ip + "|" + it.provider
		g := byKey[k]
		if g == nil {
			g = &group{ip: ip, provider: it.provider}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.items = append(g.items, it)
		// The k-th of a provider's n recipients is due k/n of the way
		// through the window.
		n := max(r.counts[it.provider], 1)
		k2 := r.placed[it.provider]
		r.placed[it.provider]++
		t := r.start
		if k2 < n {
			t = t.Add(time.Duration(float64(span) * float64(k2) / float64(n)))
		} else {
			t = t.Add(span)
		}
		targets[it] = t.UnixNano() / int64(iv)
	}
	nowWave := r.now.UnixNano() / int64(iv)
	for _, g := range groups {
		capacity := p.waves.capacity(g.provider, g.ip, r.req.GetTenant())
		args := []any{capacity, waveTTL.Milliseconds(), nowWave}
		// Consecutive items wanting one wave are asked for together.
		var runs []int64
		for i, it := range g.items {
			w := max(targets[it], nowWave)
			if i > 0 && runs[len(runs)-2] == w {
				runs[len(runs)-1]++
				continue
			}
			runs = append(runs, w, 1)
		}
		for _, v := range runs {
			args = append(args, v)
		}
		res, err := placeScript.Run(ctx, p.rt.Redis, []string{p.waves.key(g.ip, g.provider)}, args...).Int64Slice()
		if err != nil {
			return fmt.Errorf("planner: waves: %w", err)
		}
		i := 0
		for j := 0; j+1 < len(res); j += 2 {
			at := time.Unix(0, res[j]*int64(iv))
			for range res[j+1] {
				if i < len(g.items) {
					g.items[i].notBefore = later(at, r.start)
					i++
				}
			}
		}
		if i != len(g.items) {
			return fmt.Errorf("planner: waves placed %d of %d", i, len(g.items))
		}
	}
	return nil
}
