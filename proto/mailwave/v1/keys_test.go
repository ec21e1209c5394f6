package mailwavev1_test

import (
	"regexp"
	"testing"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

var validKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestKeysAreValidKVKeys(t *testing.T) {
	keys := []string{
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "acme inc", "shop.de", "", "Ana+x@Example.com"),
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_COMMUNICATION_TYPE, "acme", "shop", "weekly digest", "a@b"),
		mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_GLOBAL, "", "", "", "a@b"),
		mailwavev1.PolicyKey(&mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_SOURCE_IP, Value: "127.0.0.3"}),
		mailwavev1.PolicyKey(&mailwavev1.PolicyScope{Kind: mailwavev1.ScopeKind_SCOPE_KIND_TENANT, Value: "acme", Provider: "google"}),
	}
	for _, k := range keys {
		if !validKey.MatchString(k) {
			t.Errorf("invalid KV key %q", k)
		}
	}
	if keys[3] != "source_ip.127_0_0_3._" || keys[4] != "tenant.acme.google" {
		t.Errorf("policy keys %q %q", keys[3], keys[4])
	}
	a := mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "t", "b", "", " ANA@example.com")
	b := mailwavev1.SuppressionKey(mailwavev1.SuppressionScope_SUPPRESSION_SCOPE_BRAND, "t", "b", "", "ana@example.com")
	if a != b {
		t.Errorf("case and space must not matter: %q %q", a, b)
	}
}
