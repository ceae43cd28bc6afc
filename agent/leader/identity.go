package leader

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// NewAgentID names this agent process: host id, machine, pid and a random
// part, "host/machine/pid/rand". The machine part is the kernel's boot id
// and the process's pid namespace, so that an agent restarted on the same
// machine after a crash can tell that the lease's holder is its own dead
// predecessor (DeadOnThisMachine) and take over at once instead of after
// the lease's ttl.
func NewAgentID(hostID string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return AgentIDPrefix(hostID, os.Getpid()) + hex.EncodeToString(b[:])
}

// AgentIDPrefix is the part of the agent id of process pid of this machine
// that comes before its random part.
func AgentIDPrefix(hostID string, pid int) string {
	return fmt.Sprintf("%s/%s/%d/", hostID, thisMachine(), pid)
}

// DeadOnThisMachine reports whether agentID names a process of this
// machine and pid namespace that no longer exists. It answers false
// whenever it cannot be sure: another machine, another boot, another pid
// namespace (a container), an id of another form, a pid that exists (even
// if reused by another program).
func DeadOnThisMachine(agentID string) bool {
	parts := strings.Split(agentID, "/")
	if len(parts) < 4 {
		return false
	}
	machine, pidText := parts[len(parts)-3], parts[len(parts)-2]
	if me := thisMachine(); me == "unknown" || machine != me {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// thisMachine is "bootid-pidns": the same for every process of one boot of
// one kernel in one pid namespace.
func thisMachine() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return "unknown"
	}
	ns = strings.TrimSuffix(strings.TrimPrefix(ns, "pid:["), "]")
	id := strings.ReplaceAll(strings.TrimSpace(string(boot)), "-", "")
	if len(id) > 12 {
		id = id[:12]
	}
	return id + "-" + ns
}
