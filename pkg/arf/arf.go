package arf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
	// Registers the common charsets with go-message, so that text parts
	// and encoded words in other charsets than UTF-8 decode.
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
)

// Errors returned by Parse.
var (
	// ErrNotReport: the message is not a feedback report in any form this
	// package knows.
	ErrNotReport = errors.New("arf: not a feedback report")
	// ErrMalformed: the message declares itself a feedback report
	// (report-type=feedback-report) but neither its machine-readable part
	// nor the reported message can be read.
	ErrMalformed = errors.New("arf: malformed feedback report")
)

// Feedback types: the IANA "Feedback Report Type Values" registry (RFC 5965
// §7.3, RFC 6430, RFC 6591) and "opt-out", which several providers send.
// Parse lowercases the Feedback-Type field; values outside this list are
// kept as they come.
const (
	FeedbackAbuse       = "abuse"
	FeedbackFraud       = "fraud"
	FeedbackVirus       = "virus"
	FeedbackOther       = "other"
	FeedbackNotSpam     = "not-spam"
	FeedbackOptOut      = "opt-out"
	FeedbackAuthFailure = "auth-failure"
)

// Variants name the form a report came in (Report.Variant).
const (
	// VariantRFC5965: multipart/report with report-type=feedback-report and
	// a message/feedback-report part, as RFC 5965 §2 requires.
	VariantRFC5965 = "rfc5965"
	// VariantNoReportType: a message/feedback-report part in a message
	// that does not declare report-type=feedback-report (the parameter is
	// missing, or the container is multipart/mixed).
	VariantNoReportType = "no-report-type"
	// VariantTextFeedback: the feedback fields are in a text part instead
	// of a message/feedback-report part.
	VariantTextFeedback = "text-feedback"
	// VariantNoFeedbackPart: declared a feedback report, but without
	// machine-readable fields; only the reported message is there, and the
	// feedback type is taken to be abuse.
	VariantNoFeedbackPart = "no-feedback-part"
	// VariantMicrosoftJMRP: Microsoft's Junk Mail Reporting Program
	// format: the reported message with an X-HmXmrOriginalRecipient header,
	// in a message whose subject is "complaint about message from <IP>".
	VariantMicrosoftJMRP = "microsoft-jmrp"
	// VariantAOLSComp: AOL's pre-ARF "scomp" complaint: the reported
	// message forwarded by scomp@aol.net (X-Loop: scomp).
	VariantAOLSComp = "aol-scomp"
)

// Report is one parsed feedback report. Fields that the report does not
// carry are zero.
type Report struct {
	// FeedbackType is the Feedback-Type field, lowercased (RFC 5965 §3.1):
	// one of the Feedback* constants or an unregistered value; "other" when
	// the machine-readable part lacks the field. Reports in
	// a provider format without the field (JMRP, scomp, no feedback part)
	// are "abuse": those programs send only spam complaints.
	FeedbackType string
	// UserAgent and Version are the fields of the same names (§3.1).
	UserAgent, Version string
	// OriginalMailFrom is the envelope sender of the reported message
	// (§3.2), without angle brackets; "" for the null path.
	OriginalMailFrom string
	// OriginalRcptTo are the envelope recipients (§3.2), without angle
	// brackets, in order. Providers often omit or redact them.
	OriginalRcptTo []string
	// ArrivalDate is the Arrival-Date field (§3.2) — or Received-Date, a
	// common misspelling — read leniently; zero when absent or unreadable.
	// ArrivalDateRaw is the field as it appeared.
	ArrivalDate    time.Time
	ArrivalDateRaw string
	// SourceIP is the Source-IP field (§3.2). When the report has no
	// machine-readable fields at all, it is taken from the human-readable
	// text ("received from IP 192.0.2.1"); a report with fields but no
	// Source-IP leaves it invalid.
	SourceIP netip.Addr
	// ReportedDomains are the Reported-Domain fields (§3.2), lowercased.
	ReportedDomains []string
	// ReportedURIs are the Reported-URI fields (§3.2).
	ReportedURIs []string
	// AuthResults are the non-empty Authentication-Results fields (§3.2).
	AuthResults []string
	// Incidents is the Incidents field (§3.2): how many incidents the
	// report stands for. A report stands for at least one, so it is 1
	// when the field is absent or not a positive number.
	Incidents int
	// OriginalEnvelopeID and ReportingMTA are the fields of the same names
	// (§3.2), the latter without its "dns;" type.
	OriginalEnvelopeID, ReportingMTA string
	// AuthFailure holds the RFC 6591 fields; nil unless the report has an
	// Auth-Failure field or its type is auth-failure.
	AuthFailure *AuthFailure
	// Fields are all the machine-readable fields, as given.
	Fields mail.Header
	// Header is the header of the report message itself.
	Header mail.Header
	// Reported is the reported message, or only its header.
	Reported Reported
	// Variant is the form the report came in: one of the Variant*
	// constants.
	Variant string
	// Redacted reports that no usable recipient address is in the report:
	// Recipient returns "" and the platform has to recover the recipient
	// from its own return path (SenderCandidates).
	Redacted bool
	// Forwarded reports that the report came attached (message/rfc822) to
	// another message, as when a mailbox forwards what it received; every
	// other field, Header included, is the attached report's.
	Forwarded bool
	// Fingerprint identifies the report, so that the same report received
	// twice counts once: the hex SHA-256 of its feedback type, sorted
	// Original-Rcpt-To, arrival date, Source-IP and the reported message's
	// Message-ID (or, without one, the reported message itself).
	Fingerprint string
}

// AuthFailure holds the authentication-failure fields of RFC 6591 §3.1 (and
// Identity-Alignment, RFC 7489 §7.3).
type AuthFailure struct {
	// Type is the Auth-Failure field, lowercased: adsp, bodyhash, revoked,
	// signature, spf or dmarc.
	Type string
	// DeliveryResult is the Delivery-Result field: delivered, spam,
	// policy, reject or other.
	DeliveryResult string
	// DKIMDomain, DKIMIdentity and DKIMSelector are the DKIM-Domain,
	// DKIM-Identity and DKIM-Selector fields.
	DKIMDomain, DKIMIdentity, DKIMSelector string
	// DKIMCanonicalizedHeader and DKIMCanonicalizedBody are the base64
	// fields of the same names.
	DKIMCanonicalizedHeader, DKIMCanonicalizedBody string
	// SPFDNS are the SPF-DNS fields.
	SPFDNS []string
	// IdentityAlignment is the Identity-Alignment field.
	IdentityAlignment string
}

// Reported is the reported message, or only its header.
type Reported struct {
	// PartType is the media type of the part that carried it
	// ("message/rfc822", "text/rfc822-headers", …), "inline" when it was
	// found inside a text part, or "" when the report does not include it.
	PartType string
	// Header is its header, read leniently.
	Header mail.Header
	// Raw is the reported message (or header) as it came, after the
	// transfer encoding of its part was undone.
	Raw []byte
	// Full reports that the whole message is there, body included, and
	// not only its header (text/rfc822-headers, RFC 5965 §2 (d)).
	Full bool
	// MessageID, ReturnPath, From, To, Subject and Date are its fields of
	// those names, trimmed; ReturnPath without angle brackets, Subject with
	// encoded words (RFC 2047) decoded.
	MessageID, ReturnPath, From, To, Subject, Date string
	// ToAddrs are the addresses in To.
	ToAddrs []string
	// FeedbackID is its Feedback-ID field, split (Gmail's format).
	FeedbackID FeedbackID
	// Mailwave are its X-Mailwave-* fields.
	Mailwave mail.Header
	// Redacted reports that To has no usable address (LooksRedacted for
	// every address, or no To at all).
	Redacted bool
}

// Parse reads a feedback report. It returns ErrNotReport when raw is not a
// feedback report and ErrMalformed (wrapping the cause) when it declares
// itself one but cannot be read.
func Parse(raw []byte) (*Report, error) {
	return parse(raw, 0)
}

// maxForwardDepth bounds how deep parse looks for a forwarded report.
const maxForwardDepth = 2

func parse(raw []byte, depth int) (*Report, error) {
	top := readHeaderBlock(raw, false)
	if len(top.fields) == 0 {
		return nil, fmt.Errorf("%w: no header", ErrNotReport)
	}
	var w walker
	hdr := goHeader(top.fields)
	topType, topParams, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
	if topType == "" {
		topType = fallbackMediaType(hdr.Get("Content-Type"))
	}
	body := raw[top.bodyAt:]
	if !top.hasBody {
		body = nil
	}
	ent, _ := message.New(message.Header{Header: hdr}, bytes.NewReader(body))
	// Entity errors are an unknown charset or transfer encoding; the
	// entity can still be read and the fields are ASCII in practice.
	walkErr := w.walk(ent, 0)

	declared := topType == "multipart/report" && strings.EqualFold(topParams["report-type"], "feedback-report")
	r := &Report{Header: top.header(), Incidents: 1}

	fb, variant := w.feedbackBlock()
	switch {
	case fb != nil && variant == "" && declared:
		r.Variant = VariantRFC5965
	case fb != nil && variant == "":
		r.Variant = VariantNoReportType
	case fb != nil:
		r.Variant = variant
	}
	rep := w.reported()
	if r.Variant == "" {
		switch {
		case declared && rep != nil:
			r.Variant = VariantNoFeedbackPart
		case declared:
			if walkErr == nil {
				walkErr = errors.New("no feedback part and no reported message")
			}
			return nil, fmt.Errorf("%w: %w", ErrMalformed, walkErr)
		case isJMRP(r.Header, rep):
			r.Variant = VariantMicrosoftJMRP
		case isSComp(r.Header):
			r.Variant = VariantAOLSComp
		default:
			if fwd := w.forwarded(depth); fwd != nil {
				return fwd, nil
			}
			return nil, ErrNotReport
		}
		if rep == nil {
			// JMRP and scomp may send the reported message as the
			// report itself, with the provider's fields added.
			rep = &leaf{mediaType: "message/rfc822", body: raw}
		}
		r.FeedbackType = FeedbackAbuse
		r.SourceIP = w.textSourceIP(r.Header.Get("Subject"))
	}
	if fb != nil {
		r.fill(*fb)
	}
	if rep != nil {
		r.Reported = parseReported(rep.body, rep.mediaType)
	}
	r.Redacted = r.Recipient() == ""
	r.Fingerprint = fingerprint(r)
	return r, nil
}

// IsReport reports whether raw is a feedback report that Parse reads.
func IsReport(raw []byte) bool {
	_, err := Parse(raw)
	return err == nil
}

// Recipient returns the best evidence the report gives of the complaining
// recipient: the first Original-Rcpt-To that is not redacted, else JMRP's
// X-HmXmrOriginalRecipient, else the first address in the reported
// message's To that is not redacted; "" when every one is redacted or
// absent. It is a claim of the report's sender, not verified.
func (r *Report) Recipient() string {
	for _, a := range r.OriginalRcptTo {
		if !LooksRedacted(a) {
			return a
		}
	}
	if v := addrSpec(r.Reported.Header.Get("X-Hmxmroriginalrecipient")); v != "" && !LooksRedacted(v) {
		return v
	}
	for _, a := range r.Reported.ToAddrs {
		if !LooksRedacted(a) {
			return a
		}
	}
	return ""
}

// maxCandidates bounds SenderCandidates: a genuine report has a handful.
const maxCandidates = 16

// SenderCandidates returns, without duplicates and in order of trust, the
// envelope-sender addresses the report carries for the reported message:
// Original-Mail-From, the reported message's Return-Path, and the
// "envelope-from" its Received fields record. One of them is the VERP
// return path the platform sent with; the verp package decides which, by
// its signature. Local parts keep their case.
func (r *Report) SenderCandidates() []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		a = strings.TrimSpace(a)
		if a == "" || !strings.Contains(a, "@") || seen[strings.ToLower(a)] || len(out) >= maxCandidates {
			return
		}
		seen[strings.ToLower(a)] = true
		out = append(out, a)
	}
	add(r.OriginalMailFrom)
	add(r.Reported.ReturnPath)
	for _, rcv := range r.Reported.Header["Received"] {
		low := asciiLower(rcv)
		for i := 0; len(out) < maxCandidates; {
			j := strings.Index(low[i:], "envelope-from")
			if j < 0 {
				break
			}
			i += j + len("envelope-from")
			rest := strings.TrimLeft(rcv[i:], " \t=")
			end := strings.IndexAny(rest, " \t;)")
			if end < 0 {
				end = len(rest)
			}
			add(addrSpec(rest[:end]))
		}
	}
	return out
}

// fill copies the machine-readable fields into r (RFC 5965 §3).
func (r *Report) fill(b headerBlock) {
	h := b.header()
	r.Fields = h
	// A missing or unreadable type is "other" (RFC 5965 §7.3): the report
	// is kept, but nothing acts on it as a complaint.
	r.FeedbackType = normaliseType(h.Get("Feedback-Type"))
	if r.FeedbackType == "" {
		r.FeedbackType = FeedbackOther
	}
	r.UserAgent = h.Get("User-Agent")
	r.Version = h.Get("Version")
	if vs, ok := h["Original-Mail-From"]; ok && len(vs) > 0 {
		r.OriginalMailFrom = addrSpec(vs[0])
	}
	for _, v := range h["Original-Rcpt-To"] {
		r.OriginalRcptTo = append(r.OriginalRcptTo, splitRcpts(v)...)
	}
	r.ArrivalDateRaw = h.Get("Arrival-Date")
	if r.ArrivalDateRaw == "" {
		r.ArrivalDateRaw = h.Get("Received-Date")
	}
	if t, ok := parseDate(r.ArrivalDateRaw); ok {
		r.ArrivalDate = t
	}
	r.SourceIP = parseIP(h.Get("Source-Ip"))
	for _, v := range h["Reported-Domain"] {
		if d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(v)), "."); d != "" {
			r.ReportedDomains = append(r.ReportedDomains, d)
		}
	}
	for _, v := range h["Reported-Uri"] {
		if v != "" {
			r.ReportedURIs = append(r.ReportedURIs, v)
		}
	}
	for _, v := range h["Authentication-Results"] {
		if v != "" {
			r.AuthResults = append(r.AuthResults, v)
		}
	}
	if n, err := strconv.Atoi(strings.TrimSpace(h.Get("Incidents"))); err == nil && n > 0 {
		r.Incidents = n
	}
	r.OriginalEnvelopeID = h.Get("Original-Envelope-Id")
	r.ReportingMTA = h.Get("Reporting-Mta")
	if i := strings.IndexByte(r.ReportingMTA, ';'); i >= 0 {
		r.ReportingMTA = strings.TrimSpace(r.ReportingMTA[i+1:])
	}
	if h.Get("Auth-Failure") != "" || r.FeedbackType == FeedbackAuthFailure {
		r.AuthFailure = &AuthFailure{
			Type:                    strings.ToLower(h.Get("Auth-Failure")),
			DeliveryResult:          strings.ToLower(h.Get("Delivery-Result")),
			DKIMDomain:              h.Get("Dkim-Domain"),
			DKIMIdentity:            h.Get("Dkim-Identity"),
			DKIMSelector:            h.Get("Dkim-Selector"),
			DKIMCanonicalizedHeader: h.Get("Dkim-Canonicalized-Header"),
			DKIMCanonicalizedBody:   h.Get("Dkim-Canonicalized-Body"),
			SPFDNS:                  h["Spf-Dns"],
			IdentityAlignment:       h.Get("Identity-Alignment"),
		}
	}
}

// normaliseType lowercases a Feedback-Type value and drops what follows
// the type word (parameters, comments).
func normaliseType(v string) string {
	v = strings.ToLower(stripComments(v))
	if i := strings.IndexAny(v, "; \t,"); i >= 0 {
		v = v[:i]
	}
	switch v {
	case "notspam", "not_spam":
		return FeedbackNotSpam
	case "optout", "opt_out":
		return FeedbackOptOut
	case "authfailure", "auth_failure":
		return FeedbackAuthFailure
	}
	return v
}

// splitRcpts reads one Original-Rcpt-To value. RFC 5965 §3.2 puts one
// address in each field; some generators put a comma-separated list.
func splitRcpts(v string) []string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	if strings.Count(v, "@") > 1 && strings.ContainsAny(v, ",;") {
		var out []string
		for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' }) {
			if a := addrSpec(p); a != "" {
				out = append(out, a)
			}
		}
		return out
	}
	if a := addrSpec(v); a != "" {
		return []string{a}
	}
	return nil
}

// parseIP reads an IP address the way Source-IP fields write it: bare,
// in brackets, with an "IPv6:" prefix (RFC 5321 §4.1.3), or followed by a
// comment or a host name.
func parseIP(v string) netip.Addr {
	v = strings.TrimSpace(stripComments(v))
	if f := strings.Fields(v); len(f) > 0 {
		v = f[0]
	}
	v = strings.Trim(v, "[]<>;,")
	if len(v) > 5 && strings.EqualFold(v[:5], "ipv6:") {
		v = v[5:]
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		if ap, err := netip.ParseAddrPort(v); err == nil {
			return ap.Addr().Unmap()
		}
		return netip.Addr{}
	}
	return a.Unmap()
}

// parseReported reads the reported message (or its header).
func parseReported(b []byte, partType string) Reported {
	blk := readHeaderBlock(b, true)
	h := blk.header()
	rp := Reported{
		PartType:  partType,
		Header:    h,
		Raw:       b,
		MessageID: h.Get("Message-Id"),
		From:      decodeWords(h.Get("From")),
		To:        decodeWords(h.Get("To")),
		Subject:   decodeWords(h.Get("Subject")),
		Date:      h.Get("Date"),
	}
	rp.Full = partType != "text/rfc822-headers" && partType != "message/rfc822-headers" &&
		partType != "message/global-headers" && blk.hasBody && len(bytes.TrimSpace(b[blk.bodyAt:])) > 0
	if vs := h["Return-Path"]; len(vs) > 0 {
		rp.ReturnPath = addrSpec(vs[0])
	}
	rp.ToAddrs = addrList(rp.To)
	if fid, ok := ParseFeedbackID(h.Get("Feedback-Id")); ok {
		rp.FeedbackID = fid
	}
	for k, vs := range h {
		if strings.HasPrefix(k, "X-Mailwave-") {
			if rp.Mailwave == nil {
				rp.Mailwave = make(mail.Header)
			}
			rp.Mailwave[k] = vs
		}
	}
	rp.Redacted = true
	for _, a := range rp.ToAddrs {
		if !LooksRedacted(a) {
			rp.Redacted = false
		}
	}
	return rp
}

// decodeWords decodes RFC 2047 encoded words, and returns v unchanged
// when they do not decode.
func decodeWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	dec := mime.WordDecoder{CharsetReader: message.CharsetReader}
	if s, err := dec.DecodeHeader(v); err == nil {
		return s
	}
	return v
}

// goHeader builds a go-message header from lenient fields. textproto.Header
// prepends on Add, so fields are added last first to keep their order.
func goHeader(fs []field) textproto.Header {
	var h textproto.Header
	for i := len(fs) - 1; i >= 0; i-- {
		h.Add(fs[i].key, fs[i].value)
	}
	return h
}

// fallbackMediaType reads the type/subtype of a Content-Type value whose
// parameters do not parse (mime.ParseMediaType gives up on the whole).
func fallbackMediaType(v string) string {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(strings.TrimSpace(v))
}

// Limits on the MIME tree, so that hostile input cannot make the walk
// expensive.
const (
	maxDepth = 8
	maxParts = 64
)

// leaf is one non-multipart part of the report.
type leaf struct {
	mediaType string
	filename  string
	body      []byte
}

// walker collects the leaves of the MIME tree, in order.
type walker struct {
	leaves []leaf
}

func (w *walker) walk(e *message.Entity, depth int) error {
	if e == nil || len(w.leaves) >= maxParts {
		return nil
	}
	mt, params, err := e.Header.ContentType()
	if mt == "" {
		mt = fallbackMediaType(e.Header.Get("Content-Type"))
	}
	if err != nil && mt == "" {
		mt = "text/plain" // RFC 2045 §5.2 default
	}
	if mr := e.MultipartReader(); mr != nil && depth < maxDepth && params["boundary"] != "" {
		for len(w.leaves) < maxParts {
			p, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if p == nil {
				return fmt.Errorf("reading part: %w", err)
			}
			// A non-nil part with an error has an unknown charset or
			// encoding; it is still readable.
			if err := w.walk(p, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if mt == "" {
		mt = "text/plain"
	}
	body, err := io.ReadAll(e.Body)
	l := leaf{mediaType: mt, body: body}
	if _, dp, derr := e.Header.ContentDisposition(); derr == nil {
		l.filename = dp["filename"]
	}
	if l.filename == "" {
		l.filename = params["name"]
	}
	w.leaves = append(w.leaves, l)
	if err != nil {
		return fmt.Errorf("reading %s part: %w", mt, err)
	}
	return nil
}

// feedbackBlock finds the machine-readable fields: a message/feedback-report
// part (variant ""), or else a text part holding a Feedback-Type field
// (VariantTextFeedback).
func (w *walker) feedbackBlock() (*headerBlock, string) {
	for _, l := range w.leaves {
		if l.mediaType == "message/feedback-report" {
			b := readHeaderBlock(l.body, false)
			return &b, ""
		}
	}
	for _, l := range w.leaves {
		if !strings.HasPrefix(l.mediaType, "text/") || isHeadersType(l.mediaType) {
			continue
		}
		if b, ok := textFeedback(l.body); ok {
			return &b, VariantTextFeedback
		}
	}
	return nil, ""
}

// textFeedback finds a block of feedback fields inside text: the run of
// field lines around a Feedback-Type field.
func textFeedback(body []byte) (headerBlock, bool) {
	start, prev := -1, -1
	inBlock := false
	for pos := 0; pos < len(body); {
		line, next := nextLine(body, pos)
		switch {
		case isFieldLine(line):
			if !inBlock {
				prev, inBlock = pos, true
			}
			if i := bytes.IndexByte(line, ':'); strings.EqualFold(string(bytes.TrimSpace(line[:i])), "Feedback-Type") {
				start = prev
			}
		case len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && inBlock:
		default:
			inBlock = false
		}
		if start >= 0 {
			break
		}
		pos = next
	}
	if start < 0 {
		return headerBlock{}, false
	}
	b := readHeaderBlock(body[start:], true)
	return b, b.has("Feedback-Type")
}

// isHeadersType reports whether a media type is one RFC 5965 §2 (d) and
// RFC 6532 allow for the reported message or its header.
func isHeadersType(mt string) bool {
	switch mt {
	case "message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
		"message/global", "message/global-headers", "text/rfc822":
		return true
	}
	return false
}

// reported finds the reported message: a part of a type made for it, else
// a part of another type that holds a message (an attached .eml, a
// text/plain copy), else a message inlined in a text part after the
// human-readable text.
func (w *walker) reported() *leaf {
	for i := range w.leaves {
		if isHeadersType(w.leaves[i].mediaType) {
			return &w.leaves[i]
		}
	}
	for i, l := range w.leaves {
		if l.mediaType == "message/feedback-report" {
			continue
		}
		ext := strings.ToLower(path.Ext(l.filename))
		attached := ext == ".eml" || ext == ".msg" || l.mediaType == "application/octet-stream" || i > 0
		if attached && looksLikeMessage(l.body) {
			return &leaf{mediaType: l.mediaType, filename: l.filename, body: l.body}
		}
	}
	for _, l := range w.leaves {
		if !strings.HasPrefix(l.mediaType, "text/") {
			continue
		}
		if at, ok := inlineMessage(l.body); ok {
			return &leaf{mediaType: "inline", body: l.body[at:]}
		}
	}
	return nil
}

// messageFields are the fields that mark a header block as a message's.
var messageFields = []string{"From", "Message-Id", "Received", "Return-Path", "Date", "Subject", "To"}

// looksLikeMessage reports whether b starts with the header of an email
// message: at least three fields, among them From or Message-ID.
func looksLikeMessage(b []byte) bool {
	blk := readHeaderBlock(b, true)
	if len(blk.fields) < 3 || !(blk.has("From") || blk.has("Message-Id")) {
		return false
	}
	n := 0
	for _, k := range messageFields {
		if blk.has(k) {
			n++
		}
	}
	return n >= 3 && !blk.has("Feedback-Type")
}

// maxInlineTries bounds the number of places inlineMessage tries, so that
// text with many field-like lines stays linear.
const maxInlineTries = 16

// inlineMessage finds a message header block inside text (a provider that
// pastes the reported message under its own explanation) and returns its
// offset.
func inlineMessage(body []byte) (int, bool) {
	tries := 0
	atLineStart := true
	for pos := 0; pos < len(body) && tries < maxInlineTries; {
		line, next := nextLine(body, pos)
		if atLineStart && isFieldLine(line) {
			i := bytes.IndexByte(line, ':')
			key := strings.ToLower(string(bytes.TrimSpace(line[:i])))
			switch key {
			case "return-path", "received", "from", "message-id", "date", "subject", "to", "x-hmxmroriginalrecipient":
				tries++
				if looksLikeMessage(body[pos:]) {
					return pos, true
				}
				// Skip the block just tried.
				blk := readHeaderBlock(body[pos:], true)
				if blk.bodyAt > 0 {
					next = pos + blk.bodyAt
				}
			}
		}
		pos = next
	}
	return 0, false
}

// forwarded returns the first message/rfc822 part that is itself a
// feedback report, or nil.
func (w *walker) forwarded(depth int) *Report {
	if depth >= maxForwardDepth {
		return nil
	}
	for _, l := range w.leaves {
		if l.mediaType != "message/rfc822" && l.mediaType != "message/global" {
			continue
		}
		if r, err := parse(l.body, depth+1); err == nil {
			r.Forwarded = true
			return r
		}
	}
	return nil
}

// isJMRP recognises Microsoft's Junk Mail Reporting Program format.
func isJMRP(h mail.Header, rep *leaf) bool {
	if h.Get("X-Hmxmroriginalrecipient") != "" {
		return true
	}
	if rep != nil && readHeaderBlock(rep.body, true).has("X-Hmxmroriginalrecipient") {
		return true
	}
	from := strings.ToLower(h.Get("From"))
	subj := strings.ToLower(h.Get("Subject"))
	return rep != nil && strings.Contains(subj, "complaint about message from") &&
		(strings.Contains(from, "hotmail.com") || strings.Contains(from, "microsoft.com") ||
			strings.Contains(from, "outlook.com") || strings.Contains(from, "msn.com"))
}

// isSComp recognises AOL's pre-ARF complaint format.
func isSComp(h mail.Header) bool {
	for _, v := range h["X-Loop"] {
		if strings.Contains(strings.ToLower(v), "scomp") {
			return true
		}
	}
	return strings.Contains(strings.ToLower(h.Get("From")), "scomp@aol.net")
}

// ipMarkers precede the source IP in the human-readable text of reports
// that have no machine-readable fields.
var ipMarkers = []string{
	"received from ip address", "received from ip", "complaint about message from",
	"from ip address", "from ip", "source ip:", "source-ip:",
}

// textSourceIP finds the source IP in the subject or the human-readable
// text of a report without machine-readable fields.
func (w *walker) textSourceIP(subject string) netip.Addr {
	texts := []string{subject}
	for _, l := range w.leaves {
		if l.mediaType == "text/plain" || l.mediaType == "text/html" {
			texts = append(texts, string(l.body))
		}
	}
	for _, t := range texts {
		low := asciiLower(t)
		for _, m := range ipMarkers {
			i := strings.Index(low, m)
			if i < 0 {
				continue
			}
			rest := strings.Fields(t[i+len(m):])
			if len(rest) == 0 {
				continue
			}
			if a := parseIP(strings.TrimRight(rest[0], ".,;:)")); a.IsValid() {
				return a
			}
		}
	}
	return netip.Addr{}
}

// asciiLower lowercases ASCII letters only, so that offsets into the
// result are offsets into s (strings.ToLower may change the length of
// text that is not valid UTF-8).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
