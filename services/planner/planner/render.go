package planner

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"sort"
	"strings"
	texttemplate "text/template"
	"time"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// errContent marks content that can never be rendered; the request is
// dropped with the reason.
var errContent = errors.New("planner: content")

// content is a request's content prepared once and rendered per recipient.
type content struct {
	raw           []byte
	rawMessageID  string
	sendingDomain string

	from       string
	feedbackID string
	subject    *texttemplate.Template
	text       *texttemplate.Template
	html       *htmltemplate.Template
	headers    map[string]string
}

// prepare parses the request's content once: the headers of a raw message,
// or the templates of a template. Errors wrap errContent.
func prepare(req *mailwavev1.SendRequest) (*content, error) {
	if raw := req.GetRaw(); raw != nil {
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: raw message: %w", errContent, err)
		}
		from, err := mail.ParseAddress(msg.Header.Get("From"))
		if err != nil {
			return nil, fmt.Errorf("%w: raw message From header: %w", errContent, err)
		}
		return &content{
			raw:           raw,
			rawMessageID:  strings.Trim(msg.Header.Get("Message-Id"), "<> "),
			sendingDomain: domainOf(from.Address),
		}, nil
	}
	t := req.GetTemplate()
	from, err := mail.ParseAddress(t.GetFrom())
	if err != nil {
		return nil, fmt.Errorf("%w: template from %q: %w", errContent, t.GetFrom(), err)
	}
	if t.GetText() == "" && t.GetHtml() == "" {
		return nil, fmt.Errorf("%w: template has neither text nor html", errContent)
	}
	c := &content{from: from.String(), sendingDomain: domainOf(from.Address), headers: t.GetHeaders(), feedbackID: feedbackID(req)}
	if c.subject, err = texttemplate.New("subject").Option("missingkey=error").Parse(t.GetSubject()); err != nil {
		return nil, fmt.Errorf("%w: subject: %w", errContent, err)
	}
	if t.GetText() != "" {
		if c.text, err = texttemplate.New("text").Option("missingkey=error").Parse(t.GetText()); err != nil {
			return nil, fmt.Errorf("%w: text: %w", errContent, err)
		}
	}
	if t.GetHtml() != "" {
		if c.html, err = htmltemplate.New("html").Option("missingkey=error").Parse(t.GetHtml()); err != nil {
			return nil, fmt.Errorf("%w: html: %w", errContent, err)
		}
	}
	for k := range c.headers {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("%w: header name %q", errContent, k)
		}
	}
	return c, nil
}

// render returns the message for one recipient and its Message-ID. A raw
// message is sent exactly as given. Errors wrap errContent.
func (c *content) render(rcpt *mailwavev1.Recipient, messageID string, now time.Time) ([]byte, string, error) {
	if c.raw != nil {
		return c.raw, c.rawMessageID, nil
	}
	vars := map[string]string{"address": rcpt.GetAddress()}
	for k, v := range rcpt.GetVars() {
		vars[k] = v
	}
	var subject bytes.Buffer
	if err := c.subject.Execute(&subject, vars); err != nil {
		return nil, "", fmt.Errorf("%w: subject: %w", errContent, err)
	}
	headerID := messageID + "@" + c.sendingDomain
	var b bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	hdr("From", c.from)
	hdr("To", (&mail.Address{Address: rcpt.GetAddress()}).String())
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject.String()))
	hdr("Date", now.UTC().Format(time.RFC1123Z))
	hdr("Message-ID", "<"+headerID+">")
	hdr("MIME-Version", "1.0")
	hdr("Feedback-ID", c.feedbackID)
	keys := make([]string, 0, len(c.headers))
	for k := range c.headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hdr(textproto.CanonicalMIMEHeaderKey(k), mime.QEncoding.Encode("utf-8", c.headers[k]))
	}
	var text, html bytes.Buffer
	if c.text != nil {
		if err := c.text.Execute(&text, vars); err != nil {
			return nil, "", fmt.Errorf("%w: text: %w", errContent, err)
		}
	}
	if c.html != nil {
		if err := c.html.Execute(&html, vars); err != nil {
			return nil, "", fmt.Errorf("%w: html: %w", errContent, err)
		}
	}
	switch {
	case c.text != nil && c.html != nil:
		boundary := newBoundary()
		hdr("Content-Type", `multipart/alternative; boundary="`+boundary+`"`)
		b.WriteString("\r\n")
		for _, part := range []struct {
			ctype string
			body  []byte
		}{{"text/plain; charset=utf-8", text.Bytes()}, {"text/html; charset=utf-8", html.Bytes()}} {
			fmt.Fprintf(&b, "--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", boundary, part.ctype)
			writeQP(&b, part.body)
			b.WriteString("\r\n")
		}
		fmt.Fprintf(&b, "--%s--\r\n", boundary)
	case c.html != nil:
		hdr("Content-Type", "text/html; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		writeQP(&b, html.Bytes())
	default:
		hdr("Content-Type", "text/plain; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		writeQP(&b, text.Bytes())
	}
	return b.Bytes(), headerID, nil
}

// writeQP writes body quoted-printable with CRLF line ends, so no line
// exceeds RFC 5322's 998 octets whatever the template produced.
func writeQP(w io.Writer, body []byte) {
	body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	body = bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
	q := quotedprintable.NewWriter(w)
	_, _ = q.Write(body)
	_ = q.Close()
}

func newBoundary() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "mw-" + hex.EncodeToString(b[:])
}

// feedbackID is the Feedback-ID header in Gmail's format
// "a:b:c:SenderId": campaign, mail stream, brand, and the tenant as the
// sender id, so complaint rates can be aggregated per campaign even when a
// report keeps nothing else.
func feedbackID(req *mailwavev1.SendRequest) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == ':' || r <= ' ' || r >= 0x7f {
				return '-'
			}
			return r
		}, s)
	}
	campaign := req.GetCampaignId()
	if campaign == "" {
		campaign = "none"
	}
	return clean(campaign) + ":" + clean(req.GetMailStream()) + ":" + clean(req.GetBrand()) + ":" + clean(req.GetTenant())
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	switch strings.ToLower(k) {
	case "from", "to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding", "feedback-id":
		return false
	}
	return true
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}
