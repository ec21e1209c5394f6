package planner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// errAudience marks an audience that cannot be read as stored; the request
// is dropped with the reason.
var errAudience = errors.New("planner: audience")

// audience yields the recipients of a stored audience, one at a time, so a
// campaign of millions is never held in memory. Errors of the store are
// temporary; errors of the format wrap errAudience.
func readAudience(ctx context.Context, js jetstream.JetStream, ref *mailwavev1.AudienceRef, each func(*mailwavev1.Recipient) error) error {
	bucket := ref.GetBucket()
	if bucket == "" {
		bucket = mailwavev1.ObjectStoreAudiences
	}
	store, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("%w: bucket %q: %w", errAudience, bucket, err)
		}
		return fmt.Errorf("planner: audience bucket %s: %w", bucket, err)
	}
	obj, err := store.Get(ctx, ref.GetObject())
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("%w: object %q: %w", errAudience, ref.GetObject(), err)
		}
		return fmt.Errorf("planner: audience %s: %w", ref.GetObject(), err)
	}
	defer obj.Close()
	switch ref.GetFormat() {
	case mailwavev1.AudienceFormat_AUDIENCE_FORMAT_CSV:
		return readCSV(obj, each)
	case mailwavev1.AudienceFormat_AUDIENCE_FORMAT_NDJSON, mailwavev1.AudienceFormat_AUDIENCE_FORMAT_UNSPECIFIED:
		return readNDJSON(obj, each)
	default:
		return fmt.Errorf("%w: unknown format %v", errAudience, ref.GetFormat())
	}
}

type ndjsonRecipient struct {
	Address    string            `json:"address"`
	Vars       map[string]string `json:"vars"`
	ExternalID string            `json:"external_id"`
}

func readNDJSON(r io.Reader, each func(*mailwavev1.Recipient) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	line := 0
	for {
		text, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it whole, to a bound.
			long := append([]byte(nil), text...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) < maxLine {
				text, err = br.ReadSlice('\n')
				long = append(long, text...)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("%w: line %d: longer than %d bytes", errAudience, line+1, maxLine)
			}
			text = long
		}
		if err != nil && !errors.Is(err, io.EOF) {
			// The store failed mid-object: temporary, the pass is
			// retried (what was planned is remembered).
			return fmt.Errorf("planner: read audience: %w", err)
		}
		if len(text) > 0 {
			line++
			if t := bytes.TrimSpace(text); len(t) > 0 {
				var rec ndjsonRecipient
				if jerr := json.Unmarshal(t, &rec); jerr != nil {
					return fmt.Errorf("%w: line %d: %w", errAudience, line, jerr)
				}
				if eerr := each(&mailwavev1.Recipient{Address: rec.Address, Vars: rec.Vars, ExternalId: rec.ExternalID}); eerr != nil {
					return eerr
				}
			}
		}
		if err != nil {
			return nil
		}
	}
}

// maxLine bounds one NDJSON line.
const maxLine = 1 << 20

func readCSV(r io.Reader, each func(*mailwavev1.Recipient) error) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return fmt.Errorf("%w: header row: %w", errAudience, err)
	}
	names := append([]string(nil), head...)
	addrCol, idCol := -1, -1
	for i, n := range names {
		switch strings.ToLower(strings.TrimSpace(n)) {
		case "address", "email":
			addrCol = i
		case "external_id":
			idCol = i
		}
	}
	if addrCol < 0 {
		return fmt.Errorf("%w: no address column in %v", errAudience, names)
	}
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errAudience, err)
		}
		rec := &mailwavev1.Recipient{Address: row[addrCol], Vars: make(map[string]string, len(row))}
		for i, v := range row {
			switch i {
			case addrCol:
			case idCol:
				rec.ExternalId = v
			default:
				rec.Vars[names[i]] = v
			}
		}
		if err := each(rec); err != nil {
			return err
		}
	}
}
