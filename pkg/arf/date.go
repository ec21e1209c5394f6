package arf

import (
	"net/mail"
	"strings"
	"time"
)

// zoneOffsets maps the obsolete zone names of RFC 5322 §4.3 (and a few
// abbreviations that report generators use in the same place) to their
// offsets in hours. RFC 5322 §4.3 gives the North American names their
// historical meaning; "JST", "CET" and friends are not in the RFC but occur
// in real reports and have one unambiguous meaning.
var zoneOffsets = map[string]int{
	"UT": 0, "UTC": 0, "GMT": 0, "Z": 0,
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
	"MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
	"JST": 9, "KST": 9, "CET": 1, "CEST": 2, "MET": 1, "MEST": 2,
	"BST": 1, "EET": 2, "EEST": 3, "WET": 0, "WEST": 1,
}

// fallbackLayouts are date forms seen in Arrival-Date fields that are not
// RFC 5322 dates.
var fallbackLayouts = []string{
	time.RFC3339,
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05",
	time.ANSIC,
	time.UnixDate,
}

// parseDate reads a date-time (RFC 5322 §3.3) leniently: comments are
// dropped, obsolete zone names are given their offsets (RFC 5322 §4.3), and
// unknown alphabetic zones are read as -0000 (no zone information), as
// §4.3 prescribes for military zones. It reports false when nothing fits.
func parseDate(s string) (time.Time, bool) {
	s = stripComments(s)
	if s == "" {
		return time.Time{}, false
	}
	fields := strings.Fields(s)
	if n := len(fields); n > 0 {
		last := fields[n-1]
		if isAlpha(last) {
			if off, ok := zoneOffsets[strings.ToUpper(last)]; ok {
				fields[n-1] = formatOffset(off)
			} else if n >= 4 {
				fields[n-1] = "-0000"
			}
		}
	}
	s = strings.Join(fields, " ")
	if t, err := mail.ParseDate(s); err == nil {
		return t, true
	}
	for _, layout := range fallbackLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func formatOffset(hours int) string {
	sign := byte('+')
	if hours < 0 {
		sign, hours = '-', -hours
	}
	return string([]byte{sign, byte('0' + hours/10), byte('0' + hours%10), '0', '0'})
}

func isAlpha(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return s != ""
}

// stripComments removes RFC 5322 comments "(...)", nested or not, and
// returns the rest trimmed.
func stripComments(s string) string {
	if !strings.ContainsRune(s, '(') {
		return strings.TrimSpace(s)
	}
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0 && i+1 < len(s):
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}
