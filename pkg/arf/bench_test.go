package arf_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mailwave/mailwave/pkg/arf"
)

// BenchmarkParse parses every sample report in turn and reports msgs/s;
// run it with -cpu 1 for the one-core figure.
func BenchmarkParse(b *testing.B) {
	var msgs [][]byte
	for _, dir := range []string{"corpus", "variants"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.eml"))
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, raw)
		}
	}
	var size int64
	for _, m := range msgs {
		size += int64(len(m))
	}
	b.SetBytes(size / int64(len(msgs)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := arf.Parse(msgs[n%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}
