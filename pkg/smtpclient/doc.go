// Package smtpclient is the outbound SMTP client of the sender: one
// session (RFC 5321) from one source IP to one MX, reused for many
// messages.
//
// A session binds its source IP or egresses through a SOCKS5 proxy (RFC
// 1928, how pods reach dedicated IPs), greets with the source's hostname
// (EHLO, HELO when EHLO is refused), upgrades with STARTTLS when offered
// (RFC 3207; opportunistic per RFC 7435 unless the route requires TLS, and
// records whether the certificate verified), and sends each message with
// MAIL, RCPT and DATA pipelined when the server offers PIPELINING (RFC
// 2920). Towards a relay it can start with implicit TLS instead (RFC 8314
// §3.3) and authenticate with SMTP AUTH (RFC 4954; PLAIN, RFC 4616, or
// LOGIN), never over plaintext. SIZE (RFC 1870), 8BITMIME (RFC 6152) and
// SMTPUTF8 (RFC 6531) are declared when offered and needed. Each phase has its own timeout (RFC
// 5321 §4.5.3.2) and a cancelled context closes the connection.
//
// Every failure is an *Error naming the Phase, the reply Code and
// EnhancedCode (RFC 3463, announced per RFC 2034) and whether it is
// Permanent or Temporary; the sender's classifier builds on that.
//
// Why our own client on bufio rather than go-smtp's: go-smtp's client
// sends each command and waits for its reply, so it cannot pipeline, which
// halves throughput on a reused connection; its NewClientStartTLS greets
// as "localhost" and fails when STARTTLS is absent, the opposite of
// opportunistic TLS; and its per-command reply parsing allocates strings
// for every 250. A session is a few hundred lines: replies are parsed into
// a reused buffer, content is dot-stuffed straight from the caller's slice
// through one buffered writer, and a delivered message costs five small
// allocations (the Result, its recipient slice, the queue-id string and
// the context watch that closes the connection when ctx ends).
// go-smtp's server is what the tests talk to.
package smtpclient
