package faults

import (
	"fmt"
	"testing"
	"time"
)

// TestTwoAgentsOneHost starts two agents with the same host id at once,
// feeds them a burst of jobs, SIGKILLs the one running jobs in the middle
// and starts a third. Whatever the agents decide between them (today: one
// holds the host lease, the others stand by and take over), no job may run
// twice or be lost, and every game gets one container.
func TestTwoAgentsOneHost(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	h.startConsumer()
	a, b := h.startAgent(), h.startAgent()

	var ids []int64
	for i := range 8 {
		ids = append(ids, h.enqueue(h.game(fmt.Sprintf("t%d", i)), "start", startPayload(h.image), 0))
	}
	// Kill whichever agent holds a running job.
	var victim, other *agentProc
	waitUntil(time.Minute, func() bool {
		switch {
		case h.runningOf(a) > 0:
			victim, other = a, b
		case h.runningOf(b) > 0:
			victim, other = b, a
		}
		return victim != nil
	})
	faults := "2 agents started at once"
	if victim != nil {
		h.kill(victim)
		faults += fmt.Sprintf(", SIGKILL of %s while it ran jobs", victim.name)
	} else {
		t.Log("no agent was seen running a job; no kill")
		other = b
	}
	c := h.startAgent()
	faults += ", a third agent started"
	for i := range 8 {
		ids = append(ids, h.enqueue(h.game(fmt.Sprintf("t%d", i)), "stop", `{"timeout_seconds": 5}`, 0))
	}
	h.waitJobs(2*time.Minute, ids...)
	f := h.check(checkOptions{})
	for _, id := range ids {
		if j := h.job(id); j.Status != "succeeded" {
			f.Violations++
			t.Logf("VIOLATION: job %d (%s %s) ended %s: %s", j.ID, j.Kind, j.GameID, j.Status, deref(j.LastError))
		}
	}
	if !other.alive() && !c.alive() {
		f.Violations++
		t.Logf("VIOLATION: no agent is left running: %v, %v", other.err, c.err)
	}
	f.Scenario, f.Rounds, f.Faults = "two agents, one host id", 1, faults
	h.report(f)
}
