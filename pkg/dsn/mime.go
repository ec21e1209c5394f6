package dsn

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// Limits that keep a hostile message from costing more than a real one.
const (
	maxDepth     = 8        // nesting of multiparts
	maxParts     = 64       // leaves read from one message
	maxTextBytes = 64 << 10 // bytes of a text part that are read
	// maxHTMLBytes of an HTML part are read; markup takes room.
	maxHTMLBytes = 24 << 10
	// maxReturnedBytes of a returned message are read: its header.
	maxReturnedBytes = 32 << 10
)

func charsetReader(cs string, r io.Reader) (io.Reader, error) { return charset.Reader(cs, r) }

// parts is what the MIME walk found, in document order.
//
// The walk is our own rather than go-message's reader because bounces are
// written by mail systems with every MIME defect there is — part headers
// folded without white space, missing closing delimiters, wrong transfer
// encodings — and a strict reader gives up on the part that matters. The
// charsets are still decoded by go-message's charset package.
type parts struct {
	texts    []string   // human-readable text parts, decoded to UTF-8
	html     []htmlPart // HTML parts, read only when there is no plain text
	status   [][]byte   // message/delivery-status bodies
	returned [][]byte   // the returned message or its header
	feedback bool       // a message/feedback-report part was seen
	leaves   int
}

// htmlPart is an HTML part as found, decoded only when it is needed.
type htmlPart struct {
	cte, charset string
	body         []byte
}

func (h htmlPart) text() string {
	return htmlText(decodeCharset(h.charset, decodeTransfer(h.cte, capBytes(h.body, maxHTMLBytes))))
}

// walk reads one entity: its header h and its raw body.
func (p *parts) walk(h textproto.MIMEHeader, body []byte, depth int) {
	if depth > maxDepth || p.leaves >= maxParts {
		return
	}
	mt, params := contentType(h.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") {
		children := splitMultipart(body, params["boundary"])
		if len(children) == 0 {
			children = splitMultipart(body, guessBoundary(body))
		}
		if len(children) > 0 {
			for _, c := range children {
				fs, n := readFields(c)
				p.walk(toMIMEHeader(fs), c[n:], depth+1)
			}
			return
		}
		mt = "text/plain" // a multipart without its parts: read it as text
	}
	p.leaves++
	cte := h.Get("Content-Transfer-Encoding")
	switch mt {
	case "message/delivery-status", "message/global-delivery-status", "text/delivery-status",
		"message/x-delivery-status":
		p.status = append(p.status, decodeTransfer(cte, capBytes(body, maxTextBytes)))
		return
	case "message/feedback-report":
		p.feedback = true
		return
	case "message/rfc822", "message/global", "message/rfc822-headers", "text/rfc822-headers",
		"message/global-headers", "message/partial", "text/rfc822":
		// Only the header of the returned message is read.
		p.returned = append(p.returned, decodeTransfer(cte, capBytes(body, maxReturnedBytes)))
		return
	}
	switch {
	case mt == "text/html":
		// Kept undecoded to text: most bounces have a plain text part
		// as well, and the HTML is only read when they do not.
		p.html = append(p.html, htmlPart{cte: cte, charset: params["charset"], body: body})
	case mt == "" || strings.HasPrefix(mt, "text/"):
		body = decodeTransfer(cte, capBytes(body, maxTextBytes))
		if params["name"] != "" && looksLikeMessage(body) {
			// An attachment that holds the returned message.
			p.returned = append(p.returned, body)
			return
		}
		p.texts = append(p.texts, decodeCharset(params["charset"], body))
	case mt == "application/octet-stream" || strings.HasPrefix(mt, "message/"):
		if body = decodeTransfer(cte, capBytes(body, maxReturnedBytes)); looksLikeMessage(body) {
			p.returned = append(p.returned, body)
		}
	}
}

// capBytes returns at most the first n bytes of b: the parser reads the
// start of a part, where the explanation and the headers are.
func capBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

var boundaryParam = regexp.MustCompile(`(?i)boundary\s*=\s*("([^"]*)"|([^\s;]+))`)

// contentType returns the lower-case media type and its parameters, reading
// a malformed field as well as it can.
func contentType(v string) (string, map[string]string) {
	if v == "" {
		return "", map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err == nil {
		return strings.ToLower(mt), params
	}
	params = map[string]string{}
	mt = strings.ToLower(strings.TrimSpace(v))
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = strings.TrimSpace(mt[:i])
	}
	if m := boundaryParam.FindStringSubmatch(v); m != nil {
		params["boundary"] = m[2] + m[3]
	}
	lv := strings.ToLower(v)
	if i := strings.Index(lv, "charset="); i >= 0 {
		cs := strings.Trim(v[i+8:], "\" ")
		if j := strings.IndexAny(cs, "\"; \t"); j >= 0 {
			cs = cs[:j]
		}
		params["charset"] = cs
	}
	return mt, params
}

// splitMultipart returns the bodies of the parts of a multipart body
// (RFC 2046 §5.1.1), each with its own header. A missing closing delimiter
// ends the last part at the end of the body.
func splitMultipart(body []byte, boundary string) [][]byte {
	if boundary == "" {
		return nil
	}
	delim := []byte("--" + boundary)
	var out [][]byte
	start := -1
	pos := 0
	for pos < len(body) {
		line, next := nextLine(body, pos)
		if bytes.HasPrefix(line, delim) {
			rest := bytes.TrimRight(line[len(delim):], " \t")
			closing := bytes.Equal(rest, []byte("--"))
			if len(rest) == 0 || closing {
				if start >= 0 {
					end := pos
					// The line break before a delimiter belongs to it.
					if end > start && body[end-1] == '\n' {
						end--
						if end > start && body[end-1] == '\r' {
							end--
						}
					}
					out = append(out, body[start:end])
				}
				if closing {
					return out
				}
				start = next
			}
		}
		pos = next
	}
	if start >= 0 && start < len(body) {
		out = append(out, body[start:])
	}
	return out
}

// decodeTransfer undoes a Content-Transfer-Encoding (RFC 2045 §6), keeping
// what decodes when the encoding is damaged.
func decodeTransfer(cte string, b []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := make([]byte, 0, len(b))
		for _, c := range b {
			if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' {
				clean = append(clean, c)
			}
		}
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
		n, _ := base64.RawStdEncoding.Decode(out, clean[:len(clean)/4*4+rem(len(clean))])
		return out[:n]
	case "quoted-printable":
		out, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
		if len(out) == 0 && len(b) > 0 {
			return b
		}
		return out
	}
	return b
}

// rem keeps a trailing group of two or three base64 characters, which
// decode to one or two bytes, and drops a lone one, which decodes to none.
func rem(n int) int {
	if r := n % 4; r >= 2 {
		return r
	}
	return 0
}

// decodeCharset converts a text body to UTF-8, replacing what does not
// convert so that later matching never sees broken sequences.
func decodeCharset(cs string, b []byte) string {
	b = capBytes(b, maxTextBytes)
	cs = strings.ToLower(strings.TrimSpace(cs))
	if cs != "" && cs != "us-ascii" && cs != "utf-8" && cs != "utf8" {
		if r, err := charsetReader(cs, bytes.NewReader(b)); err == nil {
			if out, err := io.ReadAll(r); err == nil || len(out) > 0 {
				b = out
			}
		}
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "?")
}

// htmlText reduces an HTML body to its text, one line per block, enough for
// the phrases and addresses the parser looks for. It is a plain scanner, not
// an HTML parser: bounces use little HTML and this runs on every one.
func htmlText(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '<' {
			b.WriteByte(c)
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '>')
		if end < 0 {
			break
		}
		closing := strings.HasPrefix(strings.TrimSpace(s[i+1:i+end]), "/")
		name := strings.ToLower(strings.TrimLeft(s[i+1:i+end], "/ "))
		if j := strings.IndexAny(name, " \t\r\n/"); j >= 0 {
			name = name[:j]
		}
		i += end + 1
		switch name {
		case "style", "script", "head":
			if !closing {
				// Skip the element's content up to its end tag.
				if k := strings.Index(strings.ToLower(s[i:]), "</"+name); k >= 0 {
					i += k
				}
			}
		case "br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table":
			b.WriteByte('\n')
		}
	}
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&quot;", `"`, "&#39;", "'", "&nbsp;", " ")
	return r.Replace(b.String())
}

// looksLikeMessage reports whether b starts with a header block that has at
// least two fields typical of a message.
func looksLikeMessage(b []byte) bool {
	fs, _ := readFields(b)
	n := 0
	for _, f := range fs {
		switch f.key {
		case "Received", "Return-Path", "Message-Id", "From", "To", "Subject", "Date", "Mime-Version":
			n++
		}
	}
	return n >= 2
}

// guessBoundary finds the delimiter a multipart body really uses when it
// differs from the declared one: the first "--token" line that recurs.
func guessBoundary(body []byte) string {
	pos := 0
	for pos < len(body) {
		line, next := nextLine(body, pos)
		pos = next
		if len(line) < 10 || line[0] != '-' || line[1] != '-' || bytes.ContainsAny(line, " \t") {
			continue
		}
		b := string(bytes.TrimSuffix(line[2:], []byte("--")))
		if bytes.Count(body, []byte("\n--"+b)) >= 2 {
			return b
		}
	}
	return ""
}
