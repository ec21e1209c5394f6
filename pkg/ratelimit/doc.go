// Package ratelimit keeps the sender's limits in Redis, so that they hold
// across every sender replica together: message and connection rates by
// GCRA (the generic cell rate algorithm of ITU-T I.371, a token bucket kept
// as one timestamp per window) and concurrent connections by leases that
// expire.
//
// # Never blocking
//
// Nothing here waits. Allow and Acquire answer at once with "yes" or "not
// now, retry in D", so a caller can set a deferred message aside (for
// example by a delayed redelivery of the queue message) instead of holding
// a worker, a connection or a consumer slot while one destination is slow.
//
// # Time
//
// Both scripts read the clock of the Redis server (TIME) by default, so the
// clocks of the sender replicas do not matter: every replica sees the same
// "now". Options.Now replaces it with a clock of the caller's, which tests
// use to move time without waiting. A key must be used with one kind of
// clock only, and keys written on an injected clock get no expiry (Redis
// would expire them by its own clock, which the injected one does not
// follow). Reading TIME inside a script that writes needs script effects
// replication, the default since Redis 5.
//
// # GCRA
//
// A Window allows on average Limit requests per Per, with up to Burst at
// once. Its state is the theoretical arrival time (TAT) of the next request:
// a request of cost n is allowed at time now when
//
//	max(TAT, now) + n·T − Burst·T ≤ now,   T = Per/Limit (the emission interval)
//
// and then TAT becomes max(TAT, now) + n·T. So in any interval of length D
// at most Burst + ⌊D/T⌋ requests pass, and a refused request is told
// exactly when it would pass. T is rounded up to the microsecond, so
// rounding never lets a request through early. A rate given per call applies
// at once: a new rate reinterprets the stored TAT, which is a time, not a
// count.
//
// Several windows (per second and per hour, say) of one key are checked in
// one script call, all or nothing: no window is charged unless every window allows,
// and the answer's RetryAfter is the longest wait among the windows that
// refused.
//
// # Reservations
//
// A refused request is told when it would pass, but so is every other
// request refused at that moment: a backlog of callers that all come back
// at the first free slot would find it taken by one of them and ask again,
// hundreds of times each, and the rate would go unused between the
// stampedes. A Request with a Reservation (a message id) and a Horizon is
// charged for the next free slot instead — now, or at most Horizon ahead —
// exactly as if it had come then, and the slot is held under its name: the
// caller comes back once, at its own slot, and from then on the same
// Reservation is allowed without a second charge until Redeem ends it
// (when the message has really gone). So a caller allowed to go that then
// finds no connection free keeps the slot it paid for. Reservations are
// charges like any other, so the guarantee above holds for them too. A
// request whose slot is beyond the horizon is refused and charges nothing.
//
// # Leases
//
// A lease is one of at most Max concurrent holders of a key (a source IP
// and a provider: one SMTP connection). Leases expire after their TTL unless
// renewed, so the leases of a crashed replica free themselves. Acquire drops
// expired leases before it counts. A Keeper renews the leases of live
// holders in the background, all in one round trip every third of the TTL,
// so the TTL can be short (a crashed replica's slots free within seconds)
// while an SMTP session keeps its slot for as long as it lives.
//
// # Redis keys
//
// With the default prefix "mw:" (Options.Prefix), and KEY the caller's key
// (for example "src:127.0.0.2|prov:google"):
//
//	mw:rl:KEY      hash: field a window's period in Go syntax ("1s",
//	               "1h0m0s"), value its TAT in microseconds since the Unix
//	               epoch; field "r:ID" the slot of reservation ID. The hash
//	               expires (PEXPIRE) when its latest TAT has passed, so an
//	               idle key takes no memory.
//	mw:lease:KEY   sorted set: member a lease id (32 hex digits), score its
//	               expiry in microseconds since the Unix epoch. It expires
//	               with its last lease.
//
// Each call touches one key, so the layout works unchanged on Redis
// Cluster.
//
// # Throughput
//
// The hot path is one EVALSHA per message (Allow), or one round trip for a
// batch (AllowBatch pipelines the calls). BenchmarkAllow and
// BenchmarkAllowBatch measure both against a real redis-server.
package ratelimit
