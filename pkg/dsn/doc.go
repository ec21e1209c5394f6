// Package dsn reads bounce messages — delivery status notifications — and
// says, for each recipient they report on, what happened and why.
//
// It reads the standard form of RFC 3464 (a "multipart/report;
// report-type=delivery-status" message, RFC 6522, whose
// "message/delivery-status" part carries per-message fields such as
// Reporting-MTA and Arrival-Date and per-recipient fields such as
// Final-Recipient, Original-Recipient, Action, Status, Remote-MTA and
// Diagnostic-Code, §2.2 and §2.3), the internationalised
// "message/global-delivery-status" of RFC 6533, and the prose that real
// mail systems send instead of or beside it: Postfix, Sendmail, Exim, qmail,
// Exchange and Office 365, Gmail, Yahoo, Amazon SES notifications and the
// long tail of appliances, carriers and mailing-list managers. The prose
// reader does not key on product names; it looks for what every such
// message has: a recipient address standing on its own or introducing a
// line, followed by the remote server's reply or the reporting system's
// explanation.
//
// Each reported recipient becomes a Record whose reason and hard/soft
// verdict come from package reason, the same rule set the sender applies to
// live SMTP replies, so a reason means the same wherever it was learnt.
//
// A message that is not a bounce is still described: an RFC 3834
// auto-reply (Auto-Submitted, X-Autoreply, Precedence: auto_reply, an
// "out of office" subject) is KindAutoreply, an RFC 5965 feedback report is
// KindARF (package arf reads it), anything else KindOther; none of them has
// IsBounce set. A positive DSN (every recipient delivered, relayed or
// expanded) is KindDSN without IsBounce.
//
// For correlation, Message.Original exposes the headers of the returned
// message (Message-ID, Return-Path, From, To, Subject, and every other
// header, such as X-Mailwave-* and Feedback-ID) whether it came back as a
// message/rfc822 or text/rfc822-headers part or inline in the text.
//
// Records are matched to the prose by address: a recipient's explanation
// runs from its first mention to the first mention of the next one, and the
// remote server's reply in it (a "550 5.1.1 …" line, a Sendmail transcript)
// is preferred to the reporting system's own words. An RFC 3464 record
// without a useful Diagnostic-Code borrows that explanation.
//
// Parsing is pure — no I/O, no clock — never panics, and fails only on
// input that is not a message at all. The MIME walk is lenient and our own
// (bounces are full of MIME defects a strict reader gives up on); charsets
// are decoded with github.com/emersion/go-message/charset. Only the start
// of large parts is read (see the limits in mime.go), which keeps the cost
// of a message bounded.
package dsn
