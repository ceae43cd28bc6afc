// Package faults is the end-to-end fault-injection and hostile-input suite.
//
// Its tests run the real rtmanager binary (built once per test binary with
// go build) as one or more processes against a real PostgreSQL and the
// real Docker daemon, drive it like the Game Master does (plain SQL
// inserts into jobs, an rtmclient outbox consumer), inject faults — SIGKILL
// of the agent, PostgreSQL restarts and terminated connections, a second
// agent for the same host, a full or read-only state directory, a dockerd
// restart with containers dying and vanishing behind the agent's back —
// and feed it hostile jobs. After every scenario they check the
// invariants:
//
//   - every job is finished or still legitimately queued, none is running
//     without a live lease;
//   - at most one container per game, and every record agrees with what
//     Docker reports once a reconcile has passed;
//   - every record change has exactly one outbox event (the runtime events
//     of a game form one unbroken chain ending in the record), every
//     finished job exactly one job event, and the consumer saw every event
//     once, in (xid, id) order;
//   - every record, and every record carried by an event, passes the
//     domain's Validate.
//
// With RTM_FAULT_REPORT set to a file name, the scenarios write their
// figures there as a Markdown table (rows of an earlier run that this run
// did not repeat are kept). RTM_FAULT_ROUNDS sets the SIGKILL rounds
// (default 30). The dockerd restart runs only with
// RTM_TEST_RESTART_DOCKERD=1 (make test-disruptive).
package faults
