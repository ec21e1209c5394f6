package planner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// errAudience marks an audience that cannot be read as stored; the request
// is dropped with the reason.
var errAudience = errors.New("planner: audience")

// readAudience yields the recipients of a stored audience, one at a time,
// so a campaign of millions is never held in memory. The object's chunks
// are fetched one by one as the reading goes (direct gets on the object
// store's stream), so a slow pass never makes a pushed read time out; the
// object's SHA-256 digest is checked at the end. Errors of the store are
// temporary; errors of the format wrap errAudience.
func readAudience(ctx context.Context, js jetstream.JetStream, ref *mailwavev1.AudienceRef, each func(*mailwavev1.Recipient) error) error {
	bucket := ref.GetBucket()
	if bucket == "" {
		bucket = mailwavev1.ObjectStoreAudiences
	}
	r, err := openObject(ctx, js, bucket, ref.GetObject(), 1)
	if err != nil {
		return err
	}
	switch ref.GetFormat() {
	case mailwavev1.AudienceFormat_AUDIENCE_FORMAT_CSV:
		return readCSV(r, each)
	case mailwavev1.AudienceFormat_AUDIENCE_FORMAT_NDJSON, mailwavev1.AudienceFormat_AUDIENCE_FORMAT_UNSPECIFIED:
		return readNDJSON(r, each)
	default:
		return fmt.Errorf("%w: unknown format %v", errAudience, ref.GetFormat())
	}
}

// openObject returns a reader of an object, following a link once.
func openObject(ctx context.Context, js jetstream.JetStream, bucket, name string, links int) (io.Reader, error) {
	store, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("%w: bucket %q: %w", errAudience, bucket, err)
		}
		return nil, fmt.Errorf("planner: audience bucket %s: %w", bucket, err)
	}
	info, err := store.GetInfo(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("%w: object %q: %w", errAudience, name, err)
		}
		return nil, fmt.Errorf("planner: audience %s: %w", name, err)
	}
	if o := info.Opts; o != nil && o.Link != nil {
		if links == 0 || o.Link.Name == "" {
			return nil, fmt.Errorf("%w: object %q is a link to a link or a bucket", errAudience, name)
		}
		lb := o.Link.Bucket
		if lb == "" {
			lb = bucket
		}
		return openObject(ctx, js, lb, o.Link.Name, links-1)
	}
	want, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: object %q: digest %q: %w", errAudience, name, info.Digest, err)
	}
	// The object store's layout (NATS ADR-20): chunks on
	// $O.<bucket>.C.<nuid> in the stream OBJ_<bucket>.
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("planner: audience stream: %w", err)
	}
	return &chunkReader{ctx: ctx, stream: stream, subject: "$O." + bucket + ".C." + info.NUID, left: info.Chunks,
		seq: 1, digest: sha256.New(), want: want, name: name}, nil
}

// chunkReader reads an object's chunks in order, one direct get each.
type chunkReader struct {
	ctx     context.Context
	stream  jetstream.Stream
	subject string
	left    uint32
	seq     uint64
	buf     []byte
	digest  hash.Hash
	want    []byte
	name    string
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.left == 0 {
			if !bytes.Equal(r.digest.Sum(nil), r.want) {
				return 0, fmt.Errorf("%w: object %q does not match its digest", errAudience, r.name)
			}
			return 0, io.EOF
		}
		m, err := r.stream.GetMsg(r.ctx, r.seq, jetstream.WithGetMsgSubject(r.subject))
		if err != nil {
			return 0, fmt.Errorf("planner: audience %s chunk: %w", r.name, err)
		}
		r.seq = m.Sequence + 1
		r.left--
		r.digest.Write(m.Data)
		r.buf = m.Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
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
		return csvErr("header row", err)
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
			return csvErr("row", err)
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

// csvErr tells a malformed file (errAudience) from a store that failed
// mid-read (temporary).
func csvErr(what string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) || errors.Is(err, errAudience) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: %w", errAudience, what, err)
	}
	return fmt.Errorf("planner: read audience: %w", err)
}
