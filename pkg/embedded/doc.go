// Package embedded starts the infrastructure Mailwave needs when none is
// given: a NATS server with JetStream in the same process, and Redis — a
// redis-server found on PATH, or an in-process Redis-compatible store whose
// keys really expire. Development (make run) and tests use it; production
// points the services at a NATS cluster and Redis instead.
package embedded
