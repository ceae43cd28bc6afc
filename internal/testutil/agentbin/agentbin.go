// Package agentbin builds the rtmanager binary for tests that run the real
// program as a process of its own.
package agentbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Build compiles rtmanager (statically: it also runs in a FROM scratch
// image) into a temporary directory of t and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("agentbin: the go toolchain is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "rtmanager")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", bin, "github.com/galaxy/rtmanager/agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agentbin: go build: %v\n%s", err, out)
	}
	return bin
}
