package loadsim_test

import (
	"context"
	"testing"
	"time"

	"github.com/galaxy/rtmanager/internal/loadsim"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestSmallFleet runs the simulation small: every job is picked up by its
// host's simulated agent, and the figures are filled in. The figures
// themselves belong to `make bench-fleet`.
func TestSmallFleet(t *testing.T) {
	t.Parallel()
	rep, err := loadsim.Run(context.Background(), loadsim.Options{
		DatabaseURL: pgtest.URL(t), Hosts: 5, Idle: 500 * time.Millisecond, Settle: 100 * time.Millisecond,
		Jobs: 100, Rate: 500, HostLeaseTTL: 3 * time.Second, PoolSize: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.Throughput <= 0 || rep.PickupP99 <= 0 || rep.PickupP99 < rep.PickupP50 || rep.IdleXactsPerSec < 0 {
		t.Fatalf("report: %+v", rep)
	}
}
