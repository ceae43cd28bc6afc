package watcher_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/agent/engine"
	"github.com/galaxy/rtmanager/agent/watcher"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestProbeLoad measures the watcher under health probes: RTM_PROBE_LOAD=N
// engines probing every second (flapping every 5 s, so health changes
// too) for RTM_PROBE_LOAD_SECONDS (default 30). It reports what the
// daemon emits for our containers (an unfiltered subscription beside the
// watcher's), what reaches the watcher through its server-side filter,
// whether it fell back to relists, and this process's CPU time. A
// measurement, not a pass/fail test: it only fails if the watcher lost
// events (overflow) or errored. Run:
//
//	RTM_PROBE_LOAD=100 go test -run TestProbeLoad -v ./agent/watcher/
func TestProbeLoad(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RTM_PROBE_LOAD"))
	if n <= 0 {
		t.Skip("set RTM_PROBE_LOAD=N to measure N probing engines")
	}
	secs, _ := strconv.Atoi(os.Getenv("RTM_PROBE_LOAD_SECONDS"))
	if secs <= 0 {
		secs = 30
	}
	e := newEnv(t)
	games := make([]game, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			g := e.createProbing(fmt.Sprintf("probe%03d", i), "flap:5s", time.Second)
			e.record(g)
			if err := e.eng.StartContainer(e.ctx, g.c.ID); err != nil {
				t.Error(err)
			}
			games[i] = g
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, g := range games {
			_ = e.eng.RemoveContainer(context.Background(), g.c.ID)
		}
	})
	e.startWatcher(watcher.Config{})

	// Everything the daemon emits for this host's containers.
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var exec, health, other atomic.Int64
	res := e.raw.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "container").Add("label", engine.LabelHost+"="+e.hostID)})
	go func() {
		for {
			select {
			case m := <-res.Messages:
				switch a := string(m.Action); {
				case strings.HasPrefix(a, "exec_"):
					exec.Add(1)
				case strings.HasPrefix(a, "health_status"):
					health.Add(1)
				default:
					other.Add(1)
				}
			case <-res.Err:
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	wait.For(t, time.Minute, "first probes", func() bool { return exec.Load() > int64(n) })
	s0, cpu0, t0 := e.w.Stats(), cpuTime(), time.Now()
	exec0, health0 := exec.Load(), health.Load()
	deadline := time.After(time.Duration(secs) * time.Second)
	<-deadline
	s1, cpu1, el := e.w.Stats(), cpuTime(), time.Since(t0)
	execN, healthN := exec.Load()-exec0, health.Load()-health0
	t.Logf("%d engines probing every 1s, %s measured", n, el.Round(time.Millisecond))
	t.Logf("daemon: %.0f exec_* events/s (%.1f per probe), %.1f health_status events/s", float64(execN)/el.Seconds(), float64(execN)/float64(n)/el.Seconds(), float64(healthN)/el.Seconds())
	t.Logf("watcher: received %d (%.1f/s), applied %d, duplicates %d, relists %d, overflows %d, reconnects %d, errors %d",
		s1.Received-s0.Received, float64(s1.Received-s0.Received)/el.Seconds(), s1.Applied-s0.Applied, s1.Duplicates-s0.Duplicates,
		s1.Relists-s0.Relists, s1.Overflows-s0.Overflows, s1.Reconnects-s0.Reconnects, s1.Errors-s0.Errors)
	t.Logf("agent (this test process): CPU %s over %s = %.1f%% of one core", (cpu1 - cpu0).Round(time.Millisecond), el.Round(time.Millisecond), 100*(cpu1-cpu0).Seconds()/el.Seconds())
	if s1.Overflows != s0.Overflows || s1.Errors != s0.Errors {
		t.Errorf("the watcher lost events or failed under probe load: %+v", s1)
	}
}
