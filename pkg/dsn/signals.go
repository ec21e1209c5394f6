package dsn

import (
	"net/textproto"
	"strings"
)

// bounceSenders are fragments of the From field of messages that mail
// systems write about delivery: the null sender's stand-ins of RFC 5321
// §4.5.5 and the role names RFC 2142 gives to mail administration.
var bounceSenders = []string{
	"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster", "post_master", "poostmaster",
	"mail delivery", "mail.delivery", "mail administrator", "mail delivery system", "mail delivery subsystem",
	"<>", "mdaemon", "bounce@", "bounces@", "no-reply@sns.amazonaws.com",
}

// bounceSubjects are fragments of the subjects mail systems give bounces.
var bounceSubjects = []string{
	"undeliverable", "undelivered", "undeliverable mail", "returned mail", "return mail", "returned to sender",
	"delivery status notification", "delivery failure", "delivery failed", "failure notice", "failure delivery",
	"mail delivery failed", "non-delivery", "nondeliverable", "non delivery", "could not be delivered",
	"mail system error", "delivery report", "delivery notification", "failed delivery", "delivery problem",
	"could not send message", "postmaster notify", "mail failure", "message delivery has failed",
	"not be delivered", "delivery status", "returned message", "undeliverable message", "warning: message",
	"delivery has failed", "delivery error", "permanent delivery failure", "mail could not be delivered",
	"notice: mail delivery status", "bounce", "loop alert", "rejected", "error sending message",
}

func isBounceSender(from string) bool {
	l := strings.ToLower(from)
	if strings.TrimSpace(l) == "" {
		return false
	}
	for _, s := range bounceSenders {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func isBounceSubject(subject string) bool {
	l := strings.ToLower(subject)
	for _, s := range bounceSubjects {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// autoreplySubjects begin or mark the subjects of automatic replies.
var autoreplySubjects = []string{
	"out of office", "out of the office", "auto reply", "auto-reply", "autoreply", "automatic reply",
	"auto response", "autoresponse", "auto-response", "away until", "away from", "vacation", "on leave",
	"abwesenheit", "absence", "réponse automatique", "respuesta automática", "automatische antwort",
	"auto:", "[auto]", "autosvar",
}

// isAutoreply reports the marks of an automatic reply: RFC 3834 §5's
// Auto-Submitted: auto-replied, the older X-Autoreply, X-Autorespond and
// "Precedence: auto_reply" fields, and the subjects vacation responders
// write.
func isAutoreply(h textproto.MIMEHeader, subject string) bool {
	if v := strings.ToLower(h.Get("Auto-Submitted")); strings.HasPrefix(v, "auto-replied") {
		return true
	}
	if h.Get("X-Autoreply") != "" || h.Get("X-Autorespond") != "" || h.Get("X-Autoresponder") != "" {
		return true
	}
	if strings.EqualFold(strings.TrimSpace(h.Get("Precedence")), "auto_reply") {
		return true
	}
	l := strings.ToLower(subject)
	for _, s := range autoreplySubjects {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// undeliveredPhrases are what the explanation of a bounce says whatever
// the sender or subject it came with.
var undeliveredPhrases = []string{
	"could not be delivered to", "could not be delivered", "was not delivered", "wasn't delivered",
	"undeliverable", "delivery has failed", "delivery failed", "permanent fatal errors",
	"permanent delivery errors", "delivery to the following recipient", "the following addresses had",
	"message could not be delivered", "unable to deliver", "failed to deliver", "delivery failure",
	"not be delivered", "returned to sender", "mail delivery failed", "message delivery failed",
	"could not deliver", "delivery status notification",
}

// saysUndelivered reports whether a text states that a message was not
// delivered.
func saysUndelivered(expl string) bool {
	l := strings.ToLower(expl)
	for _, p := range undeliveredPhrases {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}
