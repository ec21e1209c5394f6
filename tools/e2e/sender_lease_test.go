package e2e_test

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailwave/mailwave/pkg/ratelimit"
	"github.com/mailwave/mailwave/pkg/testenv"
	mailwavev1 "github.com/mailwave/mailwave/proto/mailwave/v1"
	"github.com/mailwave/mailwave/tools/stack"
)

// A live session keeps its connection slot however long it idles (the
// lease keeper renews it); a replica killed while holding it frees the
// slot one lease TTL later, and another replica then gets it.
func TestCrashedReplicaFreesItsConnectionSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs sender processes")
	}
	bin := filepath.Join(t.TempDir(), "sender")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/mailwave/mailwave/services/sender").CombinedOutput(); err != nil {
		t.Fatalf("build sender: %v\n%s", err, out)
	}
	e := startWith(t, nil, func(o *stack.Options) { o.NoSender = true })
	ctx := testenv.Context(t)
	const ttl = 3 * time.Second
	policy := shapingFile(t, "providers:\n  google: {max_connections: 1}\n")
	conf := []string{"MW_SHAPING_FILE=" + policy, "MW_CONN_LEASE_TTL=3s", "MW_SMTP_IDLE_TIMEOUT=5m"}
	victim := startSenderProcess(t, bin, e, "sender-a", conf...)

	opts, err := redis.ParseURL(e.st.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	slots := ratelimit.New(rdb, ratelimit.Options{})
	const key = "conn:127.0.0.3|google"
	held := func() int {
		n, err := slots.Held(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "lease-1", Tenant: "acme", Brand: "shop",
		Recipients: recipients("kim@gmail.com"), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	if ev := e.terminal(t, "acme", "lease-1", 1)["kim@gmail.com"]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("%v: %s", ev.GetKind(), ev.GetResponse())
	}
	// The idle session holds its slot well past the lease TTL.
	for start := time.Now(); time.Since(start) < 2*ttl; {
		if n := held(); n != 1 {
			t.Fatalf("%s after delivery the idle session holds %d slots, want 1", time.Since(start), n)
		}
		time.Sleep(ttl / 10) // sampling while time passes, not waiting for a condition
	}

	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	killed := time.Now()
	testenv.Eventually(t, 4*ttl, func() bool { return held() == 0 }, "the killed replica's slot was not freed")
	if freed := time.Since(killed); freed > ttl+2*time.Second {
		t.Errorf("slot freed %s after the kill, want within the %s lease TTL", freed, ttl)
	}
	// Another replica gets the slot.
	startSenderProcess(t, bin, e, "sender-b", conf...)
	if _, err := e.cl.Send(ctx, &mailwavev1.SendRequest{IdempotencyKey: "lease-2", Tenant: "acme", Brand: "shop",
		Recipients: recipients("lee@gmail.com"), Content: template("Shop <news@mailwave.test>")}); err != nil {
		t.Fatal(err)
	}
	if ev := e.terminal(t, "acme", "lease-2", 1)["lee@gmail.com"]; ev.GetKind() != mailwavev1.EventKind_EVENT_KIND_DELIVERED {
		t.Fatalf("after the kill: %v: %s", ev.GetKind(), ev.GetResponse())
	}
}
