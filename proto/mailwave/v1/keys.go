package mailwavev1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// KV keys may hold only [-/_=.a-zA-Z0-9]; the helpers below build every key
// the services share, so a writer and a reader can never disagree.

// AddressHash is the key component of a recipient address: the first 128
// bits of the SHA-256 of the trimmed, lower-cased address, in hex. Keys
// never carry addresses in clear.
func AddressHash(addr string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(addr))))
	return hex.EncodeToString(sum[:16])
}

// KeyToken makes s safe as one KV key token: every byte outside
// [-_a-zA-Z0-9] becomes '_'; empty becomes "_".
func KeyToken(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// SuppressionKey is the key of a suppression in BucketSuppressions:
//
//	brand scope:               b.<tenant>.<brand>.<address hash>
//	communication type scope:  t.<tenant>.<brand>.<type>.<address hash>
//	global scope:              g.<address hash>
//
// The planner looks up all three before planning a recipient.
func SuppressionKey(scope SuppressionScope, tenant, brand, communicationType, addr string) string {
	h := AddressHash(addr)
	switch scope {
	case SuppressionScope_SUPPRESSION_SCOPE_GLOBAL:
		return "g." + h
	case SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE:
		return "t." + KeyToken(tenant) + "." + KeyToken(brand) + "." + KeyToken(communicationType) + "." + h
	default:
		return "b." + KeyToken(tenant) + "." + KeyToken(brand) + "." + h
	}
}

// PolicyKey is the key of the current policy for a scope in BucketPolicy:
// <scope kind>.<value>.<provider or "_">, for example
// "tenant.acme.google" or "source_ip.127_0_0_3._". Senders watch the whole
// bucket and match a message against the policies of its pool, source IP,
// provider, sending domain, tenant, brand and campaign.
func PolicyKey(s *PolicyScope) string {
	kind := strings.ToLower(strings.TrimPrefix(s.GetKind().String(), "SCOPE_KIND_"))
	return KeyToken(kind) + "." + KeyToken(s.GetValue()) + "." + KeyToken(s.GetProvider())
}
