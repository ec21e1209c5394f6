// Package arf parses email feedback reports: the Abuse Reporting Format of
// RFC 5965 ("multipart/report; report-type=feedback-report" with a
// machine-readable "message/feedback-report" part and the reported message
// or its header), the authentication-failure fields of RFC 6591, the
// redaction conventions of RFC 6590, and the non-conforming forms that
// mailbox providers send in practice: a missing report-type parameter, the
// feedback fields in a text/plain part, the reported message attached with
// another media type or inlined in a text part, a report forwarded as an
// attachment, Microsoft's Junk Mail Reporting Program (JMRP) and AOL's
// older "scomp" reports.
//
// A "this is spam" click is the strongest signal a mailbox provider sends
// back, so the parser is lenient in what it reads and records how the
// report deviated (Report.Variant). It also exposes what the platform needs
// to recover a redacted recipient from the reported message — the return
// path that carries the signed VERP token, the Message-ID, Gmail's
// Feedback-ID and the X-Mailwave-* headers — without verifying any of it:
// the verp package does that.
//
// Parsing is pure: no I/O, no clock. MIME structure is read with
// github.com/emersion/go-message; header blocks inside the report are read
// with a lenient reader of our own because providers truncate and mangle
// them and a strict reader would give up on the first bad line.
package arf
