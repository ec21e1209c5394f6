// Package events is the JetStream plumbing every Mailwave service shares:
// it creates the streams, durable consumers and key-value buckets of the
// mailwave.v1 contract (idempotently, at start), publishes protobuf
// payloads with their type, idempotency key and trace id in headers, and
// consumes them with a worker pool that dead-letters what it cannot decode
// instead of redelivering it forever.
package events
