package smtpclient

import (
	"bufio"
	"bytes"
	"fmt"
)

// Limits on a server's reply, so that a hostile server cannot make the
// client buffer without bound. RFC 5321 §4.5.3.1.5 allows 512 octets per
// reply line; real servers exceed it, so the limits are generous.
const (
	maxReplyLine  = 16 << 10
	maxReplyLines = 1000
	maxReplyText  = 64 << 10
)

// reply is one parsed server reply. It is reused across commands so that
// a successful transaction allocates nothing for its intermediate replies;
// strings are made only when a reply leaves the package.
type reply struct {
	code  int
	ecode []byte // enhanced status code (RFC 3463), empty if none
	text  []byte // text of every line joined with '\n', enhanced code removed
	long  []byte // scratch for lines longer than the bufio buffer
}

func (r *reply) class() int { return r.code / 100 }

func (r *reply) message() string { return string(r.text) }

// enhanced returns the enhanced code as a string, without allocating for
// the code that nearly every success carries.
func (r *reply) enhanced() string {
	switch string(r.ecode) { // no allocation: the compiler compares in place
	case "":
		return ""
	case "2.0.0":
		return "2.0.0"
	case "2.1.0":
		return "2.1.0"
	case "2.1.5":
		return "2.1.5"
	}
	return string(r.ecode)
}

// read reads one possibly multi-line reply (RFC 5321 §4.2.1): lines
// "ddd-text" followed by a last line "ddd text" or "ddd".
func (r *reply) read(br *bufio.Reader) error {
	r.code = 0
	r.ecode = r.ecode[:0]
	r.text = r.text[:0]
	for n := 0; ; n++ {
		if n == maxReplyLines {
			return fmt.Errorf("%w: reply longer than %d lines", ErrProtocol, maxReplyLines)
		}
		line, err := r.readLine(br)
		if err != nil {
			return err
		}
		if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) || line[0] < '2' || line[0] > '5' {
			return fmt.Errorf("%w: malformed reply line %q", ErrProtocol, truncate(line))
		}
		code := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if n == 0 {
			r.code = code
		} else if code != r.code {
			return fmt.Errorf("%w: reply code changed from %d to %d", ErrProtocol, r.code, code)
		}
		last := true
		var text []byte
		if len(line) > 3 {
			switch line[3] {
			case '-':
				last = false
			case ' ':
			default:
				return fmt.Errorf("%w: malformed reply line %q", ErrProtocol, truncate(line))
			}
			text = line[4:]
		}
		// RFC 2034 §4 puts the enhanced code on every line; some servers
		// put it on the first line only, go-smtp on the last only. Take
		// the first one found, and drop it from every line so that
		// Message reads as prose.
		if len(r.ecode) == 0 {
			if ec := enhancedCode(text, line[0]); ec != nil {
				r.ecode = append(r.ecode, ec...)
			}
		}
		if len(r.ecode) > 0 && bytes.HasPrefix(text, r.ecode) && (len(text) == len(r.ecode) || text[len(r.ecode)] == ' ') {
			text = bytes.TrimPrefix(text[len(r.ecode):], []byte{' '})
		}
		if n > 0 {
			r.text = append(r.text, '\n')
		}
		if len(r.text)+len(text) > maxReplyText {
			return fmt.Errorf("%w: reply longer than %d bytes", ErrProtocol, maxReplyText)
		}
		r.text = append(r.text, text...)
		if last {
			return nil
		}
	}
}

// readLine returns one line without its CRLF (or bare LF). The slice is
// valid until the next read.
func (r *reply) readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(r.long) > maxReplyLine {
				return nil, fmt.Errorf("%w: reply line longer than %d bytes", ErrProtocol, maxReplyLine)
			}
			line, err = br.ReadSlice('\n')
			r.long = append(r.long, line...)
		}
		line = r.long
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, nil
}

// enhancedCode returns the RFC 3463 code at the start of text, whose class
// must equal the reply's first digit (RFC 2034 §4), or nil.
func enhancedCode(text []byte, class byte) []byte {
	if len(text) < 5 || text[0] != class || text[1] != '.' {
		return nil
	}
	i := 2
	n := digits(text[i:], 3)
	if n == 0 || i+n >= len(text) || text[i+n] != '.' {
		return nil
	}
	i += n + 1
	n = digits(text[i:], 3)
	if n == 0 {
		return nil
	}
	i += n
	if i < len(text) && text[i] != ' ' {
		return nil
	}
	return text[:i]
}

func digits(b []byte, max int) int {
	n := 0
	for n < len(b) && n < max && isDigit(b[n]) {
		n++
	}
	if n < len(b) && isDigit(b[n]) {
		return 0 // too many digits
	}
	return n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func truncate(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}
