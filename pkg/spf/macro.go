package spf

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// macroToken is one piece of a macro-string (RFC 7208 §7.1): literal text, one
// of the escapes %% %_ %-, or a %{...} expansion.
type macroToken struct {
	literal string // the text, or what an escape stands for
	escape  bool   // %%, %_ or %-
	letter  byte   // lower-case macro letter of a %{...}; 0 otherwise
	upper   bool   // the letter was upper case: URL-escape the value
	digits  int    // keep this many right-hand parts; 0 keeps all
	reverse bool
	delims  string // split on these; "." when empty
}

// parseMacroString tokenises a macro-string. The letters c, r and t are valid
// only in explanation text (exp is true) (§7.1).
func parseMacroString(s string, exp bool) ([]macroToken, error) {
	var toks []macroToken
	lit := 0 // start of the pending literal
	flush := func(i int) {
		if i > lit {
			toks = append(toks, macroToken{literal: s[lit:i]})
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			// macro-literal = %x21-24 / %x26-7E; explanation text may
			// also hold spaces (§6.2).
			if c < 0x21 && !(exp && c == ' ') || c > 0x7e {
				return nil, fmt.Errorf("byte 0x%02x not allowed in a macro string", c)
			}
			continue
		}
		flush(i)
		if i+1 >= len(s) {
			return nil, errors.New("'%' at the end of a macro string")
		}
		switch s[i+1] {
		case '%':
			toks = append(toks, macroToken{literal: "%", escape: true})
			i++
		case '_':
			toks = append(toks, macroToken{literal: " ", escape: true})
			i++
		case '-':
			toks = append(toks, macroToken{literal: "%20", escape: true})
			i++
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, errors.New("unterminated macro")
			}
			tok, err := parseMacroExpand(s[i+2:i+end], exp)
			if err != nil {
				return nil, err
			}
			toks = append(toks, tok)
			i += end
		default:
			return nil, fmt.Errorf("'%%' followed by %q", s[i+1])
		}
		lit = i + 1
	}
	flush(len(s))
	return toks, nil
}

// parseMacroExpand parses the inside of %{...}: macro-letter transformers
// *delimiter, transformers = *DIGIT [ "r" ].
func parseMacroExpand(s string, exp bool) (macroToken, error) {
	if s == "" {
		return macroToken{}, errors.New("empty macro")
	}
	tok := macroToken{letter: s[0] | 0x20, upper: s[0] >= 'A' && s[0] <= 'Z'}
	switch tok.letter {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if !exp {
			return tok, fmt.Errorf("macro letter %q is allowed only in explanations", s[0])
		}
	default:
		return tok, fmt.Errorf("unknown macro letter %q", s[0])
	}
	rest := s[1:]
	n := 0
	for n < len(rest) && isDigit(rest[n]) {
		n++
	}
	if n > 0 {
		// "If a DIGIT is specified, the value MUST be nonzero" (§7.3).
		v, err := strconv.Atoi(rest[:n])
		if err != nil || v == 0 || n > 3 {
			return tok, fmt.Errorf("bad macro digits %q", rest[:n])
		}
		tok.digits = v
		rest = rest[n:]
	}
	if strings.HasPrefix(rest, "r") || strings.HasPrefix(rest, "R") {
		tok.reverse = true
		rest = rest[1:]
	}
	for i := 0; i < len(rest); i++ {
		if !strings.ContainsRune(".-+,/_=", rune(rest[i])) {
			return tok, fmt.Errorf("bad macro delimiter %q", rest[i])
		}
	}
	tok.delims = rest
	return tok, nil
}

// transform applies a token's transformers to a macro value (§7.3).
func (t macroToken) transform(value string) string {
	delims := t.delims
	if delims == "" {
		delims = "."
	}
	parts := strings.FieldsFunc(value, func(r rune) bool { return strings.ContainsRune(delims, r) })
	if strings.Trim(value, delims) != value {
		// FieldsFunc drops empty parts; keep them, as splitting must.
		parts = splitAny(value, delims)
	}
	if t.reverse {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if t.digits > 0 && t.digits < len(parts) {
		parts = parts[len(parts)-t.digits:]
	}
	out := strings.Join(parts, ".")
	if t.upper {
		out = urlEscape(out)
	}
	return out
}

func splitAny(s, delims string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(delims, s[i]) >= 0 {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// urlEscape escapes every byte outside RFC 3986's unreserved set, as §7.3
// asks for upper-case macro letters.
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlpha(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
