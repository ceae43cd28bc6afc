package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

func ptr[T any](v T) *T { return &v }

// validRecord returns a record of the given status that passes Validate.
func validRecord(status runtime.Status) runtime.RuntimeRecord {
	created := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	r := runtime.RuntimeRecord{
		GameID:             "g1",
		HostID:             "host-a",
		Status:             status,
		CurrentContainerID: "c0ffee",
		CurrentImageRef:    "engine:1",
		CurrentImageDigest: "sha256:" + strings.Repeat("ab", 32),
		EngineEndpoint:     runtime.EngineEndpointFor("g1"),
		StatePath:          "/srv/state/g1",
		DockerNetwork:      "galaxy",
		StartedAt:          ptr(created.Add(time.Second)),
		LastOpAt:           created.Add(time.Minute),
		CreatedAt:          created,
	}
	switch status {
	case runtime.StatusStopped:
		r.StoppedAt = ptr(created.Add(2 * time.Second))
	case runtime.StatusRemoved:
		r.CurrentContainerID = ""
		r.StoppedAt = ptr(created.Add(2 * time.Second))
		r.RemovedAt = ptr(created.Add(3 * time.Second))
	}
	return r
}

func rawParams(r runtime.RuntimeRecord) dbsqlc.UpsertRecordParams {
	str := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return dbsqlc.UpsertRecordParams{
		GameID: r.GameID, HostID: r.HostID, Status: string(r.Status),
		CurrentContainerID: str(r.CurrentContainerID), CurrentImageRef: str(r.CurrentImageRef), CurrentImageDigest: str(r.CurrentImageDigest),
		EngineEndpoint: r.EngineEndpoint, StatePath: r.StatePath, DockerNetwork: r.DockerNetwork,
		StartedAt: r.StartedAt, StoppedAt: r.StoppedAt, RemovedAt: r.RemovedAt,
		LastOpAt: r.LastOpAt, CreatedAt: r.CreatedAt,
	}
}

// TestConstraintsRefuseWhatValidateRefuses breaks each rule of
// RuntimeRecord.Validate in turn and checks that PostgreSQL refuses the row
// too, while the valid row of every status is accepted.
func TestConstraintsRefuseWhatValidateRefuses(t *testing.T) {
	t.Parallel()
	q := dbsqlc.New(pgtest.Pool(t))
	ctx := context.Background()

	for _, status := range runtime.AllStatuses() {
		r := validRecord(status)
		r.GameID = "valid-" + string(status)
		if err := r.Validate(); err != nil {
			t.Fatalf("valid %s record: %v", status, err)
		}
		if err := q.UpsertRecord(ctx, rawParams(r)); err != nil {
			t.Fatalf("valid %s record refused by PostgreSQL: %v", status, err)
		}
	}

	zero := time.Time{}
	cases := []struct {
		name   string
		status runtime.Status
		breakI func(*runtime.RuntimeRecord)
	}{
		{"blank game id", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.GameID = " \t" }},
		{"blank host id", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.HostID = "" }},
		{"unknown status", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.Status = "paused" }},
		{"blank engine endpoint", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.EngineEndpoint = " " }},
		{"blank state path", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.StatePath = "" }},
		{"blank docker network", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.DockerNetwork = "\n" }},
		{"zero last op at", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.LastOpAt = zero }},
		{"zero created at", runtime.StatusRemoved, func(r *runtime.RuntimeRecord) {
			r.CreatedAt, r.StartedAt, r.StoppedAt = zero, nil, nil
		}},
		{"last op before created", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.LastOpAt = r.CreatedAt.Add(-time.Second) }},
		{"running without container", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.CurrentContainerID = " " }},
		{"running without image", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.CurrentImageRef = "" }},
		{"running without started at", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.StartedAt = nil }},
		{"running with zero started at", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.StartedAt = ptr(zero) }},
		{"stopped without image", runtime.StatusStopped, func(r *runtime.RuntimeRecord) { r.CurrentImageRef = "  " }},
		{"stopped without stopped at", runtime.StatusStopped, func(r *runtime.RuntimeRecord) { r.StoppedAt = nil }},
		{"stopped with zero stopped at", runtime.StatusStopped, func(r *runtime.RuntimeRecord) { r.StoppedAt = ptr(zero) }},
		{"removed without removed at", runtime.StatusRemoved, func(r *runtime.RuntimeRecord) { r.RemovedAt = nil }},
		{"removed with zero removed at", runtime.StatusRemoved, func(r *runtime.RuntimeRecord) { r.RemovedAt = ptr(zero) }},
		{"started before created", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.StartedAt = ptr(r.CreatedAt.Add(-time.Second)) }},
		{"stopped before started", runtime.StatusStopped, func(r *runtime.RuntimeRecord) { r.StoppedAt = ptr(r.StartedAt.Add(-time.Second)) }},
		{"image digest not a digest", runtime.StatusRunning, func(r *runtime.RuntimeRecord) { r.CurrentImageDigest = "latest" }},
		{"image digest in uppercase", runtime.StatusRunning, func(r *runtime.RuntimeRecord) {
			r.CurrentImageDigest = strings.ToUpper(r.CurrentImageDigest)
		}},
		{"image digest too short", runtime.StatusStopped, func(r *runtime.RuntimeRecord) { r.CurrentImageDigest = "sha256:abc" }},
		{"image digest without an image", runtime.StatusRemoved, func(r *runtime.RuntimeRecord) { r.CurrentImageRef = "" }},
		{"removed before created", runtime.StatusRemoved, func(r *runtime.RuntimeRecord) {
			r.RemovedAt = ptr(r.CreatedAt.Add(-time.Second))
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := validRecord(tc.status)
			r.GameID = "broken-" + string(rune('a'+i))
			tc.breakI(&r)
			if err := r.Validate(); err == nil {
				t.Fatalf("Validate accepted the broken record; the test case does not break a rule")
			}
			err := q.UpsertRecord(ctx, rawParams(r))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || (pgErr.Code != "23514" && pgErr.Code != "23502") {
				t.Fatalf("PostgreSQL accepted a record that Validate refuses (err=%v)", err)
			}
		})
	}
}
