package inbounddsn

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// counters keeps the bounces of each recipient per brand in Redis, one
// sorted set per class:
//
//	mailwave:bounces:hard:<tenant>:<brand>:<address hash>
//	mailwave:bounces:soft:<tenant>:<brand>:<address hash>
//
// Each member is the id of the inbound message that reported the bounce
// (so a redelivered message counts once), scored by the time it was
// counted in Unix milliseconds. Members older than the brand's window are
// trimmed at every count, and the key expires one window after its last
// bounce, so an address that stops bouncing leaves nothing behind. A
// delivery deletes the soft key (a mailbox that accepts mail again starts
// from zero); hard bounces are never reset by a delivery.
type counters struct {
	rdb *redis.Client
}

// CounterKey is the Redis key of a recipient's bounces of class for a
// brand; "hard" or "soft".
func CounterKey(class, tenant, brand, addr string) string {
	return "mailwave:bounces:" + class + ":" + mailwavev1.KeyToken(tenant) + ":" + mailwavev1.KeyToken(brand) + ":" + mailwavev1.AddressHash(addr)
}

func classWord(c mailwavev1.BounceClass) string {
	if c == mailwavev1.BounceClass_BOUNCE_CLASS_HARD {
		return "hard"
	}
	return "soft"
}

// add counts one bounce and returns how many the recipient has within
// window.
func (c *counters) add(ctx context.Context, key, member string, now time.Time, window time.Duration) (int64, error) {
	if window <= 0 {
		window = 30 * 24 * time.Hour
	}
	ms := now.UnixMilli()
	var card *redis.IntCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAddNX(ctx, key, redis.Z{Score: float64(ms), Member: member})
		p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(now.Add(-window).UnixMilli(), 10))
		card = p.ZCard(ctx, key)
		p.PExpire(ctx, key, window)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("inbounddsn: count bounce: %w", err)
	}
	return card.Val(), nil
}

// reset forgets the soft bounces of many recipients in one round trip.
func (c *counters) reset(ctx context.Context, keys []string) ([]struct{}, error) {
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inbounddsn: reset counters: %w", err)
	}
	return make([]struct{}, len(keys)), nil
}
