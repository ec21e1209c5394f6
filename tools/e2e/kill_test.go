package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mailwave/mailwave/pkg/ispsim"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/tools/stack"
)

// startSenderProcess runs the sender binary against the stack, as a pod
// would, so the test can kill it for real.
func startSenderProcess(t *testing.T, bin string, e *env, name string, extraEnv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"NATS_URL="+e.st.NATSURL, "REDIS_URL="+e.st.RedisURL, "MW_HTTP_ADDR=127.0.0.1:0",
		"MW_DNS_SERVER="+e.sim.DNSAddr(), fmt.Sprintf("MW_SMTP_PORT=%d", e.sim.SMTPPort()),
		"MW_ACK_WAIT=3s", "MW_SENDER_WORKERS=8", "MW_RETRY_MAX=1s",
		"MW_HELO_NAME=mta2.mailwave.test", "MW_LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, extraEnv...)
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return cmd
}

func TestKillASenderMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs sender processes")
	}
	bin := filepath.Join(t.TempDir(), "sender")
	build := exec.Command("go", "build", "-o", bin, "github.com/mailwave/mailwave/services/sender")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build sender: %v\n%s", err, out)
	}
	e := startWith(t, nil, func(o *stack.Options) {
		o.NoSender = true
		o.AckWait = 3 * time.Second
	})
	ctx := testenv.Context(t)
	// A slow provider keeps messages in flight long enough to kill a
	// replica in the middle of the batch.
	e.sim.Provider("google").SetSlow(ispsim.SlowConfig{Command: 15 * time.Millisecond})
	// The batch is about crashes, not shaping: Google's shipped limits
	// would spread it over minutes (and the killed replica's connection
	// leases hold slots until they expire).
	shapingFile := filepath.Join(t.TempDir(), "shaping.yaml")
	if err := os.WriteFile(shapingFile, []byte("providers:\n  google: {max_connections: 50, messages_per_second: 1000, messages_per_minute: 60000, messages_per_hour: 1000000, connections_per_minute: 1000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	victim := startSenderProcess(t, bin, e, "sender-a", "MW_SHAPING_FILE="+shapingFile)
	startSenderProcess(t, bin, e, "sender-b", "MW_SHAPING_FILE="+shapingFile)

	const n = 200
	rcpts := make([]*mailwavev1.Recipient, n)
	for i := range rcpts {
		rcpts[i] = &mailwavev1.Recipient{Address: fmt.Sprintf("user%d@gmail.com", i)}
	}
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{
		IdempotencyKey: "kill-1", Tenant: "acme", Brand: "shop", Recipients: rcpts,
		Content: &mailwavev1.SendRequest_Template{Template: &mailwavev1.Template{
			From: "Shop <news@mailwave.test>", Subject: "Hi", Text: "hello"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Ledger().Wait(ctx, func(s *ispsim.Snapshot) bool { return len(s.Messages) >= n/4 }); err != nil {
		t.Fatal(err)
	}
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	atKill := len(e.sim.Ledger().Snapshot().Messages)
	if atKill >= n {
		t.Fatalf("the batch was over (%d of %d) before the kill; slow the provider more", atKill, n)
	}

	// Every recipient reaches exactly one terminal state (terminal fails
	// on a second one).
	evs := e.terminal(t, "acme", "kill-1", n)
	for rcpt, ev := range evs {
		if ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
			t.Errorf("%s ended %v: %s", rcpt, ev.GetKind(), ev.GetResponse())
		}
	}
	// Duplicates at the simulator: at most the messages in flight at the
	// kill, which is at most the killed replica's workers.
	snap := e.sim.Ledger().Snapshot()
	dups := 0
	for _, copies := range snap.Duplicates() {
		dups += copies - 1
	}
	t.Logf("%d messages in the ledger at the kill, %d duplicates after", atKill, dups)
	if dups > 8 {
		t.Fatalf("%d duplicates, more than the 8 messages the killed replica could have had in flight", dups)
	}
	if got := len(snap.Messages) - dups; got != n {
		t.Fatalf("%d distinct messages delivered, want %d", got, n)
	}
}
