package dsn

import (
	"net/textproto"
	"strconv"
	"strings"

	"github.com/mailwave/mailwave/pkg/reason"
)

// build turns the header and parts of a message into its description.
//
// It also returns the text of a returned message found inline after the
// explanation, if any.
func build(top textproto.MIMEHeader, p *parts) (*Message, string) {
	m := &Message{
		Kind:    KindOther,
		From:    top.Get("From"),
		Subject: top.Get("Subject"),
	}
	ct := strings.ToLower(top.Get("Content-Type"))
	if p.feedback || strings.Contains(ct, "feedback-report") {
		m.Kind = KindARF
		m.Original = originalOf(p, "")
		return m, ""
	}

	text := strings.Join(p.texts, "\n")
	expl, inlineReturned := splitReturned(text)
	m.Original = originalOf(p, inlineReturned)

	// Standard reports first: a delivery-status part, or its fields
	// written into the text.
	var pm perMessage
	var srecs []statusRecord
	for _, b := range p.status {
		x, rs := readStatus(b)
		if pm.reportingMTA == "" {
			pm = x
		}
		srecs = append(srecs, rs...)
	}
	if len(srecs) == 0 {
		pm, srecs = inlineStatus(expl)
	}
	m.ReportingMTA, m.ArrivalDate = pm.reportingMTA, pm.arrivalDate

	bounceish := isBounceSender(top.Get("From")) || isBounceSubject(m.Subject) ||
		top.Get("X-Failed-Recipients") != "" || len(p.status) > 0 || saysUndelivered(expl)
	excluded := excludedAddrs(top, m.Original)

	switch {
	case len(srecs) > 0:
		m.Kind = KindDSN
		prose := readProse(expl, excluded)
		for _, s := range srecs {
			m.Records = append(m.Records, fromStatus(s, prose, len(srecs), expl, pm.reportingMTA))
		}
	case sesNotification(text, m):
		m.Kind = KindDSN
	case !bounceish && isAutoreply(top, m.Subject):
		m.Kind = KindAutoreply
		m.Records = []Record{{Reason: reason.Vacation, Diagnostic: oneLine(expl, 300)}}
	case bounceish:
		m.Kind = KindDSN
		prose := readProse(expl, excluded)
		if len(prose) == 0 {
			for _, a := range strings.Split(top.Get("X-Failed-Recipients"), ",") {
				if a = addrSpec(a); a != "" {
					prose = append(prose, proseRecord{addr: a, diag: diagnosticOf(expl, a)})
				}
			}
		}
		if len(prose) == 0 {
			// No recipient is named: keep what the bounce says, if it
			// says anything beyond its boilerplate.
			r := fromProse(proseRecord{diag: diagnosticOf(expl, ""), region: expl}, saysDelayed(expl))
			if r.Reason == reason.OnHold && replyStart(expl) < 0 {
				r.Reason, r.Diagnostic = reason.Undefined, ""
			}
			m.Records = append(m.Records, r)
		}
		delayed := saysDelayed(expl)
		for _, pr := range prose {
			m.Records = append(m.Records, fromProse(pr, delayed))
		}
	case isAutoreply(top, m.Subject):
		m.Kind = KindAutoreply
		m.Records = []Record{{Reason: reason.Vacation, Diagnostic: oneLine(expl, 300)}}
	}
	for _, r := range m.Records {
		if r.Reason.IsBounce() {
			m.IsBounce = true
		}
	}
	if m.Kind != KindDSN {
		m.IsBounce = false
	}
	return m, inlineReturned
}

// fromStatus makes the record of one RFC 3464 recipient group, borrowing the
// prose's explanation when the group has no diagnostic of its own.
func fromStatus(s statusRecord, prose []proseRecord, n int, expl, reporting string) Record {
	r := Record{
		Recipient:         s.final,
		OriginalRecipient: s.original,
		Action:            s.action,
		RemoteMTA:         s.remoteMTA,
		DiagnosticType:    s.diagType,
		Diagnostic:        oneLine(s.diag, 1200),
	}
	if !plausibleAddr(r.Recipient) && plausibleAddr(s.original) {
		// A source route or local name in Final-Recipient: the
		// Original-Recipient is the address that was sent to.
		r.Recipient = s.original
	}
	if len(s.extra) > 0 {
		r.Diagnostic = oneLine(r.Diagnostic+" "+strings.Join(s.extra, " "), 1200)
	}
	var mine *proseRecord
	for i, pr := range prose {
		if strings.EqualFold(pr.addr, r.Recipient) || strings.EqualFold(pr.addr, r.OriginalRecipient) {
			mine = &prose[i]
			break
		}
	}
	if mine == nil && n == 1 && len(prose) == 1 {
		mine = &prose[0]
	}
	context := r.Diagnostic
	if mine != nil {
		if !informative(r.Diagnostic) {
			r.Diagnostic = oneLine(strings.TrimSpace(r.Diagnostic+" "+mine.diag), 1200)
		}
		context += "\n" + mine.region
	}
	r.Diagnostic = extendReply(r.Diagnostic, expl)
	about := context
	if n == 1 {
		// With one recipient, everything the report says is about it.
		about += "\n" + expl
	}
	classify(&r, s.status, reporting, context, about)
	return r
}

// informative reports whether a diagnostic says more than a bare code.
func informative(d string) bool {
	letters := 0
	for i := 0; i < len(d); i++ {
		c := d[i] | 0x20
		if c >= 'a' && c <= 'z' {
			letters++
		}
	}
	return letters >= 12
}

func fromProse(pr proseRecord, delayed bool) Record {
	r := Record{Recipient: pr.addr, Diagnostic: pr.diag, Action: "failed"}
	if delayed {
		r.Action = "delayed"
	}
	classify(&r, "", "", pr.region, pr.region)
	return r
}

// saysDelayed reports whether a prose bounce is a warning that delivery is
// still being tried rather than a failure.
func saysDelayed(expl string) bool {
	lower := strings.ToLower(expl)
	for _, w := range []string{"delivery status notification (delay)", "will continue to be made", "will keep trying",
		"will be retried", "still trying", "not yet been delivered", "delivery is delayed", "warning: could not send",
		"has been delayed", "temporarily deferred", "will try again", "warning: message"} {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// classify fills the status, reply code, command, reason and verdict of r.
// context is the text around the diagnostic, where the command it answered
// is often named; about is everything the reporting system wrote about the
// recipient (reason.Input.Context).
func classify(r *Record, status, reportingMTA, context, about string) {
	cmd := commandOf(r.Diagnostic)
	if cmd == "" {
		cmd = commandOf(context)
	}
	r.Command = cmd
	code := reason.FindReplyCode(strings.ToLower(r.Diagnostic))
	if code != 0 {
		r.ReplyCode = strconv.Itoa(code)
	}
	if code < 400 {
		code = 0 // a code quoted in prose is no proof of delivery
	}
	v := reason.ClassifyInput(reason.Input{
		ReplyCode:      code,
		Status:         status,
		Text:           r.Diagnostic,
		Action:         r.Action,
		DiagnosticType: r.DiagnosticType,
		Command:        cmd,
		Hosts:          hostsOf(r.RemoteMTA, reportingMTA, context),
		Context:        about,
	})
	r.Status = v.Status
	if r.Status == "" {
		r.Status = reason.NormaliseStatus(status)
	}
	r.Reason, r.Permanent, r.Hard = v.Reason, v.Permanent, v.Hard
	if r.Action == "" {
		if v.Permanent {
			r.Action = "failed"
		} else if r.Reason.IsBounce() {
			r.Action = "delayed"
		}
	}
}

// commandOf names the SMTP command a diagnostic answers, from the phrases
// Postfix ("in reply to RCPT TO command"), Exim ("after RCPT TO:"),
// Sendmail (">>> RCPT To:") and others use.
func commandOf(diag string) string {
	l := lowerCollapse(diag, 4<<10)
	type cue struct{ phrase, cmd string }
	for _, c := range []cue{
		{"in reply to rcpt to", "RCPT"}, {"after rcpt to", "RCPT"}, {">>> rcpt to", "RCPT"}, {"rcpt to:<", "RCPT"},
		{"in reply to end of data", "DATA"}, {"after end of data", "DATA"}, {"in reply to data", "DATA"},
		{"after data", "DATA"}, {">>> data", "DATA"}, {"after pipelined data", "DATA"},
		{"in reply to mail from", "MAIL"}, {"after mail from", "MAIL"}, {">>> mail from", "MAIL"},
		{"in reply to helo", "HELO"}, {"after helo", "HELO"}, {"in reply to ehlo", "EHLO"}, {"after ehlo", "EHLO"},
		{"after initial connection", "CONN"}, {"in reply to starttls", "STARTTLS"},
		{"does not like recipient", "RCPT"}, {"does not like sender", "MAIL"}, {"after rcpt", "RCPT"},
		{"after mail", "MAIL"}, {"smtp command rcpt", "RCPT"}, {"smtp command data", "DATA"},
		{"smtp command mail", "MAIL"}, {"rcpt to command", "RCPT"}, {"mail from command", "MAIL"},
		{"end of data command", "DATA"}, {"data command", "DATA"}, {"did not like our rcpt", "RCPT"},
		{"for rcpt to response", "RCPT"}, {"but my name was rejected", "HELO"}, {"but sender was rejected", "MAIL"}, {"smtp:rcpt", "RCPT"}, {"smtp:data", "DATA"}, {"smtp:mail", "MAIL"},
	} {
		if strings.Contains(l, c.phrase) {
			return c.cmd
		}
	}
	return ""
}

// originalOf reads the header of the returned message from its part, or
// from the copy inlined after the explanation.
func originalOf(p *parts, inline string) Original {
	var src []byte
	switch {
	case len(p.returned) > 0:
		src = p.returned[0]
	case inline != "":
		src = []byte(inline)
	default:
		return Original{}
	}
	fs, _ := readFields(src)
	if len(fs) == 0 {
		return Original{}
	}
	h := toMIMEHeader(fs)
	return Original{
		MessageID:  strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>"),
		From:       h.Get("From"),
		To:         h.Get("To"),
		Subject:    h.Get("Subject"),
		ReturnPath: addrSpec(h.Get("Return-Path")),
		Header:     h,
	}
}

// excludedAddrs lists addresses that prose mentions but that are never the
// failed recipient: the bounce's own sender and addressee (the original
// sender) and the original message's sender.
func excludedAddrs(top textproto.MIMEHeader, o Original) map[string]bool {
	ex := map[string]bool{}
	add := func(v string) {
		for _, part := range strings.Split(v, ",") {
			if a := strings.ToLower(addrSpec(part)); strings.Contains(a, "@") {
				ex[a] = true
			}
		}
	}
	add(top.Get("From"))
	add(top.Get("To"))
	add(top.Get("Return-Path"))
	add(top.Get("Reply-To"))
	add(o.From)
	add(o.ReturnPath)
	if o.Header != nil {
		add(o.Header.Get("Sender"))
		add(o.Header.Get("Reply-To"))
	}
	return ex
}

// extendReply completes a diagnostic that holds only the first line of a
// multi-line SMTP reply ("552-5.7.0 …", RFC 5321 §4.2.1) from the copy of
// the whole reply in the prose, as Sendmail's session transcript gives it.
func extendReply(diag, expl string) string {
	if len(diag) < 5 || !isDigit(diag[0]) || !isDigit(diag[1]) || !isDigit(diag[2]) || diag[3] != '-' {
		return diag
	}
	code := diag[:3]
	probe := diag
	if len(probe) > 60 {
		probe = probe[:60]
	}
	from := 0
	for {
		i := strings.Index(expl[from:], probe)
		if i < 0 {
			return diag
		}
		i += from
		if out := replyLines(expl, strings.LastIndexByte(expl[:i], '\n')+1, code); len(out) >= 2 {
			return oneLine(strings.Join(out, " "), 1200)
		}
		from = i + len(probe)
	}
}

// replyLines collects the lines of one multi-line reply with the given code
// that starts at expl[start:], each without its "<<<" transcript marker.
func replyLines(expl string, start int, code string) []string {
	var out []string
	pos := start
	for pos < len(expl) && len(out) < 40 {
		end := strings.IndexByte(expl[pos:], '\n')
		line := expl[pos:]
		if end >= 0 {
			line = expl[pos : pos+end]
		}
		t := strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), "<"))
		if !strings.HasPrefix(t, code) || len(t) < 4 || (t[3] != '-' && t[3] != ' ') {
			break
		}
		out = append(out, t)
		if t[3] == ' ' || end < 0 {
			break
		}
		pos += end + 1
	}
	return out
}

// plausibleAddr reports whether a is an address mail can be sent to: a
// local part, an "@" and a domain with a dot.
func plausibleAddr(a string) bool {
	at := strings.LastIndexByte(a, '@')
	return at > 0 && strings.IndexByte(a[at:], '.') > 0 && !strings.HasPrefix(a, "@")
}

// lowerCollapse lower-cases the first max bytes of s and collapses each run
// of white space to one space, in one pass.
func lowerCollapse(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	b := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			space = true
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if space && len(b) > 0 {
			b = append(b, ' ')
		}
		space = false
		b = append(b, c)
	}
	return string(b)
}

// hostsOf lists the mail hosts a record names: its remote MTA, the
// reporting MTA, and a host the prose says answered ("host mx.example[…]
// said:", as Postfix writes it).
func hostsOf(remote, reporting, context string) []string {
	var out []string
	for _, h := range []string{remote, reporting} {
		if h = firstWord(h); h != "" {
			out = append(out, h)
		}
	}
	l := context
	for {
		i := strings.Index(l, "host ")
		if i < 0 {
			break
		}
		l = l[i+5:]
		if j := strings.IndexAny(l, "[ \t\r\n"); j > 0 && strings.IndexByte(l[:j], '.') > 0 {
			out = append(out, l[:j])
		}
	}
	return out
}
