package queuebench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of /proc/<pid>/stat's CPU times:
// 100 on every architecture Go runs Linux on.
const clockTick = 10 * time.Millisecond

// serverCPU is the CPU time a PostgreSQL server on this machine has used:
// its postmaster's, that of the postmaster's children it has reaped (a
// backend that ended), and that of its live children (backends,
// autovacuum, the WAL writer). Read twice, the difference is what the
// server spent in between, whichever database it worked for. Linux only.
func serverCPU(postmaster int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", postmaster))
	if err != nil {
		return 0, fmt.Errorf("read the server's CPU time: %w", err)
	}
	f, err := statFields(stat)
	if err != nil {
		return 0, fmt.Errorf("read the server's CPU time: %w", err)
	}
	total, err := ticks(f[11], f[12], f[13], f[14])
	if err != nil {
		return 0, fmt.Errorf("read the server's CPU time: %w", err)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("read the server's CPU time: %w", err)
	}
	parent := strconv.Itoa(postmaster)
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue // ended meanwhile: its time is the parent's now
		}
		f, err := statFields(stat)
		if err != nil || f[1] != parent {
			continue
		}
		cpu, err := ticks(f[11], f[12])
		if err != nil {
			return 0, fmt.Errorf("read the CPU time of server process %s: %w", p.Name(), err)
		}
		total += cpu
	}
	return total, nil
}

// statFields splits /proc/<pid>/stat after the command name (which may
// hold spaces and parentheses): f[0] is the state, f[1] the parent's
// pid, f[11] and f[12] utime and stime, f[13] and f[14] cutime and cstime.
func statFields(stat []byte) ([]string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("unreadable /proc stat %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("unreadable /proc stat %q", stat)
	}
	return f, nil
}

func ticks(fields ...string) (time.Duration, error) {
	var n int64
	for _, s := range fields {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		n += v
	}
	return time.Duration(n) * clockTick, nil
}

// selfCPU is this process's CPU time (every goroutine: both queues'
// clients, the harness, the garbage collector), to the microsecond.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("read this process's CPU time: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
