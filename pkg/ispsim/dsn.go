package ispsim

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
)

// scheduleDSN sends, after the rule's delay on the simulator's clock, a
// delivery status notification for a recipient accepted by a "dsn" rule.
func (s *Sim) scheduleDSN(p *Provider, m *Message, f rcptFate) {
	status := f.dsn.DSNStatus
	failed := status[0] == '5'
	// RFC 5321 §4.5.5: no notification to the null reverse-path. RFC 3461
	// §4.1: NOTIFY, when given, says which notifications are wanted.
	if m.MailFrom == "" {
		return
	}
	if len(f.notify) > 0 {
		want := smtp.DSNNotifyDelayed
		if failed {
			want = smtp.DSNNotifyFailure
		}
		if !slices.Contains(f.notify, want) {
			return
		}
	}
	delay := f.dsn.Delay
	if delay == 0 {
		delay = p.defaultDSNDelay()
	}
	rule := *f.dsn
	s.after(delay, func() {
		vars := p.vars(m.SourceIP, m.MailFrom, f.addr)
		diag := mustReply(Reply(fmt.Sprintf("%s %s", defaultDSNCode(status), status)), vars)
		if rule.Reply != "" {
			diag = mustReply(rule.Reply, vars)
		}
		data, err := s.buildDSN(p, m, f, status, diag)
		r := &Report{Kind: "dsn", Provider: p.name, Via: "smtp", To: m.MailFrom, MessageID: m.MessageID,
			Rcpt: f.addr, SourceIP: m.SourceIP, Status: status, Data: data}
		if err == nil {
			r.Addr, r.Attempts, err = s.deliver(p.hostname, m.MailFrom, data)
		}
		if err != nil {
			r.Err = err.Error()
			s.log.Warn("dsn not delivered", "provider", p.name, "to", m.MailFrom, "err", err)
		}
		r.At = s.clock.Now()
		if failed {
			p.noteDSNBounce(m.SourceIP)
		}
		s.ledger.addReport(r)
	})
}

func defaultDSNCode(status string) string {
	switch {
	case strings.HasPrefix(status, "4."):
		return "450"
	case status == "5.2.2":
		return "552"
	default:
		return "550"
	}
}

// buildDSN writes an RFC 3464 report: a human-readable part, the
// message/delivery-status part and the returned message's header
// (text/rfc822-headers, RFC 6522 §3).
func (s *Sim) buildDSN(p *Provider, m *Message, f rcptFate, status string, diag parsedReply) ([]byte, error) {
	now := s.clock.Now()
	action := "failed"
	subject := "Delivery Status Notification (Failure)"
	if status[0] == '4' {
		action, subject = "delayed", "Delivery Status Notification (Delay)"
	}
	var h message.Header
	h.Set("From", "Mail Delivery Subsystem <mailer-daemon@"+p.hostname+">")
	h.Set("To", m.MailFrom)
	h.Set("Subject", subject)
	h.Set("Date", now.Format(time.RFC1123Z))
	h.Set("Message-Id", s.newMessageID(p.hostname))
	h.Set("Auto-Submitted", "auto-replied") // RFC 3834 §5
	if m.MessageID != "" {
		h.Set("In-Reply-To", "<"+m.MessageID+">")
		h.Set("References", "<"+m.MessageID+">")
	}
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})

	var buf bytes.Buffer
	w, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("ispsim: dsn: %w", err)
	}
	human := fmt.Sprintf("This is the mail system at host %s.\r\n\r\n"+
		"Your message to %s could not be delivered.\r\n\r\nThe response from the remote server was:\r\n%s\r\n",
		p.hostname, f.addr, diag.Text())
	if action == "delayed" {
		human = fmt.Sprintf("This is the mail system at host %s.\r\n\r\n"+
			"Your message to %s has not been delivered yet; delivery will be retried.\r\n\r\n%s\r\n",
			p.hostname, f.addr, diag.Text())
	}
	if err := writePart(w, "text/plain", map[string]string{"charset": "utf-8"}, human); err != nil {
		return nil, err
	}

	// RFC 3464 §2.2: per-message fields, a blank line, then one group
	// of per-recipient fields.
	var ds strings.Builder
	ds.WriteString("Reporting-MTA: dns; " + p.hostname + "\r\n")
	if m.EnvelopeID != "" {
		ds.WriteString("Original-Envelope-Id: " + m.EnvelopeID + "\r\n")
	}
	ds.WriteString("Arrival-Date: " + m.ReceivedAt.Format(time.RFC1123Z) + "\r\n\r\n")
	if f.orcpt != "" {
		ds.WriteString("Original-Recipient: rfc822; " + f.orcpt + "\r\n")
	}
	ds.WriteString("Final-Recipient: rfc822; " + f.addr + "\r\n")
	ds.WriteString("Action: " + action + "\r\n")
	ds.WriteString("Status: " + status + "\r\n")
	ds.WriteString("Remote-MTA: dns; " + p.hostname + "\r\n")
	ds.WriteString("Diagnostic-Code: smtp; " + diag.Text() + "\r\n")
	ds.WriteString("Last-Attempt-Date: " + now.Format(time.RFC1123Z) + "\r\n")
	if err := writePart(w, "message/delivery-status", nil, ds.String()); err != nil {
		return nil, err
	}
	if err := writePart(w, "text/rfc822-headers", nil, string(headerBlock(m.Data))); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("ispsim: dsn: %w", err)
	}
	return buf.Bytes(), nil
}

func writePart(w *message.Writer, ctype string, params map[string]string, body string) error {
	var ph message.Header
	ph.SetContentType(ctype, params)
	pw, err := w.CreatePart(ph)
	if err != nil {
		return fmt.Errorf("ispsim: report part: %w", err)
	}
	if _, err := pw.Write([]byte(body)); err != nil {
		return fmt.Errorf("ispsim: report part: %w", err)
	}
	return pw.Close()
}
