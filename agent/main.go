// Command rtmanager is the Runtime Manager agent: one runs on every Docker
// host, turns lifecycle jobs from PostgreSQL into engine containers, and
// reports every change through the PostgreSQL outbox.
package main

import (
	"os"

	"github.com/galaxy/rtmanager/agent/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
