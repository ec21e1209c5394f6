package planner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/mailwave/mailwave/pkg/authaudit"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// auditFailure returns why domain's latest authentication audit (written
// by the reputation monitor in the audits bucket) fails SPF, DKIM or
// DMARC alignment, or "" when it passes or the domain was never audited.
// Mail from such a domain would be rejected or filtered by every provider
// that checks DMARC, and would burn the IPs' reputation on the way: the
// planner holds it instead. PTR and MX findings do not hold mail.
func (p *planner) auditFailure(ctx context.Context, domain string) (string, error) {
	if domain == "" {
		return "", nil
	}
	e, err := p.audits.Get(ctx, mailwavev1.KeyToken(domain))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("planner: audit of %s: %w", domain, err)
	}
	var a mailwavev1.AuthAudit
	if err := proto.Unmarshal(e.Value(), &a); err != nil {
		p.log.Warn("audit unreadable; not holding mail for it", "domain", domain, "err", err)
		return "", nil
	}
	var fails []string
	for _, c := range a.GetChecks() {
		switch c.GetName() {
		case authaudit.CheckSPF, authaudit.CheckDKIM, authaudit.CheckDMARC:
			if !c.GetOk() {
				f := c.GetName()
				if len(c.GetProblems()) > 0 {
					f += " (" + strings.Join(c.GetProblems(), "; ") + ")"
				}
				fails = append(fails, f)
			}
		}
	}
	if len(fails) == 0 {
		return "", nil
	}
	return fmt.Sprintf("sending domain %s fails its authentication audit of %s: %s", domain,
		a.GetAuditedAt().AsTime().UTC().Format("2006-01-02 15:04 UTC"), strings.Join(fails, ", ")), nil
}
