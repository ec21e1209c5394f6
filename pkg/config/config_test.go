package config_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/config"
)

type inner struct {
	Password string `env:"T_PASSWORD" secret:"true"`
}

type cfg struct {
	inner
	URL     string        `env:"T_URL" flag:"url" default:"nats://127.0.0.1:4222"`
	Port    int           `env:"T_PORT" flag:"port" default:"25"`
	Verbose bool          `env:"T_VERBOSE" flag:"verbose"`
	Wait    time.Duration `env:"T_WAIT" default:"5s"`
	Ratio   float64       `env:"T_RATIO" default:"0.5"`
	IPs     []string      `env:"T_IPS"`
	Plain   string
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func load(args []string, e map[string]string) (cfg, error) {
	var c cfg
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	err := config.Load(fs, args, env(e), &c)
	return c, err
}

func TestPrecedence(t *testing.T) {
	c, err := load([]string{"-port", "2525", "-verbose"}, map[string]string{
		"T_PORT": "587", "T_URL": "nats://a:4222", "T_IPS": "127.0.0.2, 127.0.0.3,", "T_WAIT": "1m", "T_PASSWORD": "hunter2",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 2525 || c.URL != "nats://a:4222" || !c.Verbose || c.Wait != time.Minute || c.Ratio != 0.5 {
		t.Fatalf("got %+v", c)
	}
	if len(c.IPs) != 2 || c.IPs[1] != "127.0.0.3" {
		t.Fatalf("ips %q", c.IPs)
	}
	if c.Password != "hunter2" {
		t.Fatalf("nested field not loaded: %+v", c.inner)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad int env", nil, map[string]string{"T_PORT": "twenty-five"}, "T_PORT"},
		{"bad duration env", nil, map[string]string{"T_WAIT": "5"}, "T_WAIT"},
		{"bad bool env", nil, map[string]string{"T_VERBOSE": "maybe"}, "T_VERBOSE"},
		{"bad int flag", []string{"-port", "x"}, nil, "T_PORT"},
		{"unknown flag", []string{"-nope"}, nil, "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.args, tc.env)
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid naming %s", err, tc.want)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	c := cfg{URL: "redis://user:s3cret@host:6379/0", inner: inner{Password: "hunter2"}}
	r := config.Redacted(&c)
	if r["T_PASSWORD"] != "[redacted]" {
		t.Errorf("password shown: %v", r["T_PASSWORD"])
	}
	if s := r["T_URL"].(string); strings.Contains(s, "s3cret") || !strings.Contains(s, "user") {
		t.Errorf("url %q", s)
	}
	if _, ok := r["Plain"]; ok {
		t.Errorf("untagged field listed")
	}
	lines := config.Describe(&c)
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "T_IPS") {
		t.Errorf("describe: %q", lines)
	}
}
