// Package spf evaluates Sender Policy Framework records as RFC 7208 specifies
// them: a strict parser for "v=spf1" records, the check_host() function with
// its processing limits (§4.6.4), macro expansion (§7) and explanations
// (§6.2), and a DNS client that sends every query to one chosen server.
//
// The package replaces blitiri.com.ar/go/spf for evaluation. That library
// evaluates a record term by term and stops at the first match, so a syntax
// error after the matching term goes unnoticed, while RFC 7208 §4.6 makes the
// whole record a permerror; it also accepts domain-specs that do not end in a
// valid top label (§7.1), does not implement the %{p} macro nor explanations,
// and cannot tell a parsed record apart from its evaluation, which the
// authentication audit needs in order to count lookups and rewrite records.
// Every receiver that parses strictly returns permerror for such a record, and
// a sender must know that before it sends.
package spf
