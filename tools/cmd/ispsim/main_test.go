package main_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// build compiles the command once per test into a temporary folder.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ispsim")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestCheckProfile(t *testing.T) {
	bin := build(t)
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		want    string
	}{
		{"default profile", []string{"-check"}, false, "profile ok: 5 providers"},
		{"file", []string{"-check", "-profile", "testdata/tiny.yaml"}, false, "profile ok: 1 providers"},
		{"unknown field", []string{"-check", "-profile", "testdata/typo.yaml"}, true, "max_conections"},
		{"missing file", []string{"-check", "-profile", "testdata/none.yaml"}, true, "none.yaml"},
		{"print default", []string{"-print-default-profile"}, false, "# The default ISP simulator profile."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(bin, tt.args...).CombinedOutput()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}

func TestServeAndStopOnSIGTERM(t *testing.T) {
	bin := build(t)
	cmd := exec.Command(bin, "-profile", "testdata/tiny.yaml",
		"-dns", "127.0.0.1:0", "-smtp-port", "0", "-imap", "127.0.0.1:0", "-http", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	where := map[string]string{}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) == 1 && f[0] == "ready" {
			break
		}
		if len(f) >= 2 {
			where[f[0]] = f[1]
		}
	}
	if where["smtp"] != "127.0.0.20:"+port(where["smtp"]) || where["dns"] == "" || where["http"] == "" {
		t.Fatalf("listening on %v", where)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	// A real SMTP session from a sending address.
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	nc, err := d.Dial("tcp", where["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(nc)
	if err := c.SendMail("news@mailwave.test", []string{"a@tiny.example"}, strings.NewReader("Subject: hi\r\nMessage-ID: <bin-1@x>\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()

	resp, err := http.Get("http://" + where["http"] + "/ledger")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"message_id": "bin-1@x"`) {
		t.Errorf("ledger lacks the message: %.300s", body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("still running 10s after SIGTERM")
	}
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}
