package dsn

import (
	"strings"
)

// proseRecord is a recipient named in the prose of a bounce, with the text
// that explains its failure.
type proseRecord struct {
	addr   string
	diag   string
	region string // all the text about this recipient
}

// returnedMarkers introduce the returned message inside a text part. The
// text after them is the returned message, not the explanation, and must not
// be searched for recipients or reasons.
var returnedMarkers = []string{
	"this is a copy of the message",
	"below this line is a copy of the message",
	"original message follows",
	"unsent message follows",
	"returned message follows",
	"----- original message -----",
	"-----original message-----",
	"------ original message ------",
	"original message header",
	"the header of the original message",
	"headers of the original message",
	"header of the message",
	"message header follows",
	"original message headers:",
	"content-type: message/rfc822",
	"content-type: text/rfc822-headers",
	"the original message was:",
	"your message reads (in part)",
	"a copy of the original message",
	"original text follows",
	"the message you sent",
	"--- the message was ---",
}

// splitReturned divides a text part into the explanation and the returned
// message that follows it (which may be empty).
func splitReturned(text string) (explanation, returned string) {
	lower := strings.ToLower(text)
	cut := len(text)
	for _, m := range returnedMarkers {
		if i := strings.Index(lower, m); i >= 0 && i < cut {
			// The marker line itself belongs to neither side.
			cut = strings.LastIndexByte(text[:i], '\n') + 1
			if cut < 0 {
				cut = 0
			}
		}
	}
	if h := headerBlockStart(text); h >= 0 && h < cut {
		cut = h
	}
	explanation = text[:cut]
	returned = text[cut:]
	// Skip the marker line and blank lines before the returned header.
	if j := strings.IndexByte(returned, '\n'); j >= 0 && !isHeaderLine(returned[:j]) {
		returned = returned[j+1:]
	}
	returned = strings.TrimLeft(returned, "\r\n \t")
	return explanation, returned
}

// headerBlockStart finds the first line that starts a run of at least three
// header fields, one of which only a message header has (Received,
// Return-Path, Message-ID, MIME-Version, DKIM-Signature). That is an inline
// copy of the returned message even without a marker line.
func headerBlockStart(text string) int {
	pos := 0
	for pos < len(text) {
		end := strings.IndexByte(text[pos:], '\n')
		line := text[pos:]
		if end >= 0 {
			line = text[pos : pos+end]
		}
		if isHeaderLine(line) {
			n, strong := 0, false
			p := pos
			for p < len(text) {
				e := strings.IndexByte(text[p:], '\n')
				l := text[p:]
				if e >= 0 {
					l = text[p : p+e]
				}
				l = strings.TrimRight(l, "\r")
				if l == "" {
					break
				}
				if l[0] == ' ' || l[0] == '\t' {
					// continuation
				} else if isHeaderLine(l) {
					n++
					k := strings.ToLower(l[:strings.IndexByte(l, ':')])
					switch k {
					case "received", "return-path", "message-id", "mime-version", "dkim-signature", "x-mailer", "content-transfer-encoding":
						strong = true
					}
				} else {
					break
				}
				if e < 0 {
					break
				}
				p += e + 1
			}
			if n >= 3 && strong {
				return pos
			}
		}
		if end < 0 {
			break
		}
		pos += end + 1
	}
	return -1
}

func isHeaderLine(l string) bool {
	i := strings.IndexByte(l, ':')
	if i <= 0 || i > 40 {
		return false
	}
	for j := 0; j < i; j++ {
		c := l[j]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// addrAt is an address found in prose and where it was found.
type addrAt struct {
	addr string
	pos  int // byte offset of the start of its line
	at   int // byte offset of the address itself
}

// skipLine reports header-like lines of an explanation whose addresses are
// never the failed recipient: the sender, message identifiers, routing.
func skipLine(line string) bool {
	l := strings.ToLower(strings.TrimSpace(line))
	for _, p := range []string{"from:", "sender:", "reply-to:", "return-path:", "message-id:", "in-reply-to:",
		"references:", "received:", "sent:", "date:", "envelope-from", "x-", "mail from", "by ", "id ", "for <"} {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// findAddrs lists the addresses in text, in order, with the offsets of the
// lines they stand on. Addresses in excluded (lower-cased) are left out.
func findAddrs(text string, excluded map[string]bool) []addrAt {
	var out []addrAt
	lineStart := 0
	skip := false
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c == '\n' {
			lineStart = i + 1
			skip = false
			continue
		}
		if i == lineStart {
			e := strings.IndexByte(text[i:], '\n')
			if e < 0 {
				e = len(text) - i
			}
			skip = skipLine(text[i : i+e])
		}
		if c != '@' || skip {
			continue
		}
		a, start, end := addressAround(text, i)
		if a == "" {
			continue
		}
		if start > 0 && (text[start-1] == '/' || text[start-1] == '=' && start > 1 && text[start-2] != ' ') {
			i = end - 1
			continue // part of a URL or parameter
		}
		before := strings.ToLower(text[max(lineStart, start-32):start])
		if strings.Contains(before, "generated from") || strings.Contains(before, "expanded from") ||
			strings.Contains(before, "forwarded from") || strings.Contains(before, "alias for") ||
			strings.Contains(before, "contact") || strings.Contains(before, "send mail to") {
			i = end - 1
			continue // the address the recipient was reached through
		}
		if !excluded[strings.ToLower(a)] {
			out = append(out, addrAt{addr: a, pos: lineStart, at: start})
		}
		i = end - 1
	}
	return out
}

func isLocalChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte(".!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func isDomainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-'
}

// addressAround returns the address whose "@" is at text[at], with its
// bounds, or "" when the characters around do not form one.
func addressAround(text string, at int) (string, int, int) {
	s := at
	for s > 0 && isLocalChar(text[s-1]) {
		s--
	}
	for s < at && (text[s] == '.' || text[s] == '\'' || text[s] == '=' && !strings.HasPrefix(text[s:], "=?")) {
		s++
	}
	e := at + 1
	for e < len(text) && isDomainChar(text[e]) {
		e++
	}
	for e > at+1 && (text[e-1] == '.' || text[e-1] == '-') {
		e--
	}
	if s == at || e <= at+1 {
		return "", s, e
	}
	domain := text[at+1 : e]
	dot := strings.LastIndexByte(domain, '.')
	if dot <= 0 || dot == len(domain)-1 {
		return "", s, e
	}
	tld := domain[dot+1:]
	for i := 0; i < len(tld); i++ {
		if !(tld[i] >= 'a' && tld[i] <= 'z' || tld[i] >= 'A' && tld[i] <= 'Z') {
			return "", s, e
		}
	}
	return text[s:e], s, e
}

// readProse finds the failed recipients named in the explanation of a
// bounce and the text that explains each failure. A recipient's text runs
// from its first mention to the first mention of the next recipient.
func readProse(expl string, excluded map[string]bool) []proseRecord {
	addrs := findAddrs(expl, excluded)
	var order []addrAt
	seen := map[string]bool{}
	for _, a := range addrs {
		k := strings.ToLower(a.addr)
		if seen[k] {
			continue
		}
		seen[k] = true
		order = append(order, a)
	}
	out := make([]proseRecord, 0, len(order))
	preamble := ""
	if len(order) > 0 {
		preamble = expl[:order[0].pos]
	}
	for i, a := range order {
		end := len(expl)
		if i+1 < len(order) {
			end = order[i+1].pos
			if end <= a.pos {
				end = order[i+1].at
			}
		}
		start := a.pos
		if end <= start {
			start = a.at
		}
		region := expl[start:end]
		if t := transcriptBefore(expl, a.pos); t != "" {
			region = t + region
		}
		if replyStart(region) < 0 {
			// The error may be stated before the list of recipients.
			if j := replyStart(preamble); j >= 0 {
				region = preamble[j:] + "\n" + region
			} else if !saysMore(region, a.addr) {
				region = lastParagraphs(preamble, 3) + "\n" + region
			}
		}
		out = append(out, proseRecord{addr: a.addr, diag: diagnosticOf(region, a.addr), region: region})
	}
	return out
}

// diagnosticOf picks, from the text about one recipient, the part that
// states the error: from the first SMTP reply in it when there is one (the
// remote server's own words), otherwise the whole text.
func diagnosticOf(region, addr string) string {
	if i := replyStart(region); i >= 0 {
		region = region[i:]
		// The reply ends with its paragraph.
		if j := strings.Index(region, "\n\n"); j >= 0 {
			region = region[:j]
		} else if j := strings.Index(region, "\n\r\n"); j >= 0 {
			region = region[:j]
		}
		region = region[:replyEnd(region)]
	}
	return oneLine(region, 4096)
}

// replyEnd returns where the SMTP reply that starts text ends: after its
// last line (RFC 5321 §4.2.1: every line but the last has a hyphen after
// the code) and the lines of wrapped text that follow it, before the next
// line that starts a reply of its own — a transcript or a summary of
// another delivery.
func replyEnd(text string) int {
	last := false // the line read last was the final line of a reply
	pos := 0
	for pos < len(text) {
		end := strings.IndexByte(text[pos:], '\n')
		line := text[pos:]
		if end >= 0 {
			line = text[pos : pos+end]
		}
		t := strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), "<"))
		if len(t) >= 4 && (t[0] == '2' || t[0] == '4' || t[0] == '5') && isDigit(t[1]) && isDigit(t[2]) && (t[3] == ' ' || t[3] == '-') {
			if last {
				return pos
			}
			last = t[3] == ' '
		}
		if end < 0 {
			break
		}
		pos += end + 1
	}
	return len(text)
}

// replyStart finds the first SMTP reply ("550 5.1.1 …", "550-…") in text,
// at the start of a line or after a colon or "<<<", or -1.
func replyStart(text string) int {
	for i := 0; i+4 <= len(text); i++ {
		c := text[i]
		if c != '4' && c != '5' {
			continue
		}
		if !isDigit(text[i+1]) || !isDigit(text[i+2]) || (text[i+3] != ' ' && text[i+3] != '-') {
			continue
		}
		if text[i+1] > '5' {
			continue
		}
		// What comes before must be a line start, or a marker of a reply.
		j := i - 1
		for j >= 0 && (text[j] == ' ' || text[j] == '\t') {
			j--
		}
		if j < 0 || text[j] == '\n' || text[j] == ':' || text[j] == '<' || text[j] == '>' || text[j] == '(' || text[j] == ']' || text[j] == '#' || text[j] == '"' {
			if j >= 0 && text[j] == ':' && j >= 2 && isDigit(text[j-1]) {
				continue // a time of day
			}
			return i
		}
	}
	return -1
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// oneLine collapses white space and trims s to at most max bytes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max]
		for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
			s = s[:len(s)-1]
		}
		if len(s) > 0 && s[len(s)-1] >= 0xC0 {
			s = s[:len(s)-1]
		}
	}
	return s
}

// saysMore reports whether region holds more than the address itself and
// punctuation: a few words of explanation.
func saysMore(region, addr string) bool {
	rest := strings.Replace(region, addr, "", 1)
	letters := 0
	for i := 0; i < len(rest); i++ {
		c := rest[i] | 0x20
		if c >= 'a' && c <= 'z' {
			letters++
		}
	}
	return letters >= 16
}

// lastParagraphs returns the last n paragraphs (blocks separated by an
// empty line) of text.
func lastParagraphs(text string, n int) string {
	text = strings.TrimRight(text, " \t\r\n")
	pos := len(text)
	for ; n > 0 && pos > 0; n-- {
		i := strings.LastIndex(text[:pos], "\n\n")
		j := strings.LastIndex(text[:pos], "\n\r\n")
		if j > i {
			i = j
		}
		if i < 0 {
			return text
		}
		pos = i
	}
	return text[pos:]
}

// transcriptBefore returns the SMTP session transcript lines (">>> command",
// "<<< reply") that end just before the line at pos: Sendmail writes the
// exchange that failed above its one-line summary for the recipient.
func transcriptBefore(expl string, pos int) string {
	start := pos
	for n := 0; n < 8 && start > 0; n++ {
		prev := strings.LastIndexByte(expl[:start-1], '\n') + 1
		line := strings.TrimSpace(expl[prev : start-1])
		if !strings.HasPrefix(line, "<<<") && !strings.HasPrefix(line, ">>>") {
			break
		}
		start = prev
	}
	return expl[start:pos]
}
