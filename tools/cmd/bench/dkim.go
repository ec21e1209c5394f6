package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/dkim"
)

// writeBenchKey makes a fresh key for mailwave.bench (RSA-2048 or
// Ed25519) in dir, as a Secret volume would hold it.
func writeBenchKey(dir, algo string) (*dkim.Key, error) {
	var priv any
	var err error
	switch algo {
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "bench._domainkey.mailwave.bench.pem"), b, 0o600); err != nil {
		return nil, err
	}
	return dkim.ParseKey("mailwave.bench", "bench", b)
}

// verifyDKIM checks a delivered message's signatures against the key's
// published record: the benchmark measured real signing.
func verifyDKIM(msg []byte, key *dkim.Key) bool {
	if len(msg) == 0 {
		return false
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if strings.TrimSuffix(name, ".") == key.RecordName() {
				return []string{key.Record()}, nil
			}
			return nil, fmt.Errorf("no TXT at %s", name)
		},
	})
	if err != nil || len(vs) == 0 {
		return false
	}
	for _, v := range vs {
		if v.Err != nil {
			return false
		}
	}
	return true
}

// redisStats reads redis-server's CPU time and resident memory with INFO,
// so the figures cover the whole pipeline.
type redisStats struct{ rdb *redis.Client }

func newRedisStats(url string) *redisStats {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return &redisStats{}
	}
	return &redisStats{rdb: redis.NewClient(opts)}
}

func (r *redisStats) close() {
	if r.rdb != nil {
		_ = r.rdb.Close()
	}
}

func (r *redisStats) info(section string) map[string]string {
	out := map[string]string{}
	if r.rdb == nil {
		return out
	}
	s, err := r.rdb.Info(context.Background(), section).Result()
	if err != nil {
		return out
	}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out
}

// cpu is the server's user and system CPU seconds (0 when unknown: the
// in-process store's CPU is this process's).
func (r *redisStats) cpu() float64 {
	in := r.info("cpu")
	u, _ := strconv.ParseFloat(in["used_cpu_user"], 64)
	s, _ := strconv.ParseFloat(in["used_cpu_sys"], 64)
	return u + s
}

// rssMB is the server's resident set now.
func (r *redisStats) rssMB() float64 {
	b, _ := strconv.ParseFloat(r.info("memory")["used_memory_rss"], 64)
	return b / (1 << 20)
}
