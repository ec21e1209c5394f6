package arf

import (
	"bytes"
	"net/mail"
	"net/textproto"
	"strings"
)

// field is one unfolded header field, in the order it appeared.
type field struct {
	key   string // canonical form, as textproto.CanonicalMIMEHeaderKey
	value string // unfolded and trimmed
}

// headerBlock is a header block read leniently, with the offset at which the
// body starts (len(src) when there is none).
type headerBlock struct {
	fields  []field
	bodyAt  int
	hasBody bool // a blank line ended the block (RFC 5322 §2.1)
	junk    int  // lines that were neither fields nor continuations
}

// header returns the block as a net/mail.Header.
func (b headerBlock) header() mail.Header {
	h := make(mail.Header, len(b.fields))
	for _, f := range b.fields {
		h[f.key] = append(h[f.key], f.value)
	}
	return h
}

// has reports whether the block has a field named key (canonical form).
func (b headerBlock) has(key string) bool {
	for _, f := range b.fields {
		if f.key == key {
			return true
		}
	}
	return false
}

// readHeaderBlock reads "Name: value" lines with folding (RFC 5322 §2.2.3)
// until a blank line. It is lenient where the machine-readable part of a
// report and the headers of a reported message often are not conforming:
// leading blank lines and an mbox "From " line are skipped, bare LF and CRLF
// are both line ends. A line that is neither a field nor a continuation is
// skipped when stopOnJunk is false (feedback fields, RFC 5965 §3.1, are
// independent of each other); when stopOnJunk is true it ends the block and
// starts the body, because a truncated rfc822-headers part is often followed
// directly by body text.
func readHeaderBlock(src []byte, stopOnJunk bool) headerBlock {
	var b headerBlock
	pos := 0
	// Skip leading blank lines: several generators put one between the part
	// header and the fields, which would otherwise read as an empty block.
	for pos < len(src) {
		line, next := nextLine(src, pos)
		if len(bytes.TrimSpace(line)) != 0 {
			break
		}
		pos = next
	}
	if line, next := nextLine(src, pos); bytes.HasPrefix(line, []byte("From ")) && !isFieldLine(line) {
		pos = next
	}
	var cur *field
	var value strings.Builder
	flush := func() {
		if cur != nil {
			cur.value = strings.TrimSpace(value.String())
			b.fields = append(b.fields, *cur)
			cur = nil
		}
		value.Reset()
	}
	for pos < len(src) {
		line, next := nextLine(src, pos)
		// A line of only white space ends the block too: senders that
		// pad the separator with spaces mean it as the blank line.
		if len(bytes.TrimSpace(line)) == 0 {
			flush()
			b.bodyAt, b.hasBody = next, true
			return b
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil {
				if t := bytes.TrimSpace(line); len(t) > 0 {
					value.WriteByte(' ')
					value.Write(t)
				}
				pos = next
				continue
			}
			b.junk++
			if stopOnJunk {
				break
			}
			pos = next
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 || !validKey(bytes.TrimRight(line[:i], " \t")) {
			flush()
			b.junk++
			if stopOnJunk {
				break
			}
			pos = next
			continue
		}
		flush()
		cur = &field{key: textproto.CanonicalMIMEHeaderKey(string(bytes.TrimRight(line[:i], " \t")))}
		value.Write(bytes.TrimSpace(line[i+1:]))
		pos = next
	}
	flush()
	b.bodyAt = pos
	b.hasBody = pos < len(src)
	return b
}

// nextLine returns the line starting at pos without its line end, and the
// position after the line end.
func nextLine(src []byte, pos int) ([]byte, int) {
	rest := src[pos:]
	i := bytes.IndexByte(rest, '\n')
	if i < 0 {
		return bytes.TrimSuffix(rest, []byte("\r")), len(src)
	}
	return bytes.TrimSuffix(rest[:i], []byte("\r")), pos + i + 1
}

// isFieldLine reports whether line starts a header field: a field name
// (RFC 5322 §3.6.8: printable ASCII except colon) and a colon.
func isFieldLine(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	return i > 0 && validKey(bytes.TrimRight(line[:i], " \t"))
}

func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}
