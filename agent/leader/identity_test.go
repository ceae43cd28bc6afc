package leader

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestDeadOnThisMachine(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil { // started, exited and reaped
		t.Fatal(err)
	}
	dead := AgentIDPrefix("host-a", cmd.Process.Pid) + "cafe0001"
	if !DeadOnThisMachine(dead) {
		t.Errorf("a reaped process of this machine is not seen dead: %s", dead)
	}

	alive := exec.Command("sleep", "60")
	if err := alive.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = alive.Process.Kill(); _ = alive.Wait() }()
	for _, id := range []string{
		AgentIDPrefix("host-a", alive.Process.Pid) + "cafe0002", // alive
		NewAgentID("host-a"), // ourselves
		strings.Replace(dead, "/"+thisMachine()+"/", "/0123456789ab-4026531836/", 1), // another machine
		"host-a/12345/cafe0003", // the old form, without a machine
		"host-a/" + thisMachine() + "/notapid/cafe0004",
		"",
	} {
		if DeadOnThisMachine(id) {
			t.Errorf("%q is taken for dead", id)
		}
	}
	if !strings.HasPrefix(NewAgentID("host-a"), AgentIDPrefix("host-a", os.Getpid())) {
		t.Errorf("NewAgentID does not start with AgentIDPrefix")
	}
}
