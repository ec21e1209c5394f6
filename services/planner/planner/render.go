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
	"text/template/parse"
	"time"

	"github.com/mailwave/mailwave/pkg/tenancy"
	"github.com/mailwave/mailwave/pkg/unsubscribe"
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
	// bulk adds the one-click unsubscribe headers (RFC 8058).
	bulk          bool
	postalAddress string
}

// personal is what the planner adds to one recipient's message.
type personal struct {
	// unsubscribeURL is the one-click link, also the template variable
	// unsubscribe_url; listUnsubscribe is the List-Unsubscribe value.
	unsubscribeURL  string
	listUnsubscribe string
}

// Template variables the planner provides to every template.
const (
	varUnsubscribeURL = "unsubscribe_url"
	varPostalAddress  = "postal_address"
)

// prepare parses the request's content once (the headers of a raw message,
// or the templates of a template) and checks it against the route: the
// From domain must be the stream's sending domain, and bulk mail must show
// the domain's postal address and an unsubscribe link (CAN-SPAM) in every
// body part. Errors wrap errContent and say why the request is refused.
func prepare(req *mailwavev1.SendRequest, route *tenancy.Route) (*content, error) {
	if raw := req.GetRaw(); raw != nil {
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: raw message: %w", errContent, err)
		}
		from, err := mail.ParseAddress(msg.Header.Get("From"))
		if err != nil {
			return nil, fmt.Errorf("%w: raw message From header: %w", errContent, err)
		}
		if route.Kind == tenancy.Bulk {
			// A raw message is the same bytes for every recipient: it
			// cannot carry each recipient's own unsubscribe link.
			return nil, fmt.Errorf("%w: refused: bulk stream %q needs template content, so each recipient gets their own one-click unsubscribe link", errContent, route.Stream)
		}
		c := &content{
			raw:           raw,
			rawMessageID:  strings.Trim(msg.Header.Get("Message-Id"), "<> "),
			sendingDomain: domainOf(from.Address),
		}
		return c, c.aligned(route)
	}
	t := req.GetTemplate()
	from, err := mail.ParseAddress(t.GetFrom())
	if err != nil {
		return nil, fmt.Errorf("%w: template from %q: %w", errContent, t.GetFrom(), err)
	}
	if t.GetText() == "" && t.GetHtml() == "" {
		return nil, fmt.Errorf("%w: template has neither text nor html", errContent)
	}
	c := &content{from: from.String(), sendingDomain: domainOf(from.Address), headers: t.GetHeaders(), feedbackID: feedbackID(req),
		bulk: route.Kind == tenancy.Bulk, postalAddress: route.DomainConfig.PostalAddress}
	if err := c.aligned(route); err != nil {
		return nil, err
	}
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
	if c.bulk {
		if err := c.compliant(t, route.Stream); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// aligned checks that From is in the stream's sending domain (or the
// domain in From's), so DKIM's d= aligns with it for DMARC (RFC 7489
// §3.1.1, relaxed). In the default tenancy the From domain is the sending
// domain.
func (c *content) aligned(route *tenancy.Route) error {
	d := route.Domain
	if d == "" {
		return nil
	}
	f := c.sendingDomain
	if f != d && !strings.HasSuffix(f, "."+d) && !strings.HasSuffix(d, "."+f) {
		return fmt.Errorf("%w: refused: From domain %s is not aligned with stream %q's sending domain %s", errContent, f, route.Stream, d)
	}
	c.sendingDomain = d
	return nil
}

// compliant checks that every body part of a bulk template shows the
// postal address and an unsubscribe link: the template must use
// {{.unsubscribe_url}}, and either {{.postal_address}} or the address
// itself (white space and case aside).
func (c *content) compliant(t *mailwavev1.Template, stream string) error {
	type part struct {
		name string
		src  string
		tree *parse.Tree
	}
	var parts []part
	if c.text != nil {
		parts = append(parts, part{"text", t.GetText(), c.text.Tree})
	}
	if c.html != nil {
		parts = append(parts, part{"html", t.GetHtml(), c.html.Tree})
	}
	for _, pt := range parts {
		if !usesField(pt.tree.Root, varUnsubscribeURL) {
			return fmt.Errorf("%w: refused: bulk stream %q requires an unsubscribe link ({{.%s}}) in the %s part", errContent, stream, varUnsubscribeURL, pt.name)
		}
		if !usesField(pt.tree.Root, varPostalAddress) && !containsFolded(pt.src, c.postalAddress) {
			return fmt.Errorf("%w: refused: bulk stream %q requires the postal address (%q, or {{.%s}}) in the %s part", errContent, stream, c.postalAddress, varPostalAddress, pt.name)
		}
	}
	return nil
}

// usesField reports whether a template refers to .name anywhere.
func usesField(n parse.Node, name string) bool {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return false
		}
		for _, c := range n.Nodes {
			if usesField(c, name) {
				return true
			}
		}
	case *parse.ActionNode:
		return usesField(n.Pipe, name)
	case *parse.PipeNode:
		if n == nil {
			return false
		}
		for _, c := range n.Cmds {
			if usesField(c, name) {
				return true
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if usesField(a, name) {
				return true
			}
		}
	case *parse.FieldNode:
		return len(n.Ident) > 0 && n.Ident[0] == name
	case *parse.IfNode:
		return usesField(n.Pipe, name) || usesField(n.List, name) || usesField(n.ElseList, name)
	case *parse.RangeNode:
		return usesField(n.Pipe, name) || usesField(n.List, name) || usesField(n.ElseList, name)
	case *parse.WithNode:
		return usesField(n.Pipe, name) || usesField(n.List, name) || usesField(n.ElseList, name)
	}
	return false
}

// containsFolded reports whether s contains sub, ignoring case and
// collapsing white space (an address split over lines still counts).
func containsFolded(s, sub string) bool {
	fold := func(x string) string { return strings.ToLower(strings.Join(strings.Fields(x), " ")) }
	f := fold(sub)
	return f != "" && strings.Contains(fold(s), f)
}

// render returns the message for recipient addr (rcpt's parsed address)
// and its Message-ID. A raw message is sent exactly as given. Errors wrap
// errContent.
func (c *content) render(rcpt *mailwavev1.Recipient, addr, messageID string, now time.Time, pers personal) ([]byte, string, error) {
	if c.raw != nil {
		return c.raw, c.rawMessageID, nil
	}
	vars := make(map[string]string, len(rcpt.GetVars())+3)
	for k, v := range rcpt.GetVars() {
		vars[k] = v
	}
	// The planner's variables win over the recipient's: a link or an
	// address an audience file supplied would not be ours.
	vars["address"] = addr
	vars[varUnsubscribeURL] = pers.unsubscribeURL
	vars[varPostalAddress] = c.postalAddress
	var subject bytes.Buffer
	if err := c.subject.Execute(&subject, vars); err != nil {
		return nil, "", fmt.Errorf("%w: subject: %w", errContent, err)
	}
	headerID := messageID + "@" + c.sendingDomain
	var b bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	hdr("From", c.from)
	hdr("To", (&mail.Address{Address: addr}).String())
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject.String()))
	hdr("Date", now.UTC().Format(time.RFC1123Z))
	hdr("Message-ID", "<"+headerID+">")
	hdr("MIME-Version", "1.0")
	hdr("Feedback-ID", c.feedbackID)
	if c.bulk && pers.listUnsubscribe != "" {
		// RFC 8058 §3.1; the sender's DKIM signature covers both.
		// Folded between its URIs: a token makes the line long (RFC 5322
		// §2.1.1 asks for lines under 78 characters where possible).
		hdr("List-Unsubscribe", strings.ReplaceAll(pers.listUnsubscribe, ">, <", ">,\r\n <"))
		hdr("List-Unsubscribe-Post", unsubscribe.PostBody)
	}
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
	case "from", "to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding", "feedback-id",
		"list-unsubscribe", "list-unsubscribe-post":
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
