package ispsim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// ErrUnknownMessage is returned by Complain for a Message-ID the ledger
// has not seen.
var ErrUnknownMessage = errors.New("ispsim: unknown message")

// Complain makes the provider that accepted the message with Message-ID id
// (the latest copy, if it arrived more than once) report a complaint about
// it now, for rcpt ("" for every recipient). It
// returns ErrUnknownMessage when no provider accepted that Message-ID.
func (s *Sim) Complain(id, rcpt string) error {
	msgs := s.ledger.Snapshot().MessagesWithID(id)
	if len(msgs) == 0 {
		return fmt.Errorf("%w: %s", ErrUnknownMessage, id)
	}
	m := msgs[len(msgs)-1]
	p := s.byName[m.Provider]
	n := 0
	for _, r := range m.Rcpts {
		if rcpt == "" || strings.EqualFold(r, rcpt) {
			s.scheduleComplaint(p, m, r, 0)
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%w: %s was not sent to %s", ErrUnknownMessage, id, rcpt)
	}
	return nil
}

// scheduleComplaint sends an ARF report about m's copy for rcpt after
// delay on the simulator's clock.
func (s *Sim) scheduleComplaint(p *Provider, m *Message, rcpt string, delay time.Duration) {
	s.after(delay, func() {
		cfg := p.complaintConfig()
		data, err := s.buildARF(p, cfg, m, rcpt)
		r := &Report{Kind: "arf", Provider: p.name, Via: string(cfg.Delivery), MessageID: m.MessageID,
			Rcpt: rcpt, SourceIP: m.SourceIP, Data: data}
		if err == nil {
			switch cfg.Delivery {
			case DeliveryIMAP:
				r.To = cfg.IMAPUser + "/" + cfg.Mailbox
				r.Attempts = 1
				err = s.imap.deliver(cfg.IMAPUser, cfg.Mailbox, data, s.clock.Now())
			default:
				r.To = cfg.Address
				r.Addr, r.Attempts, err = s.deliver(p.hostname, cfg.Address, data)
			}
		}
		if err != nil {
			r.Err = err.Error()
			s.log.Warn("complaint not delivered", "provider", p.name, "to", r.To, "err", err)
		}
		r.At = s.clock.Now()
		p.noteComplaint(m.SourceIP)
		s.ledger.addReport(r)
	})
}

// buildARF writes an RFC 5965 feedback report: a human-readable part, the
// machine-readable message/feedback-report part and the reported message,
// DKIM-signed by the domain of its From (see ReportSelector).
// With redaction on, the recipient is replaced in Original-Rcpt-To and in
// the reported message's To field (RFC 6590), while its other fields
// (Return-Path, Message-ID, Feedback-ID) are kept for correlation.
func (s *Sim) buildARF(p *Provider, cfg ComplaintConfig, m *Message, rcpt string) ([]byte, error) {
	now := s.clock.Now()
	shownRcpt := rcpt
	original := m.Data
	if cfg.Redact {
		shownRcpt = cfg.Redaction + "@" + domainOf(rcpt)
		var err error
		if original, err = redactTo(m.Data, rcpt, shownRcpt); err != nil {
			return nil, err
		}
	}
	var h message.Header
	h.Set("From", cfg.From)
	to := cfg.Address
	if cfg.Delivery == DeliveryIMAP {
		to = cfg.IMAPUser
	}
	h.Set("To", to)
	subj := m.Header.Get("Subject")
	h.Set("Subject", "Complaint about message from "+m.SourceIP.String()+": "+subj)
	h.Set("Date", now.Format(time.RFC1123Z))
	h.Set("Message-Id", s.newMessageID(p.hostname))
	h.SetContentType("multipart/report", map[string]string{"report-type": "feedback-report"})
	var buf bytes.Buffer
	w, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("ispsim: arf: %w", err)
	}
	human := fmt.Sprintf("This is an email abuse report for an email message received from IP %s on %s.\r\n"+
		"For more information about this format please see http://www.mipassoc.org/arf/.\r\n",
		m.SourceIP, m.ReceivedAt.Format(time.RFC1123Z))
	if err := writePart(w, "text/plain", map[string]string{"charset": "utf-8"}, human); err != nil {
		return nil, err
	}
	// RFC 5965 §3.1 and §3.2.
	var fr strings.Builder
	fr.WriteString("Feedback-Type: " + cfg.FeedbackType + "\r\n")
	fr.WriteString("User-Agent: ispsim/1.0 (" + p.name + ")\r\n")
	fr.WriteString("Version: 1\r\n")
	fr.WriteString("Original-Mail-From: <" + m.MailFrom + ">\r\n")
	fr.WriteString("Original-Rcpt-To: <" + shownRcpt + ">\r\n")
	fr.WriteString("Arrival-Date: " + m.ReceivedAt.Format(time.RFC1123Z) + "\r\n")
	fr.WriteString("Reporting-MTA: dns; " + p.hostname + "\r\n")
	fr.WriteString("Source-IP: " + m.SourceIP.String() + "\r\n")
	if m.Auth.AuthenticationResults != "" {
		fr.WriteString("Authentication-Results: " + m.Auth.AuthenticationResults + "\r\n")
	}
	if d := domainOf(m.Header.Get("From")); d != "" {
		fr.WriteString("Reported-Domain: " + d + "\r\n")
	}
	if err := writePart(w, "message/feedback-report", nil, fr.String()); err != nil {
		return nil, err
	}
	if err := writePart(w, "message/rfc822", nil, string(original)); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("ispsim: arf: %w", err)
	}
	return s.reports.sign(s.zone, cfg.From, buf.Bytes())
}

// redactTo replaces rcpt with shown in the To and Cc fields of data.
func redactTo(data []byte, rcpt, shown string) ([]byte, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, fmt.Errorf("ispsim: arf: redact: %w", err)
	}
	for _, k := range []string{"To", "Cc"} {
		fields := h.FieldsByKey(k)
		for fields.Next() {
			v := fields.Value()
			nv := replaceFold(v, rcpt, shown)
			if nv != v {
				fields.Del()
				h.Add(k, nv)
			}
		}
	}
	var out bytes.Buffer
	if err := textproto.WriteHeader(&out, h); err != nil {
		return nil, fmt.Errorf("ispsim: arf: redact: %w", err)
	}
	if _, err := br.WriteTo(&out); err != nil {
		return nil, fmt.Errorf("ispsim: arf: redact: %w", err)
	}
	return out.Bytes(), nil
}

func replaceFold(s, old, repl string) string {
	i := strings.Index(strings.ToLower(s), strings.ToLower(old))
	if i < 0 {
		return s
	}
	return s[:i] + repl + replaceFold(s[i+len(old):], old, repl)
}
