package reason

import (
	"strconv"
	"strings"
)

// Input is everything known about one failed delivery attempt. Only Text is
// usually present; the other fields sharpen the verdict when they are known.
type Input struct {
	// ReplyCode is the SMTP reply code (RFC 5321 §4.2.1), 0 when unknown.
	ReplyCode int
	// Status is the RFC 3463 enhanced status code ("5.1.1"), "" when
	// unknown. When empty, a code written in Text is used.
	Status string
	// Text is the diagnostic text: the SMTP reply text, or a DSN's
	// Diagnostic-Code value, or the prose of a non-standard bounce.
	Text string
	// Action is the RFC 3464 §2.3.3 Action value ("failed", "delayed",
	// "delivered", "relayed", "expanded"), "" when unknown.
	Action string
	// DiagnosticType is the type of the RFC 3464 §2.3.6 Diagnostic-Code
	// field ("smtp", "x-unix", "x-postfix"), "" when unknown.
	DiagnosticType string
	// Command is the SMTP command that drew the error ("CONN" for the
	// greeting, "HELO", "EHLO", "MAIL", "RCPT", "DATA"), "" when unknown.
	Command string
	// Hosts are the names of the mail hosts involved — the remote MTA
	// that answered and the MTA that reported — when known. Some
	// providers word their answers in their own way (see hostRules).
	Hosts []string
	// Context is what the reporting system wrote itself around the
	// diagnostic (the prose of a bounce about this recipient), when
	// known. It never decides a reason on its own: it only settles an
	// "unknown user" the diagnostic leaves in doubt, when the reporting
	// system states that it looked the address up and found nothing
	// ("the address couldn't be found").
	Context string
}

// Verdict is the classification of one failed delivery attempt.
type Verdict struct {
	// Reason is the cause, never empty.
	Reason Reason
	// Status is the enhanced status code the verdict rests on: the one
	// given, else one found in the text, else "" .
	Status string
	// Permanent reports a permanent failure: a 5.X.X status, a 5xx reply
	// code, or — when neither is known — a failed (not delayed) action.
	Permanent bool
	// Hard reports that the address itself is dead and should be
	// suppressed at once (see Reason.IsHard).
	Hard bool
}

// Classify classifies a live SMTP answer: its reply code (0 when unknown),
// its enhanced status code ("" when unknown) and its text. It does not know
// which command the answer was to; a caller that does (the sender always
// does) should use ClassifyInput with Command set, because "no such user"
// means UserUnknown only when it answers RCPT TO or carries X.1.1.
func Classify(replyCode int, enhanced, text string) Verdict {
	return ClassifyInput(Input{ReplyCode: replyCode, Status: enhanced, Text: text})
}

// ClassifyInput classifies one failed delivery attempt described by in.
//
// The rules, in order (the first that decides wins):
//  1. a 2.X.X status, a 2xx reply or a positive Action is Delivered;
//  2. hostRules: what particular providers mean by particular words;
//  3. a local delivery agent's diagnostic (type X-Unix) is MailerError;
//  4. the phrases of primaryRules, then their status codes, so a specific
//     phrase ("mailbox full") beats a general code (5.1.1) while a code
//     decides when the words say nothing known;
//  5. a "no such user" text is refined by unknownAddress (UserUnknown
//     only on an addressing status (X.1.1, X.1.0, X.1.3), an answer to
//     RCPT TO or a definitive statement in the text or the Context; else
//     Filtered), and a temporary (4.X.X) unknown domain is a
//     NetworkError;
//  6. a temporary failure after which the queue gave up is Expired, unless
//     secondaryRules or a specific status code say more;
//  7. the phrases, then the codes, of secondaryRules;
//  8. the class of the status: X.6.X is ContentError, X.7.X SecurityError;
//  9. a delayed action is Expired, an error at the greeting or HELO is
//     Blocked, other text is OnHold, and nothing at all is Undefined.
//
// Finally the command refines the result: an unknown address said of MAIL
// FROM is the sender's (Rejected), and an address-level reason said before
// any recipient was named (greeting, HELO) is a refusal of the sending host
// (Blocked).
func ClassifyInput(in Input) Verdict {
	text := normalise(in.Text)
	status := NormaliseStatus(in.Status)
	if status == "" || status[2:] == "0.0" {
		if s := FindStatus(text); s != "" && (status == "" || s[0] == status[0]) {
			status = s
		}
	}
	code := in.ReplyCode
	if code == 0 {
		// A code read from prose only ever tells failure apart: a "250"
		// quoted in a transcript is not proof of delivery.
		if c := FindReplyCode(text); c >= 400 {
			code = c
		}
	}
	action := strings.ToLower(strings.TrimSpace(in.Action))
	cmd := strings.ToUpper(strings.TrimSpace(in.Command))

	v := Verdict{Status: status}
	switch {
	case status != "":
		v.Permanent = status[0] == '5'
	case code != 0:
		v.Permanent = code >= 500 && code < 600
	default:
		v.Permanent = action == "failed" || action == ""
	}

	v.Reason = ""
	if action != "delivered" && action != "relayed" && action != "expanded" {
		v.Reason = byHost(in.Hosts, text)
	}
	if v.Reason == "" {
		v.Reason = decide(text, status, code, action, strings.ToLower(in.DiagnosticType), cmd, in.Context)
	}

	if (v.Reason == SystemError || v.Reason == OnHold) && in.Context != "" {
		// A reply that only says the delivery failed ("Service
		// unavailable") often follows the words of the delivery agent
		// that failed; what they say of the mailbox is the reason.
		c := normalise(in.Context)
		if r := firstText(primaryRules, c); addressLevel(r) {
			if r == UserUnknown {
				r = unknownAddress(c, status, cmd, "")
			}
			v.Reason = r
		}
	}
	if (v.Reason == UserUnknown || v.Reason == Filtered) && in.Context != "" && suspended(in.Context) {
		// A mailbox that exists but is disabled is often refused as
		// unknown; the reporting system that says the account is
		// disabled knows better than the reply it quotes.
		v.Reason = Suspend
	}
	switch {
	case cmd == "MAIL" && (v.Reason == UserUnknown || v.Reason == HostUnknown):
		// Said of MAIL FROM, an unknown address or domain is the sender's.
		v.Reason = Rejected
	case cmd == "MAIL" && v.Reason == Blocked && firstText(primaryRules, text) != Blocked:
		// A refusal of MAIL FROM in general words ("access denied")
		// refuses the sender's address; only words about the client
		// host or its IP (the primary rules) make it a block.
		v.Reason = Rejected
	case (cmd == "CONN" || cmd == "HELO" || cmd == "EHLO") && addressLevel(v.Reason):
		// Refused before any recipient was named: the refusal is of the
		// sending host, not of an address.
		v.Reason = Blocked
	}
	v.Hard = v.Reason.IsHard(v.Permanent)
	return v
}

func decide(text, status string, code int, action, dtype, cmd, context string) Reason {
	switch action {
	case "delivered", "relayed", "expanded":
		return Delivered
	}
	if (status != "" && status[0] == '2') || (status == "" && code >= 200 && code < 300) {
		return Delivered
	}
	if strings.HasPrefix(dtype, "x-unix") {
		// The local delivery agent (a program, a pipe) failed, whatever
		// status the MTA gave it.
		return MailerError
	}
	r := firstText(primaryRules, text)
	if r == "" {
		r = firstCode(primaryRules, status)
	}
	if r == UserUnknown {
		r = unknownAddress(text, status, cmd, context)
	}
	if r == HostUnknown && status != "" && status[0] == '4' {
		// A temporary failure to find the domain is a DNS problem on the
		// way, not proof that the domain does not exist.
		r = NetworkError
	}
	if r != "" {
		return r
	}
	// A temporary failure that ended the attempts: the queue gave up.
	r = firstText(secondaryRules, text)
	// A temporary status on a failed action means the queue gave up on
	// it — when the text speaks of the connection, or says nothing.
	gaveUp := matchAny(text, gaveUpPhrases) || (status != "" && status[0] == '4' && action != "delayed" &&
		(r == "" && FindReplyCode(text) == 0 || r == NetworkError || r == Expired))
	if gaveUp && (r == "" || r == NetworkError || r == Expired) {
		// Connection trouble that went on until the queue gave up is
		// an expiry; only a specific status says otherwise.
		if c := firstCode(secondaryRules, status); c != "" && !genericTemporary(status) {
			return c
		}
		return Expired
	}
	if r != "" {
		return r
	}
	if r = firstCode(secondaryRules, status); r != "" {
		return r
	}
	if len(status) >= 4 {
		switch status[2:4] {
		case "6.":
			return ContentError
		case "7.":
			return SecurityError
		}
	}
	if action == "delayed" || action == "expired" {
		return Expired
	}
	switch cmd {
	case "CONN", "HELO", "EHLO":
		return Blocked
	}
	if text != "" {
		return OnHold
	}
	return Undefined
}

// definitelyUnknown are statements, not error labels, that the mailbox does
// not exist: a receiving or reporting system writes them only after looking
// the address up.
var definitelyUnknown = []string{
	"recipient not found by smtp address lookup", "recipientnotfound", "address couldn't be found",
	"address could not be found", "no mailbox here by that name", "does not exist here",
	"no such user here", "invalid recipient", "the recipient name is not recognized",
	"invalid final delivery userid",
	// Sendmail's local delivery agent runs on the host that holds the
	// mailboxes, and says this after looking the account up.
	"mail.local: unknown user",
}

// unknownAddress decides what a text that says "no such user" means.
//
// Only an addressing status (X.1.1, X.1.0, X.1.3, or X.1.351, which
// Microsoft gives when the next hop refused the recipient), a refusal of
// RCPT TO, or a statement of the
// receiving or reporting system that it looked the address up (in the
// text or its context) proves the mailbox is absent (UserUnknown). Said of
// MAIL FROM, it is the sender that is unknown (Rejected). Said after DATA,
// or quoted without saying which command it answered, it is the
// recipient's filter refusing the message with a misleading answer
// (Filtered): suppressing the address on that evidence would lose good
// recipients.
func unknownAddress(text, status, cmd, context string) Reason {
	tail := ""
	if len(status) >= 5 {
		tail = status[2:]
	}
	switch {
	case cmd == "RCPT" || tail == "1.1" || tail == "1.0" || tail == "1.3" || tail == "1.351":
		return UserUnknown
	case cmd == "MAIL":
		return Rejected
	case matchAny(text, definitelyUnknown):
		return UserUnknown
	case context != "" && matchAny(normalise(context), definitelyUnknown):
		return UserUnknown
	}
	return Filtered
}

// suspended reports whether context says the recipient's account is
// disabled or suspended.
func suspended(context string) bool {
	for i := range primaryRules {
		if primaryRules[i].reason == Suspend {
			return primaryRules[i].textMatch(normalise(context))
		}
	}
	return false
}

// genericTemporary reports the status codes that only say "something on
// the way failed": X.0.0, X.4.0 (other network), X.4.1 (no answer), X.4.2
// (bad connection) and X.4.7 (delivery time expired).
func genericTemporary(status string) bool {
	if len(status) < 5 {
		return true
	}
	switch status[2:] {
	case "0.0", "4.0", "4.1", "4.2", "4.7":
		return true
	}
	return false
}

// addressLevel reports the reasons that speak of the recipient's address or
// mailbox.
func addressLevel(r Reason) bool {
	switch r {
	case UserUnknown, HostUnknown, Filtered, Suspend, MailboxFull, HasMoved, NotAccept:
		return true
	}
	return false
}

// byHost applies the rules of the providers among hosts, or returns "".
func byHost(hosts []string, text string) Reason {
	if len(hosts) == 0 || text == "" {
		return ""
	}
	for i := range hostRules {
		hr := &hostRules[i]
		if !anyHost(hosts, hr.domains) {
			continue
		}
		if hr.textMatch(text) {
			return hr.reason
		}
	}
	return ""
}

// anyHost reports whether a host is one of domains or below one of them.
func anyHost(hosts, domains []string) bool {
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		for _, d := range domains {
			if h == d || strings.HasSuffix(h, "."+d) {
				return true
			}
		}
	}
	return false
}

func firstText(rules []rule, text string) Reason {
	for i := range rules {
		if rules[i].textMatch(text) {
			return rules[i].reason
		}
	}
	return ""
}

func firstCode(rules []rule, status string) Reason {
	for i := range rules {
		if rules[i].codeMatch(status) {
			return rules[i].reason
		}
	}
	return ""
}

func matchAny(text string, phrases []string) bool {
	for _, p := range phrases {
		if matchPhrase(text, p) {
			return true
		}
	}
	return false
}

// rule maps phrases and enhanced status codes to a reason.
type rule struct {
	reason Reason
	// phrases are lower-case fragments of the diagnostic text; a "*" inside
	// a phrase stands for any run of characters (the parts must occur in
	// order).
	phrases []string
	// codes are enhanced status codes without the class digit ("1.1"
	// matches 4.1.1 and 5.1.1).
	codes []string
}

func (r *rule) textMatch(text string) bool {
	if text == "" {
		return false
	}
	for _, p := range r.phrases {
		if matchPhrase(text, p) {
			return true
		}
	}
	return false
}

func (r *rule) codeMatch(status string) bool {
	if len(status) < 5 {
		return false
	}
	tail := status[2:]
	for _, c := range r.codes {
		if c == tail {
			return true
		}
	}
	return false
}

func matchPhrase(text, p string) bool {
	star := strings.IndexByte(p, '*')
	if star < 0 {
		return strings.Contains(text, p)
	}
	for {
		part := p
		if star >= 0 {
			part = p[:star]
		}
		i := strings.Index(text, part)
		if i < 0 {
			return false
		}
		text = text[i+len(part):]
		if star < 0 {
			return true
		}
		p = p[star+1:]
		star = strings.IndexByte(p, '*')
	}
}

// normalise lower-cases s and collapses every run of white space to one
// space, so that phrases match across folded lines.
func normalise(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			space = true
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteByte(c)
	}
	return stripContinuations(b.String())
}

// stripContinuations removes the reply code and enhanced status code that a
// multi-line SMTP reply repeats at the start of every line (RFC 5321
// §4.2.1), so that a phrase broken across lines still matches.
func stripContinuations(s string) string {
	if len(s) < 4 || !isDigit(s[0]) || !isDigit(s[1]) || !isDigit(s[2]) || (s[3] != '-' && s[3] != ' ') {
		return s
	}
	code := s[:3]
	prefix := code
	if n, ok := statusAt(s, 4); ok {
		prefix = s[:4+n]
	}
	var b strings.Builder
	b.WriteString(s[:len(prefix)])
	rest := s[len(prefix):]
	for {
		i := strings.Index(rest, " "+code)
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		b.WriteString(rest[:i])
		rest = rest[i:]
		j := 1 + len(code)
		if j < len(rest) && (rest[j] == '-' || rest[j] == ' ') && (j+1 == len(rest) || !isDigit(rest[j+1]) || len(prefix) > 4) {
			k := j + 1
			if n, ok := statusAt(rest, k); ok && len(prefix) > 4 {
				k += n
			}
			rest = rest[k:]
			if len(rest) > 0 && rest[0] != ' ' {
				b.WriteByte(' ')
			}
			continue
		}
		b.WriteString(rest[:j])
		rest = rest[j:]
	}
}

// NormaliseStatus returns s as a well-formed RFC 3463 status code
// ("class.subject.detail" with class 2, 4 or 5, subject up to three and
// detail up to three digits), or "" when s is not one. Leading and
// trailing text such as "#" or a comment is ignored.
func NormaliseStatus(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimLeft(s, "#(")
	if i := strings.IndexAny(s, " \t(;"); i >= 0 {
		s = s[:i]
	}
	if n, ok := statusAt(s, 0); ok && n == len(s) {
		return s
	}
	return ""
}

// FindStatus returns the first RFC 3463 status code written in text, or "".
// A code must stand as its own word, so version numbers and addresses are
// not mistaken for one.
func FindStatus(text string) string {
	for i := 0; i+5 <= len(text); i++ {
		c := text[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && !isBoundary(text[i-1]) {
			continue
		}
		n, ok := statusAt(text, i)
		if !ok {
			continue
		}
		if i+n < len(text) && !isBoundary(text[i+n]) {
			continue
		}
		return text[i : i+n]
	}
	return ""
}

func isBoundary(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '(', ')', '[', ']', '<', '>', '#', ':', ';', ',', '"', '\'', '=', '-':
		return true
	}
	return false
}

// statusAt reports the length of the status code that starts at s[i].
func statusAt(s string, i int) (int, bool) {
	start := i
	if i >= len(s) || (s[i] != '2' && s[i] != '4' && s[i] != '5') {
		return 0, false
	}
	i++
	for part, max := 0, 3; part < 2; part++ {
		if i >= len(s) || s[i] != '.' {
			return 0, false
		}
		i++
		d := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && d < max {
			i++
			d++
		}
		if d == 0 {
			return 0, false
		}
		if i < len(s) && s[i] >= '0' && s[i] <= '9' {
			return 0, false
		}
	}
	if i < len(s) && s[i] == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
		return 0, false // an IP address or version, not a status
	}
	return i - start, true
}

// FindReplyCode returns the SMTP reply code that begins text or follows a
// "said:" or similar marker, or 0 when there is none.
func FindReplyCode(text string) int {
	for i := 0; i+3 <= len(text); i++ {
		c := text[i]
		if c != '2' && c != '4' && c != '5' {
			continue
		}
		if i > 0 && !isBoundary(text[i-1]) {
			continue
		}
		if !isDigit(text[i+1]) || !isDigit(text[i+2]) {
			continue
		}
		if i+3 < len(text) && strings.IndexByte(" -\t:,", text[i+3]) < 0 {
			continue
		}
		if i > 0 && text[i-1] == ':' && i+3 < len(text) && text[i+3] == ':' {
			continue // a group of an IPv6 address
		}
		n, _ := strconv.Atoi(text[i : i+3])
		if n%100 < 60 { // 2yz..5yz with y in 0-5 per RFC 5321 §4.2.1
			if (n/10)%10 <= 5 {
				return n
			}
		}
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
