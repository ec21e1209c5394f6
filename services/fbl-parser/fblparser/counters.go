package fblparser

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
)

// Redis keys written by the fbl-parser (the reputation monitor reads the
// counters):
//
//	mw:fbl:seen:<fingerprint>      string, the inbound id that first carried
//	                               the report; expires after DedupTTL (30 d)
//	mw:fbl:counted:<fingerprint>   string "1" once the report was counted;
//	                               expires after DedupTTL
//	mw:fbl:done:<fingerprint>      string, the inbound id, once every effect
//	                               of the report is done; expires after
//	                               DedupTTL
//	mw:complaints:<dim>:<value>:<hour>
//	                               integer, trusted complaints in that UTC
//	                               hour (hour = YYYYMMDDHH); expires after
//	                               CounterTTL (8 d)
//
// where <dim> is one of source_ip, sending_domain, provider, tenant,
// campaign, and <value> is the KeyToken of the source IP (127_0_0_3),
// sending domain, provider or site key, tenant, or "<tenant>.<campaign>"
// (each part a KeyToken) for a campaign. Dimensions the report could not
// be tied to are not counted; opt-out reports are not complaints and are
// not counted. A window's complaints are the sum of its hours, for
// example for the last 24 hours of source IP 127.0.0.3:
//
//	for h in last 24 hours: GET mw:complaints:source_ip:127_0_0_3:<h>

// SeenKey is the de-duplication key of a report fingerprint.
func SeenKey(fingerprint string) string { return "mw:fbl:seen:" + fingerprint }

// DoneKey marks a report fingerprint whose effects are all done.
func DoneKey(fingerprint string) string { return "mw:fbl:done:" + fingerprint }

// CountedKey marks a report fingerprint as counted.
func CountedKey(fingerprint string) string { return "mw:fbl:counted:" + fingerprint }

// Counter dimensions.
const (
	DimSourceIP      = "source_ip"
	DimSendingDomain = "sending_domain"
	DimProvider      = "provider"
	DimTenant        = "tenant"
	DimCampaign      = "campaign"
)

// CounterKey is the key of the complaint counter of dim=value in the UTC
// hour of t.
func CounterKey(dim, value string, t time.Time) string {
	return "mw:complaints:" + dim + ":" + value + ":" + t.UTC().Format("2006010215")
}

// CounterValues returns the counter values of a correlation, by dimension.
func CounterValues(c *mailwavev1.Correlation) map[string]string {
	out := map[string]string{}
	add := func(dim, v string) {
		if v != "" {
			out[dim] = mailwavev1.KeyToken(v)
		}
	}
	add(DimSourceIP, c.GetSourceIp())
	add(DimSendingDomain, c.GetSendingDomain())
	add(DimProvider, c.GetProvider())
	add(DimTenant, c.GetTenant())
	if c.GetTenant() != "" && c.GetCampaignId() != "" {
		out[DimCampaign] = mailwavev1.KeyToken(c.GetTenant()) + "." + mailwavev1.KeyToken(c.GetCampaignId())
	}
	return out
}

// countScript increments every counter once per fingerprint: KEYS[1] is
// the counted marker, the other keys the counters; ARGV[1] the marker's
// TTL, ARGV[2] the counters' TTL, in seconds.
var countScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 1
`)

func (p *Processor) count(ctx context.Context, fp string, c *mailwavev1.Correlation) error {
	dedup, ttl := p.DedupTTL, p.CounterTTL
	if dedup <= 0 {
		dedup = 30 * 24 * time.Hour
	}
	if ttl <= 0 {
		ttl = 8 * 24 * time.Hour
	}
	now := p.now()
	keys := []string{CountedKey(fp)}
	for dim, v := range CounterValues(c) {
		keys = append(keys, CounterKey(dim, v, now))
	}
	if err := countScript.Run(ctx, p.Redis, keys, int(dedup.Seconds()), int(ttl.Seconds())).Err(); err != nil {
		return fmt.Errorf("fblparser: count: %w", err)
	}
	return nil
}
