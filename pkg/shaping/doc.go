// Package shaping is the sender's delivery policy: how fast it may deliver
// to each mailbox provider from each source IP, how long a deferred message
// waits before its next attempt (RFC 5321 §4.5.4.1 leaves retry strategy to
// the sender), and how long a message is retried before it expires.
//
// The policy is YAML. A shipped default (default.yaml, embedded; printed by
// DefaultYAML with its comments) covers Google, Yahoo, Microsoft, Apple and
// the long tail; an operator's file has the same form and is laid over it
// field by field, so it names only what differs. Parsing is strict: an
// unknown field, a wrong type or a value out of range is an error naming
// the field's path ("providers.google.messages_per_hour"), so a mistake
// stops the service instead of passing silently.
//
// # Merging
//
// Policy.Limits merges, later layers winning field by field:
//
//  1. providers.default (the long tail)
//  2. providers.<provider>
//  3. tenants.<tenant>.limits
//  4. tenants.<tenant>.providers.<provider>
//  5. source_ips.<ip>.limits
//  6. source_ips.<ip>.providers.<provider>
//
// Limits are meant per source IP per provider: the caller keys its rate
// counters by both. Tenants that share a source IP share its budget unless
// the caller puts the tenant into the key as well.
//
// # Windows
//
// Limits.MessageWindows turns the rates into ratelimit windows. The
// per-second rate is a burst cap: up to that many at once, that many per
// second sustained. The per-minute and per-hour rates are ceilings that
// hold in every sliding minute or hour: such a window of L per period P
// has a burst B of one sixtieth of L (at most the next shorter window's
// limit, at least 1) and a sustained rate of L−B+1 per P, so that GCRA's
// bound, B plus one request per emission interval, never exceeds L within
// any interval shorter than P. The cost is a sustained rate a few per cent
// below L (2951 instead of 3000 an hour), the gain is that a provider
// counting per sliding hour never sees one message too many.
//
// # Throttles
//
// A throttle of the reputation monitor multiplies the rates by a factor
// (Limits.Scale); a factor of 0 pauses. A pin fixes the hourly rate
// (Limits.Pin).
package shaping
