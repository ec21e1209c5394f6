package arf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"time"
)

// fingerprint identifies a report so that the same report received twice —
// redelivered by the provider, or fetched from two feedback mailboxes —
// counts once, while two recipients complaining about one campaign count
// twice. It is the hex SHA-256 of a canonical text made of:
//
//   - the feedback type;
//   - the Original-Rcpt-To addresses, lowercased and sorted;
//   - the arrival date in UTC (or the raw field when it does not parse);
//   - the Source-IP;
//   - the reported message's Message-ID without angle brackets and white
//     space — or, when it has none, the SHA-256 of the reported message
//     with line ends made LF and trailing white space removed; or, when
//     the report has no reported message, its machine-readable fields,
//     sorted.
//
// The report message's own header (its Received trace, its Message-ID)
// is left out: two deliveries of one report differ there.
func fingerprint(r *Report) string {
	var b strings.Builder
	b.WriteString("arf-fingerprint-v1\n")
	b.WriteString("type=" + r.FeedbackType + "\n")
	rcpts := make([]string, 0, len(r.OriginalRcptTo))
	for _, a := range r.OriginalRcptTo {
		rcpts = append(rcpts, strings.ToLower(a))
	}
	slices.Sort(rcpts)
	b.WriteString("rcpt=" + strings.Join(rcpts, ",") + "\n")
	if !r.ArrivalDate.IsZero() {
		b.WriteString("arrival=" + r.ArrivalDate.UTC().Format(time.RFC3339) + "\n")
	} else {
		b.WriteString("arrival-raw=" + strings.TrimSpace(r.ArrivalDateRaw) + "\n")
	}
	if r.SourceIP.IsValid() {
		b.WriteString("ip=" + r.SourceIP.String() + "\n")
	}
	switch mid := normaliseMessageID(r.Reported.MessageID); {
	case mid != "":
		b.WriteString("message-id=" + mid + "\n")
	case r.Reported.PartType != "":
		sum := sha256.Sum256(normaliseMessage(r.Reported.Raw))
		b.WriteString("message=" + hex.EncodeToString(sum[:]) + "\n")
	default:
		var lines []string
		for k, vs := range r.Fields {
			for _, v := range vs {
				lines = append(lines, k+":"+v)
			}
		}
		slices.Sort(lines)
		b.WriteString("fields=" + strings.Join(lines, "\n") + "\n")
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// normaliseMessageID removes the angle brackets and any white space
// around or inside a Message-ID (RFC 5322 §3.6.4), keeping its case.
func normaliseMessageID(v string) string {
	v = strings.Join(strings.Fields(v), "")
	return strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
}

// normaliseMessage makes line ends LF, drops trailing white space of each
// line and trailing blank lines, so that a message re-encoded in transit
// hashes the same.
func normaliseMessage(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for pos := 0; pos < len(b); {
		line, next := nextLine(b, pos)
		out = append(out, bytes.TrimRight(line, " \t")...)
		out = append(out, '\n')
		pos = next
	}
	return bytes.TrimRight(out, "\n")
}
