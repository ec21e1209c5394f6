package planner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// plannedSet remembers, per request, which positions of its recipient
// list or audience are done (planned, suppressed or dropped): a bitmap in
// Redis, 125 KB for a million recipients. A later pass (the next day's
// warm-up volume) or a replica that takes over after a crash skips them.
// The audience object's id is part of the key: an audience replaced under
// the same name starts afresh (message ids still de-duplicate dispatches).
type plannedSet struct {
	rdb redis.UniversalClient
	js  jetstream.JetStream
}

type bitmap struct {
	rdb  redis.UniversalClient
	key  string
	ttl  time.Duration
	bits []byte
}

func (ps *plannedSet) load(ctx context.Context, req *mailwavev1.SendRequest, maxAge time.Duration) (*bitmap, error) {
	h := sha256.New()
	h.Write([]byte(req.GetTenant()))
	h.Write([]byte{0})
	h.Write([]byte(req.GetIdempotencyKey()))
	if ref := req.GetAudience(); ref != nil {
		bucket := ref.GetBucket()
		if bucket == "" {
			bucket = mailwavev1.ObjectStoreAudiences
		}
		if store, err := ps.js.ObjectStore(ctx, bucket); err == nil {
			if info, err := store.GetInfo(ctx, ref.GetObject()); err == nil {
				h.Write([]byte{0})
				h.Write([]byte(info.NUID))
			}
		}
	}
	b := &bitmap{rdb: ps.rdb, key: "mw:planned:" + hex.EncodeToString(h.Sum(nil)[:16]), ttl: maxAge + 24*time.Hour}
	v, err := ps.rdb.Get(ctx, b.key).Bytes()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("planner: planned set: %w", err)
	}
	b.bits = v
	return b, nil
}

// has reports whether position i is done. A nil bitmap has nothing.
func (b *bitmap) has(i int) bool {
	if b == nil || i/8 >= len(b.bits) {
		return false
	}
	// Redis numbers bits from the most significant bit of each byte.
	return b.bits[i/8]&(0x80>>(i%8)) != 0
}

// mark records items as done.
func (b *bitmap) mark(ctx context.Context, items []*item) error {
	if len(items) == 0 {
		return nil
	}
	args := make([]any, 0, 4*len(items)+1)
	args = append(args, "BITFIELD", b.key)
	for _, it := range items {
		args = append(args, "SET", "u1", it.idx, 1)
	}
	pipe := b.rdb.Pipeline()
	pipe.Do(ctx, args...)
	pipe.PExpire(ctx, b.key, b.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("planner: planned set: %w", err)
	}
	for _, it := range items {
		for len(b.bits) <= it.idx/8 {
			b.bits = append(b.bits, 0)
		}
		b.bits[it.idx/8] |= 0x80 >> (it.idx % 8)
	}
	return nil
}
