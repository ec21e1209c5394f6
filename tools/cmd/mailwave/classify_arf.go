package main

import (
	"time"

	"github.com/mailwave/mailwave/pkg/arf"
)

// classifyARF reports the ARF fields of raw when it is a feedback report.
// Lists are never nil and absent values are "", so the JSON output has the
// same shape for every report.
func classifyARF(raw []byte) (feedback map[string]any, ok bool) {
	r, err := arf.Parse(raw)
	if err != nil {
		return nil, false
	}
	arrival := ""
	if !r.ArrivalDate.IsZero() {
		arrival = r.ArrivalDate.UTC().Format(time.RFC3339)
	}
	sourceIP := ""
	if r.SourceIP.IsValid() {
		sourceIP = r.SourceIP.String()
	}
	authFailure := ""
	if r.AuthFailure != nil {
		authFailure = r.AuthFailure.Type
	}
	return map[string]any{
		"feedback_type":            r.FeedbackType,
		"variant":                  r.Variant,
		"user_agent":               r.UserAgent,
		"version":                  r.Version,
		"original_mail_from":       r.OriginalMailFrom,
		"original_rcpt_to":         nonNil(r.OriginalRcptTo),
		"arrival_date":             arrival,
		"arrival_date_raw":         r.ArrivalDateRaw,
		"source_ip":                sourceIP,
		"reported_domain":          nonNil(r.ReportedDomains),
		"reported_uri":             nonNil(r.ReportedURIs),
		"auth_failure":             authFailure,
		"incidents":                r.Incidents,
		"recipient":                r.Recipient(),
		"redacted":                 r.Redacted,
		"sender_candidates":        nonNil(r.SenderCandidates()),
		"reported_part_type":       r.Reported.PartType,
		"reported_message_id":      r.Reported.MessageID,
		"reported_return_path":     r.Reported.ReturnPath,
		"reported_from":            r.Reported.From,
		"reported_to":              r.Reported.To,
		"reported_subject":         r.Reported.Subject,
		"reported_feedback_id":     r.Reported.FeedbackID.Raw,
		"reported_feedback_sender": r.Reported.FeedbackID.SenderID,
		"fingerprint":              r.Fingerprint,
	}, true
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
