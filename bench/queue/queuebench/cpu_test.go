package queuebench

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestServerCPUCountsEveryProcessOfTheServer: with this test process
// standing in for the postmaster, the CPU time of a child counts while it
// runs and still counts once it has ended and been reaped, as a backend's
// does.
func TestServerCPUCountsEveryProcessOfTheServer(t *testing.T) {
	self := os.Getpid()
	before, err := serverCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	burn := exec.Command("sh", "-c", "while :; do :; done")
	if err := burn.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = burn.Process.Kill() }()
	var child time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for child < 300*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the child used %v of CPU in 30 s", child)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter, not synchronising
		if child, err = procTicks(burn.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	running, err := serverCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	if running-before < child {
		t.Errorf("with a live child that used %v, the server's CPU grew by %v", child, running-before)
	}
	_ = burn.Process.Kill()
	_ = burn.Wait()
	used := burn.ProcessState.UserTime() + burn.ProcessState.SystemTime()
	after, err := serverCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < used-2*clockTick {
		t.Errorf("after a child that used %v ended, the server's CPU grew by %v", used, after-before)
	}
	if _, err := serverCPU(0); err == nil {
		t.Error("no error for a server that is not there")
	}
}

// procTicks is a process's own CPU time from /proc.
func procTicks(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f, err := statFields(stat)
	if err != nil {
		return 0, err
	}
	return ticks(f[11], f[12])
}
