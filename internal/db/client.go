package db

import (
	"context"
	"fmt"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
	"github.com/galaxy/rtmanager/internal/domain/job"
	"github.com/galaxy/rtmanager/internal/domain/runtime"
)

// This file holds the reads of the Game Master client (rtmclient) and the
// operator CLI.

// JobFilter selects jobs; empty fields match all.
type JobFilter struct {
	GameID, HostID string
	Status         job.Status
	// BeforeID pages: only jobs with a smaller id (0: from the newest).
	BeforeID int64
	// Limit bounds the result (default 100).
	Limit int
}

// ListJobs returns the jobs f selects, newest first.
func (s *Store) ListJobs(ctx context.Context, f JobFilter) ([]Job, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := s.q.ListJobs(ctx, dbsqlc.ListJobsParams{
		GameID: nullable(f.GameID), HostID: nullable(f.HostID), Status: nullable(string(f.Status)),
		BeforeID: f.BeforeID, MaxJobs: int32(f.Limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobsFromRows(rows), nil
}

// RecordFilter selects records; empty fields match all.
type RecordFilter struct {
	HostID string
	Status runtime.Status
	// AfterGameID pages: only games after it in id order.
	AfterGameID string
	// Limit bounds the result (default 1000).
	Limit int
}

// ListAllRecords returns the records f selects, by game id.
func (s *Store) ListAllRecords(ctx context.Context, f RecordFilter) ([]runtime.RuntimeRecord, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	rows, err := s.q.ListRecords(ctx, dbsqlc.ListRecordsParams{
		HostID: nullable(f.HostID), Status: nullable(string(f.Status)), AfterGameID: f.AfterGameID, MaxRecords: int32(f.Limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	return recordsFromRows(rows), nil
}
