package dsn

import (
	"encoding/json"
	"net/textproto"
	"strings"

	"github.com/mailwave/mailwave/pkg/reason"
)

// sesEvent is the part of an Amazon SES event notification (delivered by
// SNS to an e-mail subscription) that describes recipients.
type sesEvent struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           *struct {
		BounceType        string `json:"bounceType"`
		ReportingMTA      string `json:"reportingMTA"`
		BouncedRecipients []struct {
			EmailAddress   string `json:"emailAddress"`
			Action         string `json:"action"`
			Status         string `json:"status"`
			DiagnosticCode string `json:"diagnosticCode"`
		} `json:"bouncedRecipients"`
	} `json:"bounce"`
	Delivery *struct {
		Recipients   []string `json:"recipients"`
		SMTPResponse string   `json:"smtpResponse"`
		ReportingMTA string   `json:"reportingMTA"`
	} `json:"delivery"`
	Mail *struct {
		MessageID     string `json:"messageId"`
		Source        string `json:"source"`
		CommonHeaders struct {
			From      []string `json:"from"`
			To        []string `json:"to"`
			Subject   string   `json:"subject"`
			MessageID string   `json:"messageId"`
		} `json:"commonHeaders"`
		Headers []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"headers"`
	} `json:"mail"`
}

// sesNotification reads an Amazon SES bounce or delivery notification,
// bare or wrapped in an SNS envelope whose "Message" is the event as a
// string, and fills m from it. It reports whether text was one.
func sesNotification(text string, m *Message) bool {
	i := strings.IndexByte(text, '{')
	if i < 0 || !strings.Contains(text, "notificationType") && !strings.Contains(text, "eventType") {
		return false
	}
	// Mail systems break lines longer than RFC 5322 allows with "!" and a
	// folding newline; undo that before reading the JSON.
	body := strings.NewReplacer("!\r\n ", "", "!\n ", "").Replace(text[i:])
	dec := json.NewDecoder(strings.NewReader(body))
	var outer struct {
		Type    string `json:"Type"`
		Message string `json:"Message"`
		sesEvent
	}
	if err := dec.Decode(&outer); err != nil {
		return false
	}
	ev := outer.sesEvent
	if outer.Message != "" {
		if err := json.Unmarshal([]byte(outer.Message), &ev); err != nil {
			return false
		}
	}
	kind := strings.ToLower(ev.NotificationType + ev.EventType)
	switch {
	case kind == "bounce" && ev.Bounce != nil:
		m.ReportingMTA = typedValue(ev.Bounce.ReportingMTA)
		for _, b := range ev.Bounce.BouncedRecipients {
			_, diag := splitTyped(b.DiagnosticCode)
			r := Record{Recipient: addrSpec(b.EmailAddress), Action: strings.ToLower(b.Action), Diagnostic: oneLine(diag, 1200)}
			if r.Action == "" {
				r.Action = "failed"
			}
			classify(&r, b.Status, "", "", "")
			m.Records = append(m.Records, r)
		}
	case kind == "delivery" && ev.Delivery != nil:
		m.ReportingMTA = ev.Delivery.ReportingMTA
		for _, a := range ev.Delivery.Recipients {
			r := Record{Recipient: addrSpec(a), Action: "delivered", Diagnostic: oneLine(ev.Delivery.SMTPResponse, 1200)}
			classify(&r, "", "", "", "")
			r.Reason = reason.Delivered
			m.Records = append(m.Records, r)
		}
	default:
		return false
	}
	if ev.Mail != nil && m.Original.Header == nil {
		h := textproto.MIMEHeader{}
		for _, x := range ev.Mail.Headers {
			k := textproto.CanonicalMIMEHeaderKey(x.Name)
			h[k] = append(h[k], x.Value)
		}
		m.Original = Original{
			MessageID:  strings.Trim(first(h["Message-Id"]), "<>"),
			From:       strings.Join(ev.Mail.CommonHeaders.From, ", "),
			To:         strings.Join(ev.Mail.CommonHeaders.To, ", "),
			Subject:    ev.Mail.CommonHeaders.Subject,
			ReturnPath: ev.Mail.Source,
			Header:     h,
		}
	}
	return true
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
