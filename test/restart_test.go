package test

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// TestKillRestartNoLoss: the agent killed with SIGKILL and started again
// while containers ping each other at 10 packets/s loses no packet: the
// kernel state it left is kept, and the new agent adopts it.
func TestKillRestartNoLoss(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
		t.Fatal(err)
	}

	const count = 60 // 6 s at 10 packets/s
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c1.NS,
			"ping", "-n", "-q", "-i", "0.1", "-c", strconv.Itoa(count), "-W", "1", c2.IP.String()).CombinedOutput()
		done <- result{out, err}
	}()

	for _, h := range []*lab.Host{h1, h2} {
		old := c.agent(h)
		if err := old.Kill(); err != nil {
			t.Fatalf("kill agent on %s: %v", h.Name, err)
		}
		<-old.Done()
		c.startAgent(h)
	}
	c.awaitReady()

	r := <-done
	if r.err != nil {
		t.Fatalf("ping: %v\n%s", r.err, r.out)
	}
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindSubmatch(r.out)
	if m == nil {
		t.Fatalf("cannot read ping's summary:\n%s", r.out)
	}
	sent, _ := strconv.Atoi(string(m[1]))
	got, _ := strconv.Atoi(string(m[2]))
	if sent != count || got != sent {
		t.Fatalf("%d packets sent, %d received across the restarts; want %d of %d", sent, got, count, count)
	}
}
