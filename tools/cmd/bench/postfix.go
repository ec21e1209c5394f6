package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The Postfix comparison runs Debian's postfix 3.x as a private instance
// (its own configuration and queue in a temporary folder, the system's
// left alone) that relays into the benchmark's sink, and Postfix's own
// smtp-source against smtp-sink for the ceiling of SMTP on loopback. It
// needs root (Postfix starts as root and drops to its mail_owner).

// Postfix listens and smtp-sink listens on loopback addresses of their own.
var (
	postfixListen = "127.0.0.61"
	ceilingListen = "127.0.0.62"
)

// postfixTools finds the programs, or says why the comparison is skipped.
func postfixTools() (map[string]string, string) {
	tools := map[string]string{}
	for _, name := range []string{"postfix", "postconf", "smtp-source", "smtp-sink"} {
		p, err := exec.LookPath(name)
		if err != nil {
			if p, err = exec.LookPath(filepath.Join("/usr/sbin", name)); err != nil {
				return nil, name + " not found (apt-get install postfix)"
			}
		}
		tools[name] = p
	}
	if os.Geteuid() != 0 {
		return nil, "postfix needs root to start"
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return nil, "no postfix user"
	}
	return tools, ""
}

// freePort returns a port nothing listens on at ip, for programs that
// want a port number rather than a listener.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// messageFile writes one benchmark message in the form smtp-source -F
// sends: header and body, lines ending in LF (it adds the CR).
func messageFile(dir string, msg []byte) (string, error) {
	p := filepath.Join(dir, "message.txt")
	return p, os.WriteFile(p, bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")), 0o644)
}

// postfixVersion is the mail_version postconf reports.
func postfixVersion(tools map[string]string) string {
	out, err := exec.Command(tools["postconf"], "-d", "-h", "mail_version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// measurePostfixRelay starts a private Postfix whose relayhost is the sink,
// injects n copies of msg with smtp-source over reused connections, and
// returns messages per second from the first injection to the last
// delivery into the sink.
func measurePostfixRelay(ctx context.Context, tools map[string]string, sk *sink, sinkAddr string, msg []byte, n int) (float64, error) {
	dir, err := os.MkdirTemp("", "mailwave-bench-postfix-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	// The postfix user walks into the queue; MkdirTemp makes 0700.
	if err := os.Chmod(dir, 0o755); err != nil {
		return 0, err
	}
	etc, spool, data := filepath.Join(dir, "etc"), filepath.Join(dir, "spool"), filepath.Join(dir, "data")
	for _, d := range []string{etc, spool, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return 0, err
		}
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		return 0, err
	}
	uid, _ := strconv.Atoi(pu.Uid)
	gid, _ := strconv.Atoi(pu.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		return 0, err
	}
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return 0, fmt.Errorf("postfix: %w", err)
	}
	port, err := freePort(postfixListen)
	if err != nil {
		return 0, err
	}
	// smtpd on its own address and port; nothing chrooted (the private
	// queue has no copy of /etc).
	var mcf strings.Builder
	for _, line := range strings.Split(string(master), "\n") {
		if strings.HasPrefix(line, "smtp ") || strings.HasPrefix(line, "smtp\t") {
			if f := strings.Fields(line); len(f) > 1 && f[1] == "inet" {
				line = fmt.Sprintf("%s:%d inet  n       -       n       -       -       smtpd", postfixListen, port)
			}
		}
		mcf.WriteString(line)
		mcf.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(mcf.String()), 0o644); err != nil {
		return 0, err
	}
	main := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + spool,
		"data_directory = " + data,
		"meta_directory = /etc/postfix",
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = relay.bench",
		"mydestination =",
		"inet_interfaces = all",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"relayhost = [" + strings.Replace(sinkAddr, ":", "]:", 1),
		// No DNS on a benchmark machine: no reverse lookups of clients, no
		// MX lookups for the relayhost.
		"smtpd_peername_lookup = no",
		"smtp_dns_support_level = disabled",
		"smtp_tls_security_level = none",
		"maillog_file = " + filepath.Join(dir, "maillog"),
		"maillog_file_prefixes = " + dir,
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(main), 0o644); err != nil {
		return 0, err
	}
	pf := func(args ...string) error {
		out, err := exec.CommandContext(ctx, tools["postfix"], append([]string{"-c", etc}, args...)...).CombinedOutput()
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			return fmt.Errorf("postfix %s: %v: %s %s", args[0], err, out, tail(log, 800))
		}
		return nil
	}
	if err := pf("start"); err != nil {
		return 0, err
	}
	defer func() { _ = pf("stop") }()
	if err := waitListening(ctx, net.JoinHostPort(postfixListen, strconv.Itoa(port))); err != nil {
		return 0, fmt.Errorf("postfix smtpd: %w", err)
	}

	var got atomic.Int64
	done := make(chan struct{})
	var once atomic.Bool
	sk.phase(func(int, time.Time) {
		if got.Add(1) == int64(n) && once.CompareAndSwap(false, true) {
			close(done)
		}
	})
	file, err := messageFile(dir, msg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	src := exec.CommandContext(ctx, tools["smtp-source"], "-d", "-s", "20", "-m", strconv.Itoa(n), "-F", file,
		"-M", "bench.client", "-f", "bench@mailwave.bench", "-t", "user@d0.bench",
		net.JoinHostPort(postfixListen, strconv.Itoa(port)))
	if out, err := src.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("smtp-source into postfix: %v: %s", err, out)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, fmt.Errorf("postfix relayed %d of %d: %w", got.Load(), n, ctx.Err())
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// measureCeiling runs smtp-source into smtp-sink: the rate of SMTP itself
// on this machine, over 20 reused connections.
func measureCeiling(ctx context.Context, tools map[string]string, size, n int) (float64, error) {
	port, err := freePort(ceilingListen)
	if err != nil {
		return 0, err
	}
	addr := net.JoinHostPort(ceilingListen, strconv.Itoa(port))
	sinkCmd := exec.CommandContext(ctx, tools["smtp-sink"], "-u", "postfix", "-c", addr, "1000")
	var sinkOut bytes.Buffer
	sinkCmd.Stdout, sinkCmd.Stderr = &sinkOut, &sinkOut
	if err := sinkCmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = sinkCmd.Process.Kill()
		_ = sinkCmd.Wait()
	}()
	if err := waitListening(ctx, addr); err != nil {
		return 0, fmt.Errorf("smtp-sink: %w: %s", err, sinkOut.String())
	}
	start := time.Now()
	src := exec.CommandContext(ctx, tools["smtp-source"], "-d", "-s", "20", "-l", strconv.Itoa(size), "-m", strconv.Itoa(n),
		"-M", "bench.client", "-f", "bench@mailwave.bench", "-t", "user@d0.bench", addr)
	if out, err := src.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("smtp-source into smtp-sink: %v: %s", err, out)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func waitListening(ctx context.Context, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
