package ispsim

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// parsedReply is a Reply split into its code, enhanced code and lines.
type parsedReply struct {
	Code     int
	Enhanced string   // "4.7.28", or "" when the first line has none
	Lines    []string // each line without the code, enhanced code kept
}

var enhancedRe = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

func (r Reply) parse() (parsedReply, error) {
	s := strings.TrimSpace(string(r))
	if s == "" {
		return parsedReply{}, errors.New("empty reply")
	}
	lines := strings.Split(s, "\n")
	first := lines[0]
	if len(first) < 3 {
		return parsedReply{}, fmt.Errorf("reply %q: no code", s)
	}
	code, err := strconv.Atoi(first[:3])
	if err != nil || code < 200 || code > 599 {
		return parsedReply{}, fmt.Errorf("reply %q: bad code", s)
	}
	rest := strings.TrimLeft(first[3:], " -")
	out := parsedReply{Code: code, Lines: []string{rest}}
	if f := strings.Fields(rest); len(f) > 0 && enhancedRe.MatchString(f[0]) {
		out.Enhanced = f[0]
		if out.Enhanced[0] != first[0] {
			return parsedReply{}, fmt.Errorf("reply %q: enhanced code class differs from the code", s)
		}
	}
	for _, l := range lines[1:] {
		out.Lines = append(out.Lines, strings.TrimRight(l, "\r "))
	}
	return out, nil
}

// expand substitutes the placeholders in every line.
func (p parsedReply) expand(vars map[string]string) parsedReply {
	q := p
	q.Lines = make([]string, len(p.Lines))
	for i, l := range p.Lines {
		for k, v := range vars {
			l = strings.ReplaceAll(l, "{"+k+"}", v)
		}
		q.Lines[i] = l
	}
	return q
}

// Text is the reply as one line, the way a client logs it: "421 4.7.0 ...".
func (p parsedReply) Text() string {
	return strconv.Itoa(p.Code) + " " + strings.Join(p.Lines, " ")
}

// Wire is the reply as the server writes it (RFC 5321 §4.2.1).
func (p parsedReply) Wire() string {
	var b strings.Builder
	for i, l := range p.Lines {
		sep := "-"
		if i == len(p.Lines)-1 {
			sep = " "
		}
		b.WriteString(strconv.Itoa(p.Code) + sep + l + "\r\n")
	}
	return b.String()
}

// smtpError makes go-smtp write the reply exactly as given: the enhanced
// codes are part of the lines, so go-smtp must not add its own.
func (p parsedReply) smtpError() *smtp.SMTPError {
	return &smtp.SMTPError{Code: p.Code, EnhancedCode: smtp.NoEnhancedCode, Message: strings.Join(p.Lines, "\n")}
}

// mustReply parses a reply that validation already accepted.
func mustReply(r Reply, vars map[string]string) parsedReply {
	p, err := r.parse()
	if err != nil {
		return parsedReply{Code: 451, Enhanced: "4.3.0", Lines: []string{"4.3.0 " + string(r)}}
	}
	return p.expand(vars)
}
