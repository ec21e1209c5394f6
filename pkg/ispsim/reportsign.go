package ispsim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
)

// ReportSelector is the DKIM selector with which the simulator's providers
// sign their complaint reports, as real feedback loops sign theirs (a
// receiver trusts a report mailed to it only when the loop's signature
// verifies). The public key is published in the simulator's DNS at
// <ReportSelector>._domainkey.<domain of the complaints' From>.
const ReportSelector = "ispsim"

// reportSigner signs the simulator's reports with one Ed25519 key (RFC
// 8463), made when the simulator starts: no key lives in the repository.
type reportSigner struct {
	key    ed25519.PrivateKey
	record string

	mu        sync.Mutex
	published map[string]bool
}

func newReportSigner() (*reportSigner, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ispsim: report key: %w", err)
	}
	return &reportSigner{key: key, published: map[string]bool{},
		record: "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}, nil
}

// sign adds a DKIM-Signature of the domain of from to data, publishing the
// key record in zone the first time the domain signs.
func (r *reportSigner) sign(zone *Zone, from string, data []byte) ([]byte, error) {
	domain := domainOf(from)
	if domain == "" {
		return data, nil
	}
	r.mu.Lock()
	if !r.published[domain] {
		zone.SetTXT(ReportSelector+"._domainkey."+domain, r.record)
		r.published[domain] = true
	}
	r.mu.Unlock()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(data), &dkim.SignOptions{
		Domain: domain, Selector: ReportSelector, Signer: r.key,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"},
	})
	if err != nil {
		return nil, fmt.Errorf("ispsim: sign report: %w", err)
	}
	return out.Bytes(), nil
}
