package mailwavev1

import (
	"strings"
	"time"
)

// The names below are the other half of the contract: every stream,
// subject, durable consumer and bucket the services share is declared here
// once, next to the messages that travel on them.

// Streams.
const (
	// StreamSend holds send requests, de-duplicated by idempotency key.
	StreamSend = "SEND"
	// StreamDispatch holds one message per recipient until it ends
	// delivered, bounced or expired.
	StreamDispatch = "DISPATCH"
	// StreamEvents is the public outcome feed.
	StreamEvents = "EVENTS"
	// StreamInbound holds raw DSN, FBL and reply messages, stored before the
	// receiving SMTP server answers 250.
	StreamInbound = "INBOUND"
	// StreamReports holds parsed bounce and complaint reports.
	StreamReports = "REPORTS"
	// StreamDead holds messages no service could decode, with the reason.
	StreamDead = "DEAD"
)

// Subject prefixes and wildcards.
const (
	SubjectSendAll     = "mail.send.>"
	SubjectDispatchAll = "mail.dispatch.>"
	// SubjectDispatchTransactionalAll holds transactional dispatches: a
	// lane of their own in the DISPATCH stream, read by a consumer of
	// their own, so a password reset never waits behind a campaign.
	SubjectDispatchTransactionalAll = "mail.dispatch-tx.>"
	// SubjectRetryAll holds scheduled retries: a message published on
	// mail.retry.<message id> with a Nats-Schedule header waits in the
	// DISPATCH stream, outside the sender's filter, until the server moves
	// it to its dispatch subject.
	SubjectRetryAll   = "mail.retry.>"
	SubjectEventAll   = "mail.event.>"
	SubjectInboundAll = "mail.inbound.>"
	SubjectReportAll  = "mail.report.>"
	SubjectDeadAll    = "mail.dead.>"
)

// Send lanes: transactional mail has its own so it is never queued behind
// a campaign.
const (
	LaneTransactional = "transactional"
	LaneBulk          = "bulk"
)

// Durable consumer names.
const (
	ConsumerPlanner       = "planner"
	ConsumerPlannerEvents = "planner-events"
	ConsumerSender        = "sender"
	ConsumerInboundDSN    = "inbound-dsn"
	// ConsumerInboundDSNEvents reads delivered events: a delivery resets
	// the recipient's soft bounce count.
	ConsumerInboundDSNEvents  = "inbound-dsn-events"
	ConsumerFBLParser         = "fbl-parser"
	ConsumerReputationMonitor = "reputation-monitor"
)

// The transactional lane's consumers: ConsumerPlanner and ConsumerSender
// read the bulk lane, these the transactional one.
const (
	ConsumerPlannerTransactional = "planner-transactional"
	ConsumerSenderTransactional  = "sender-transactional"
)

// Key-value buckets and object stores.
const (
	// BucketSuppressions maps a suppression key to a Suppression.
	BucketSuppressions = "suppressions"
	// BucketPolicy maps a policy scope key to the current PolicyChange;
	// every sender watches it.
	BucketPolicy = "policy"
	// BucketMessages maps a dispatch message id to its MessageRecord, for
	// correlating bounces and complaints and for planning a message again.
	BucketMessages = "messages"
	// BucketAudits maps a sending domain's KeyToken to its latest
	// AuthAudit; the planner holds a domain whose audit is not ok.
	BucketAudits = "audits"
	// ObjectStoreAudiences holds campaign audiences (NDJSON or CSV).
	ObjectStoreAudiences = "audiences"
)

// Headers carried by every message the services publish.
const (
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderType names the protobuf message in the payload, for example
	// "mailwave.v1.DeliveryEvent".
	HeaderType = "Mailwave-Type"
	// HeaderTrace is the trace id that follows a request through every
	// service.
	HeaderTrace = "Mailwave-Trace-Id"
	// HeaderDeadReason says why a message went to the dead-letter subject.
	HeaderDeadReason = "Mailwave-Dead-Reason"
	// HeaderDeadSubject is the subject the dead message was first published on.
	HeaderDeadSubject = "Mailwave-Dead-Subject"
	// HeaderDeadConsumer names the consumer that gave up on it.
	HeaderDeadConsumer = "Mailwave-Dead-Consumer"
)

// MessagesTTL is how long a MessageRecord is kept: late DSNs and
// complaints arrive days, sometimes weeks, after delivery.
const MessagesTTL = 45 * 24 * time.Hour

// SubjectMessageRecord is the KV subject of a message record, for
// publishing it asynchronously with the dispatch.
func SubjectMessageRecord(messageID string) string { return "$KV." + BucketMessages + "." + messageID }

// DuplicateWindow is how long JetStream remembers an idempotency key of
// the SEND stream.
const DuplicateWindow = 24 * time.Hour

// SubjectSend is where a send request for tenant is published.
func SubjectSend(lane, tenant string) string {
	return "mail.send." + Token(lane) + "." + Token(tenant)
}

// SubjectSendLane is every send subject of lane.
func SubjectSendLane(lane string) string { return "mail.send." + Token(lane) + ".>" }

// LaneFor returns the send lane of a priority.
func LaneFor(p Priority) string {
	if p == Priority_PRIORITY_TRANSACTIONAL {
		return LaneTransactional
	}
	return LaneBulk
}

// SubjectDispatch is where a message for pool and destination site waits
// for the sender.
func SubjectDispatch(pool, site string) string {
	return "mail.dispatch." + Token(pool) + "." + Token(site)
}

// SubjectDispatchTransactional is where a transactional message for pool
// and site waits for the sender, in its own lane.
func SubjectDispatchTransactional(pool, site string) string {
	return "mail.dispatch-tx." + Token(pool) + "." + Token(site)
}

// SubjectRetry is the schedule subject of a message's next attempt.
func SubjectRetry(messageID string) string { return "mail.retry." + Token(messageID) }

// Message schedule headers (JetStream, nats-server 2.12+).
const (
	// HeaderSchedule holds "@at <RFC 3339 time>".
	HeaderSchedule = "Nats-Schedule"
	// HeaderScheduleTarget is the subject the scheduled message goes to.
	HeaderScheduleTarget = "Nats-Schedule-Target"
)

// SubjectEvent is where an event of kind for tenant is published.
func SubjectEvent(kind EventKind, tenant string) string {
	return "mail.event." + EventKindWord(kind) + "." + Token(tenant)
}

// SubjectPolicyEvent is where a policy change is announced.
func SubjectPolicyEvent(kind ScopeKind) string {
	return "mail.event.policy." + Token(strings.ToLower(strings.TrimPrefix(kind.String(), "SCOPE_KIND_")))
}

// SubjectAlert is where the reputation monitor publishes an Alert named
// name, for example mail.event.alert.dnsbl_listed.
func SubjectAlert(name string) string { return "mail.event.alert." + Token(name) }

// SubjectInbound is where a raw inbound message of kind is stored.
func SubjectInbound(kind InboundKind) string {
	return "mail.inbound." + Token(strings.ToLower(strings.TrimPrefix(kind.String(), "INBOUND_KIND_")))
}

// SubjectBounceReport and SubjectComplaintReport carry parsed reports.
func SubjectBounceReport(tenant string) string { return "mail.report.bounce." + Token(tenant) }

// SubjectComplaintReport carries a parsed complaint report for tenant.
func SubjectComplaintReport(tenant string) string { return "mail.report.complaint." + Token(tenant) }

// SubjectDead is the dead-letter subject for messages of stream.
func SubjectDead(stream string) string { return "mail.dead." + Token(strings.ToLower(stream)) }

// EventKindWord is the lower-case word of an event kind used in subjects,
// for example "delivered".
func EventKindWord(k EventKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "EVENT_KIND_"))
}

// Token makes s safe as one subject token: NATS subjects split on '.', and
// '*', '>' and white space are reserved. Empty becomes "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	clean := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == '*' || c == '>' || c <= ' ' || c >= 0x7f:
			clean = false
		}
	}
	if clean {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c <= ' ' || c >= 0x7f {
			b[i] = '_'
		}
	}
	return string(b)
}
