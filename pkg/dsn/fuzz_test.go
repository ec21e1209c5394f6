package dsn_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/pkg/dsn"
	"github.com/mailwave/mailwave/pkg/reason"
)

// FuzzParse checks that no input makes the parser panic and that whatever
// it returns is well formed.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "corpus", "*.eml"))
	files = append(files, filepath.Join("testdata", "mailwave-dsn.eml"))
	for i, name := range files {
		if i%4 != 0 && !strings.Contains(name, "mailwave") {
			continue // a sample of the corpus is enough to seed
		}
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte("Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822;a@b.c\r\nStatus: 5.1.1\r\n--x--"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := dsn.ParseUnguarded(raw)
		if err != nil {
			return
		}
		switch m.Kind {
		case dsn.KindDSN, dsn.KindARF, dsn.KindAutoreply, dsn.KindOther:
		default:
			t.Fatalf("kind %q", m.Kind)
		}
		if m.IsBounce && m.Kind != dsn.KindDSN {
			t.Fatalf("a %s is a bounce", m.Kind)
		}
		bounce := false
		for _, r := range m.Records {
			if !r.Reason.Valid() {
				t.Fatalf("reason %q", r.Reason)
			}
			if r.Status != "" && reason.NormaliseStatus(r.Status) != r.Status {
				t.Fatalf("status %q", r.Status)
			}
			if r.Hard && !r.Reason.IsHard(r.Permanent) {
				t.Fatalf("hard %s", r.Reason)
			}
			bounce = bounce || r.Reason.IsBounce()
		}
		if m.Kind == dsn.KindDSN && bounce != m.IsBounce {
			t.Fatalf("IsBounce %v with records %+v", m.IsBounce, m.Records)
		}
	})
}
