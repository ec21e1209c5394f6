package reputation_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/mailwave/mailwave/services/reputation-monitor/reputation"
)

// The README's configuration table of the monitor names every variable of
// Config (and its flag), so a new setting cannot ship undocumented.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The monitor's table: the rows after its heading line.
	_, after, ok := strings.Cut(string(b), "\nreputation-monitor (see")
	if !ok {
		t.Fatal("README.md has no reputation-monitor configuration table")
	}
	var rows []string
	for _, line := range strings.Split(after, "\n")[1:] {
		if line == "" && len(rows) > 0 {
			break
		}
		if strings.HasPrefix(line, "|") {
			rows = append(rows, line)
		}
	}
	readme := strings.Join(rows, "\n")
	typ := reflect.TypeFor[reputation.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		env := f.Tag.Get("env")
		if f.Anonymous || env == "" {
			continue
		}
		if !strings.Contains(readme, "| `"+env+"` |") {
			t.Errorf("README.md has no row for %s (Config.%s)", env, f.Name)
		}
		if flag := f.Tag.Get("flag"); flag != "" && !strings.Contains(readme, "| `"+env+"` | `-"+flag+"` |") {
			t.Errorf("README.md does not give %s its flag -%s", env, flag)
		}
	}
}
