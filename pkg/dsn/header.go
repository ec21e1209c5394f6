package dsn

import (
	"bytes"
	"mime"
	"net/textproto"
	"strings"
)

// field is one header field as written, with folded lines joined.
type field struct {
	key   string // canonical form, as net/textproto.CanonicalMIMEHeaderKey
	value string
}

// readFields reads a header block leniently: continuation lines are joined
// to the field before them, lines that are not fields are skipped instead of
// ending the block, and the block ends at the first empty line. It returns
// the fields and the number of bytes consumed, including the empty line.
func readFields(src []byte) ([]field, int) {
	var out []field
	pos := 0
	for pos < len(src) {
		line, next := nextLine(src, pos)
		if len(bytes.TrimRight(line, " \t")) == 0 {
			return out, next
		}
		pos = next
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) > 0 {
				v := strings.TrimSpace(string(line))
				if out[len(out)-1].value == "" {
					out[len(out)-1].value = v
				} else {
					out[len(out)-1].value += " " + v
				}
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validKey(line[:colon]) {
			if eq := bytes.IndexByte(line, '='); eq > 0 && len(out) > 0 && validKey(line[:eq]) {
				// A parameter folded without the leading white space
				// RFC 5322 §2.2.3 requires ("boundary=…" on its own line).
				out[len(out)-1].value += " " + strings.TrimSpace(string(line))
			}
			continue
		}
		out = append(out, field{
			key:   textproto.CanonicalMIMEHeaderKey(string(bytes.TrimRight(line[:colon], " \t"))),
			value: strings.TrimSpace(string(line[colon+1:])),
		})
	}
	return out, pos
}

// nextLine returns the line that starts at pos without its line ending, and
// the position of the next line.
func nextLine(src []byte, pos int) ([]byte, int) {
	end := bytes.IndexByte(src[pos:], '\n')
	if end < 0 {
		return bytes.TrimRight(src[pos:], "\r"), len(src)
	}
	return bytes.TrimRight(src[pos:pos+end], "\r"), pos + end + 1
}

func validKey(k []byte) bool {
	k = bytes.TrimRight(k, " \t")
	if len(k) == 0 || len(k) > 76 {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// toMIMEHeader turns fields into a net/textproto header, decoding RFC 2047
// encoded words in the values.
func toMIMEHeader(fs []field) textproto.MIMEHeader {
	h := make(textproto.MIMEHeader, len(fs))
	for _, f := range fs {
		h[f.key] = append(h[f.key], decodeWords(f.value))
	}
	return h
}

var wordDecoder = mime.WordDecoder{CharsetReader: charsetReader}

// decodeWords decodes RFC 2047 encoded words, keeping the raw text when the
// decoding fails.
func decodeWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	if d, err := wordDecoder.DecodeHeader(v); err == nil {
		return d
	}
	return v
}

// addrSpec extracts the bare address from an address field value such as
// `"Name" <user@example.org>` or `rfc822; user@example.org`, lower-casing
// nothing: the local part is case-sensitive (RFC 5321 §2.4).
func addrSpec(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ';'); i >= 0 && i < 16 && !strings.Contains(v[:i], "@") {
		v = strings.TrimSpace(v[i+1:]) // address-type prefix of RFC 3464 §2.3.1
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	if strings.HasPrefix(v, "@") {
		// An RFC 5321 §4.1.2 source route ("@relay:user@host").
		if i := strings.IndexByte(v, ':'); i > 0 {
			v = v[i+1:]
		}
	}
	if i := strings.IndexByte(v, '('); i > 0 {
		v = strings.TrimSpace(v[:i])
	}
	if i := strings.IndexAny(v, " \t"); i > 0 && strings.Contains(v[:i], "@") {
		v = v[:i]
	}
	return strings.Trim(v, "<>\"' ")
}
