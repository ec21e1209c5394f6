package ispsim

import (
	"sync"

	"github.com/mailwave/mailwave/pkg/dkim"
)

// ReportSelector is the DKIM selector with which the simulator's providers
// sign their complaint reports, as real feedback loops sign theirs (a
// receiver trusts a report mailed to it only when the loop's signature
// verifies). The public key is published in the simulator's DNS at
// <ReportSelector>._domainkey.<domain of the complaints' From>.
const ReportSelector = "ispsim"

// reportSigner signs the simulator's reports with an Ed25519 key per
// domain (RFC 8463), made the first time the domain signs: no key lives in
// the repository.
type reportSigner struct {
	mu      sync.Mutex
	signers map[string]*dkim.Signer
}

func newReportSigner() *reportSigner {
	return &reportSigner{signers: map[string]*dkim.Signer{}}
}

// sign adds a DKIM-Signature of the domain of from to data, publishing the
// key record in zone the first time the domain signs.
func (r *reportSigner) sign(zone *Zone, from string, data []byte) ([]byte, error) {
	domain := domainOf(from)
	if domain == "" {
		return data, nil
	}
	r.mu.Lock()
	s := r.signers[domain]
	if s == nil {
		k, err := dkim.GenerateEd25519(domain, ReportSelector)
		if err != nil {
			r.mu.Unlock()
			return nil, err
		}
		if s, err = dkim.NewSigner(k); err != nil {
			r.mu.Unlock()
			return nil, err
		}
		zone.SetTXT(k.RecordName(), k.TXT()...)
		r.signers[domain] = s
	}
	r.mu.Unlock()
	return s.Sign(domain, nil, data)
}
