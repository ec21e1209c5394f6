package planner

import (
	"bufio"
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
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var rec ndjsonRecipient
		if err := json.Unmarshal([]byte(text), &rec); err != nil {
			return fmt.Errorf("%w: line %d: %w", errAudience, line, err)
		}
		if err := each(&mailwavev1.Recipient{Address: rec.Address, Vars: rec.Vars, ExternalId: rec.ExternalID}); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: line %d: %w", errAudience, line+1, err)
	}
	return nil
}

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
