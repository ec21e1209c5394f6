package dsn

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
)

// Limits that keep a hostile message from costing more than a real one.
const (
	maxDepth     = 8       // nesting of multiparts and attached messages
	maxParts     = 64      // leaves read from one message
	maxPartBytes = 1 << 20 // bytes read from one leaf
	maxTextBytes = 64 << 10
)

func charsetReader(cs string, r io.Reader) (io.Reader, error) { return charset.Reader(cs, r) }

// parts is what the MIME walk found, in document order.
type parts struct {
	texts    []string // human-readable text parts, decoded to UTF-8
	html     []string // HTML parts reduced to text, used when there is no plain text
	status   [][]byte // message/delivery-status bodies
	returned [][]byte // the returned message or its header
	feedback bool     // a message/feedback-report part was seen
	leaves   int
}

func (p *parts) walk(e *message.Entity, depth int) {
	if depth > maxDepth || p.leaves >= maxParts {
		return
	}
	mt, params, _ := e.Header.ContentType()
	mt = strings.ToLower(mt)
	if mr := e.MultipartReader(); mr != nil {
		for p.leaves < maxParts {
			child, err := mr.NextPart()
			if child == nil {
				break
			}
			p.walk(child, depth+1)
			if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
				break
			}
		}
		return
	}
	p.leaves++
	body, _ := io.ReadAll(io.LimitReader(e.Body, maxPartBytes))
	switch {
	case mt == "message/delivery-status" || mt == "message/global-delivery-status" ||
		mt == "text/delivery-status" || mt == "message/x-delivery-status":
		p.status = append(p.status, body)
	case mt == "message/feedback-report":
		p.feedback = true
	case mt == "message/rfc822" || mt == "message/global" || mt == "message/rfc822-headers" ||
		mt == "text/rfc822-headers" || mt == "message/global-headers" || mt == "message/partial":
		p.returned = append(p.returned, body)
	case mt == "text/html":
		p.html = append(p.html, htmlText(body))
	case mt == "" || strings.HasPrefix(mt, "text/"):
		if _, named := params["name"]; named && looksLikeMessage(body) {
			// An attachment that holds the returned message.
			p.returned = append(p.returned, body)
			return
		}
		p.texts = append(p.texts, toText(body))
	case mt == "application/octet-stream" || mt == "application/x-message":
		if looksLikeMessage(body) {
			p.returned = append(p.returned, body)
		}
	}
}

// toText returns b as a string, replacing invalid UTF-8 (an undeclared
// legacy charset) so that later matching never sees broken sequences.
func toText(b []byte) string {
	if len(b) > maxTextBytes {
		b = b[:maxTextBytes]
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "?")
}

var (
	htmlBreak = regexp.MustCompile(`(?i)<\s*(br|/p|p|/div|div|/tr|tr|li|/h[1-6])\b[^>]*>`)
	htmlTag   = regexp.MustCompile(`(?s)<!--.*?-->|<[^>]*>`)
	htmlDrop  = regexp.MustCompile(`(?is)<(style|script|head)\b.*?</(style|script|head)\s*>`)
)

// htmlText reduces an HTML body to its text, one line per block, enough for
// the phrases and addresses the parser looks for.
func htmlText(b []byte) string {
	s := toText(b)
	s = htmlDrop.ReplaceAllString(s, "")
	s = htmlBreak.ReplaceAllString(s, "\n")
	s = htmlTag.ReplaceAllString(s, "")
	r := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&quot;", `"`, "&#39;", "'", "&nbsp;", " ")
	return r.Replace(s)
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
	return n >= 2 && bytes.IndexByte(b, ':') < 80
}
