// Package ispsim simulates the mailbox providers Mailwave delivers to, so
// that shaping, retries, bounce and complaint handling, reputation and
// warm-up are proven against servers that behave like the real ones.
//
// A Sim runs, all on loopback:
//
//   - an authoritative DNS server (RFC 1035) on one port over UDP and TCP,
//     with MX (including the RFC 7505 null MX), A/AAAA, TXT (SPF, DKIM,
//     DMARC), PTR, CNAME, forced NXDOMAIN/SERVFAIL answers and DNS
//     blocklist zones (RFC 5782) whose listings change at run time;
//   - one SMTP server (RFC 5321) per provider, each on its own 127.0.0.x
//     address and all on the same port, with per-source-IP connection
//     caps, per-session message caps and sliding-window rates answered in
//     the provider's own style, greylisting, unknown users and full
//     mailboxes, outages, slow and silent servers, STARTTLS (RFC 3207)
//     with a self-signed certificate, blocks of source IPs and
//     asynchronous delivery status notifications (RFC 3464);
//   - on every accepted message the receiver's checks: SPF (RFC 7208),
//     DKIM (RFC 6376) and DMARC (RFC 7489) against its own DNS, recorded as
//     Authentication-Results (RFC 8601);
//   - complaints as ARF reports (RFC 5965), with the recipient redaction
//     of RFC 6590, delivered into an IMAP mailbox (RFC 9051) or by SMTP;
//   - a Ledger of every accepted message, refusal and report, with
//     per-source-IP counters, a Wait for conditions, a JSON handler and
//     Prometheus metrics on the Sim's own registry.
//
// Time-based behaviour reads a Clock; tests pass a FakeClock and Advance
// it to run a 72-hour scenario in seconds. The world is described by a
// YAML Profile; DefaultProfile embeds one that documents every knob.
package ispsim
