package dsn

import (
	"strings"
)

// statusRecord is one per-recipient group of an RFC 3464 §2.3 report.
type statusRecord struct {
	final, original, action, status, remoteMTA, diagType, diag string
	extra                                                      []string // X-Supplementary-Info and the like
}

// perMessage holds the RFC 3464 §2.2 fields a report states once.
type perMessage struct {
	reportingMTA, arrivalDate string
}

// readStatus reads the body of a message/delivery-status part. It is
// lenient: groups need not be separated by empty lines (a repeated
// recipient field starts a new one), field names are case-insensitive,
// and unknown fields are ignored.
func readStatus(b []byte) (perMessage, []statusRecord) {
	var pm perMessage
	var recs []statusRecord
	var cur *statusRecord
	flush := func() {
		if cur != nil && (cur.final != "" || cur.original != "") {
			recs = append(recs, *cur)
		}
		cur = nil
	}
	pos := 0
	for pos < len(b) {
		fs, n := readFields(b[pos:])
		if n == 0 {
			break
		}
		pos += n
		for _, f := range fs {
			switch f.key {
			case "Reporting-Mta":
				pm.reportingMTA = typedValue(f.value)
				continue
			case "Arrival-Date":
				pm.arrivalDate = f.value
				continue
			case "Original-Recipient":
				// Original-Recipient usually comes first, but some mail
				// systems write it after Final-Recipient.
				if cur != nil && (cur.original != "" || cur.final != "" && cur.status != "") {
					flush()
				}
			case "Final-Recipient", "X-Actual-Recipient":
				if f.key == "X-Actual-Recipient" {
					if cur != nil && cur.final == "" {
						cur.final = addrSpec(f.value)
					}
					continue
				}
				if cur != nil && cur.final != "" {
					flush()
				}
			}
			if cur == nil {
				switch f.key {
				case "Original-Recipient", "Final-Recipient", "Action", "Status", "Diagnostic-Code", "Remote-Mta":
					cur = &statusRecord{}
				default:
					continue
				}
			}
			switch f.key {
			case "Original-Recipient":
				cur.original = addrSpec(f.value)
			case "Final-Recipient":
				cur.final = addrSpec(f.value)
			case "Action":
				cur.action = strings.ToLower(firstWord(f.value))
			case "Status":
				cur.status = f.value
			case "Remote-Mta":
				cur.remoteMTA = typedValue(f.value)
			case "Diagnostic-Code":
				cur.diagType, cur.diag = splitTyped(f.value)
			case "X-Supplementary-Info", "X-Display-Name":
				if f.key == "X-Supplementary-Info" {
					cur.extra = append(cur.extra, f.value)
				}
			}
		}
		// An empty line ends a recipient group (RFC 3464 §2.1).
		flush()
	}
	flush()
	return pm, recs
}

// typedValue strips the type of a "dns; host" value.
func typedValue(v string) string {
	_, s := splitTyped(v)
	return strings.Trim(s, "[] ")
}

// splitTyped splits an RFC 3464 typed value ("smtp; 550 5.1.1 …") into its
// lower-case type and its text. A value without a type has type "".
func splitTyped(v string) (string, string) {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, ';'); i > 0 && i <= 12 {
		t := strings.TrimSpace(v[:i])
		if t != "" && !strings.ContainsAny(t, " \t<@") {
			return strings.ToLower(t), strings.TrimSpace(v[i+1:])
		}
	}
	return "", v
}

func firstWord(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " \t;("); i >= 0 {
		return v[:i]
	}
	return v
}

// inlineStatus finds RFC 3464 fields written into a text part by a mail
// system that did not make a separate delivery-status part: a line that
// begins "Final-Recipient:" or "Original-Recipient:" starts the block.
func inlineStatus(text string) (perMessage, []statusRecord) {
	lower := strings.ToLower(text)
	i := strings.Index(lower, "final-recipient:")
	if j := strings.Index(lower, "original-recipient:"); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i < 0 {
		return perMessage{}, nil
	}
	start := strings.LastIndexByte(text[:i], '\n') + 1
	if strings.TrimSpace(text[start:i]) != "" {
		return perMessage{}, nil
	}
	// Include the per-message block just above, if there is one.
	if k := strings.LastIndex(lower[:start], "reporting-mta:"); k >= 0 && start-k < 600 {
		start = strings.LastIndexByte(text[:k], '\n') + 1
	}
	return readStatus([]byte(text[start:]))
}
