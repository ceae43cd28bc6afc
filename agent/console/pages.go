package console

import (
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
)

const (
	gamesPerPage    = 50
	jobsPerPage     = 50
	timelinePerPage = 100
	tailLength      = 50
	maxFilterLength = 200
)

var (
	recordStatuses = []string{"running", "stopped", "removed"}
	jobStatuses    = []string{"queued", "running", "succeeded", "failed", "cancelled"}
	jobKinds       = []string{"start", "stop", "restart", "remove", "change_image"}
)

// hostRow is a line of the fleet page.
type hostRow struct {
	HostID, AgentID, Version string
	// Registered: an agent has run for this host; otherwise only its
	// jobs or records name it (a host that never came up, or a typo).
	Registered                bool
	Down                      bool
	LeaseHeld                 bool
	StartedAt, HeartbeatAt    time.Time
	HeartbeatAge              string
	Queued, RunningJobs       int64
	OldestWait                string
	Running, Stopped, Removed int64
}

type fleetData struct {
	Hosts                    []hostRow
	Up, Down                 int
	Running, Stopped, Queued int64
	DownAfter                string
}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	hosts, err := s.store.ListHostsWithLiveness(ctx, s.opts.DownAfter)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	recs, err := s.q.ConsoleRecordCountsByHost(ctx)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read games per host: "+err.Error())
		return
	}
	jobs, err := s.q.ConsoleJobCountsByHost(ctx)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read jobs per host: "+err.Error())
		return
	}
	rows := map[string]*hostRow{}
	row := func(id string) *hostRow {
		if h, ok := rows[id]; ok {
			return h
		}
		h := &hostRow{HostID: id}
		rows[id] = h
		return h
	}
	for _, h := range hosts {
		hr := row(h.HostID)
		hr.Registered, hr.AgentID, hr.Version, hr.Down = true, h.AgentID, h.AgentVersion, h.Down
		hr.StartedAt, hr.HeartbeatAt, hr.HeartbeatAge = h.StartedAt, h.HeartbeatAt, ago(h.HeartbeatAge())
		hr.LeaseHeld = h.LeaseExpiresAt != nil && h.LeaseExpiresAt.After(h.CheckedAt)
	}
	for _, c := range recs {
		hr := row(c.HostID)
		hr.Running, hr.Stopped, hr.Removed = c.Running, c.Stopped, c.Removed
	}
	for _, c := range jobs {
		hr := row(c.HostID)
		hr.Queued, hr.RunningJobs = c.Queued, c.Running
		if c.Queued > 0 {
			hr.OldestWait = ago(c.CheckedAt.Sub(c.OldestQueuedAt))
		}
	}
	d := fleetData{DownAfter: s.opts.DownAfter.String()}
	for _, h := range rows {
		if !h.Registered {
			h.Down = true
		}
		d.Hosts = append(d.Hosts, *h)
		if h.Down {
			d.Down++
		} else {
			d.Up++
		}
		d.Running += h.Running
		d.Stopped += h.Stopped
		d.Queued += h.Queued
	}
	// Down hosts first: they are what an operator looks for.
	slices.SortFunc(d.Hosts, func(a, b hostRow) int {
		if a.Down != b.Down {
			if a.Down {
				return -1
			}
			return 1
		}
		return strings.Compare(a.HostID, b.HostID)
	})
	s.render(w, r, "fleet", http.StatusOK, frame{Title: "Fleet", Nav: "fleet", Live: "fleet", Data: d})
}

type gamesData struct {
	Host, Status, Query, After string
	Statuses                   []string
	Hosts                      []string
	Games                      []dbsqlc.RuntimeRecord
	Next                       string
}

// filter reads a query parameter; too long a value is refused.
func filter(r *http.Request, name string) (string, error) {
	v := strings.TrimSpace(r.URL.Query().Get(name))
	if len(v) > maxFilterLength {
		return "", errors.New(name + " is too long: at most 200 characters")
	}
	return v, nil
}

func oneOf(name, v string, allowed []string) error {
	if v != "" && !slices.Contains(allowed, v) {
		return errors.New(name + " must be one of " + strings.Join(allowed, ", ") + ", or empty for all; got " + strconv.Quote(v))
	}
	return nil
}

func optional(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

func (s *Server) gamesPage(w http.ResponseWriter, r *http.Request) {
	var d gamesData
	var err error
	for _, f := range []struct {
		name string
		dst  *string
	}{{"host", &d.Host}, {"status", &d.Status}, {"q", &d.Query}, {"after", &d.After}} {
		if *f.dst, err = filter(r, f.name); err != nil {
			s.errorPage(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := oneOf("status", d.Status, recordStatuses); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, err.Error())
		return
	}
	d.Query = strings.ToLower(d.Query)
	d.Statuses = recordStatuses
	ctx := r.Context()
	hosts, err := s.q.ListHosts(ctx)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read hosts: "+err.Error())
		return
	}
	for _, h := range hosts {
		d.Hosts = append(d.Hosts, h.HostID)
	}
	games, err := s.q.ConsoleListGames(ctx, dbsqlc.ConsoleListGamesParams{
		HostID: optional(d.Host), Status: optional(d.Status), AfterGameID: d.After, Prefix: d.Query, MaxRecords: gamesPerPage + 1,
	})
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read games: "+err.Error())
		return
	}
	if len(games) > gamesPerPage {
		games = games[:gamesPerPage]
		d.Next = games[len(games)-1].GameID
	}
	d.Games = games
	s.render(w, r, "games", http.StatusOK, frame{Title: "Games", Nav: "games", Live: "games", Data: d})
}

// timelineItem is one line of a game's story: an outbox event, or a job
// (at the time it was enqueued, with its current state).
type timelineItem struct {
	At    time.Time
	Event *eventView
	Job   *jobView
}

type gameData struct {
	GameID   string
	Record   *dbsqlc.RuntimeRecord
	LastExit *eventView
	// LastCrash is nil when no crash report is stored for the game.
	LastCrash *crashView
	Items     []timelineItem
	// Older is the query of the next page of the timeline.
	Older string
	// Paged: this is not the newest page.
	Paged bool
}

func (s *Server) gamePage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := gameData{GameID: r.PathValue("id")}
	q := r.URL.Query()
	beforeXid, beforeID, beforeJob := uint64(math.MaxUint64), int64(math.MaxInt64), int64(math.MaxInt64)
	if v := q.Get("ex"); v != "" {
		x, err1 := strconv.ParseUint(v, 10, 64)
		i, err2 := strconv.ParseInt(q.Get("ei"), 10, 64)
		j, err3 := strconv.ParseInt(q.Get("jb"), 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			s.errorPage(w, r, http.StatusBadRequest, "the timeline position (ex, ei, jb) must be numbers: "+err.Error())
			return
		}
		beforeXid, beforeID, beforeJob, d.Paged = x, i, j, true
	}
	rec, err := s.q.GetRecord(ctx, d.GameID)
	switch {
	case err == nil:
		d.Record = &rec
	case !errors.Is(err, pgx.ErrNoRows):
		s.errorPage(w, r, http.StatusInternalServerError, "read the record: "+err.Error())
		return
	}
	evs, err := s.q.ConsoleGameEvents(ctx, dbsqlc.ConsoleGameEventsParams{GameID: d.GameID, BeforeXid: beforeXid, BeforeID: beforeID, MaxEvents: timelinePerPage})
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read the game's events: "+err.Error())
		return
	}
	jobs, err := s.q.ConsoleGameJobs(ctx, dbsqlc.ConsoleGameJobsParams{GameID: d.GameID, BeforeID: beforeJob, MaxJobs: timelinePerPage})
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read the game's jobs: "+err.Error())
		return
	}
	if d.Record == nil && len(evs) == 0 && len(jobs) == 0 && !d.Paged {
		s.errorPage(w, r, http.StatusNotFound, "no game "+strconv.Quote(printable(d.GameID))+": it has no record, no job and no event")
		return
	}
	last, err := s.q.ConsoleLastExit(ctx, d.GameID)
	switch {
	case err == nil:
		v := eventViewOf(last)
		d.LastExit = &v
	case !errors.Is(err, pgx.ErrNoRows):
		s.errorPage(w, r, http.StatusInternalServerError, "read the game's last exit: "+err.Error())
		return
	}
	crashes, err := s.q.ListCrashReports(ctx, dbsqlc.ListCrashReportsParams{GameID: d.GameID, MaxRows: 1})
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read the game's last crash report: "+err.Error())
		return
	}
	if len(crashes) > 0 {
		v := crashViewOf(crashes[0])
		d.LastCrash = &v
	}
	now, err := s.q.ConsoleNow(ctx)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	// Merge the two newest-first lists by time, keeping each list's own
	// order (events in commit order), and cut at one page.
	var ei, ji int
	for len(d.Items) < timelinePerPage && (ei < len(evs) || ji < len(jobs)) {
		if ji >= len(jobs) || (ei < len(evs) && !evs[ei].CreatedAt.Before(jobs[ji].CreatedAt)) {
			v := eventViewOf(evs[ei])
			d.Items = append(d.Items, timelineItem{At: v.At, Event: &v})
			beforeXid, beforeID = evs[ei].Xid, evs[ei].ID
			ei++
			continue
		}
		v := s.jobViewOf(jobs[ji], now)
		d.Items = append(d.Items, timelineItem{At: v.CreatedAt, Job: &v})
		beforeJob = jobs[ji].ID
		ji++
	}
	if ei < len(evs) || ji < len(jobs) || len(evs) == timelinePerPage || len(jobs) == timelinePerPage {
		d.Older = "?ex=" + strconv.FormatUint(beforeXid, 10) + "&ei=" + strconv.FormatInt(beforeID, 10) + "&jb=" + strconv.FormatInt(beforeJob, 10)
	}
	s.render(w, r, "game", http.StatusOK, frame{Title: "Game " + d.GameID, Nav: "games", Live: "game", LiveGame: d.GameID, Data: d})
}

type jobsData struct {
	Status, Kind, Host, Game string
	Statuses, Kinds          []string
	Jobs                     []jobView
	Next                     string
}

func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request) {
	var d jobsData
	var err error
	for _, f := range []struct {
		name string
		dst  *string
	}{{"status", &d.Status}, {"kind", &d.Kind}, {"host", &d.Host}, {"game", &d.Game}} {
		if *f.dst, err = filter(r, f.name); err != nil {
			s.errorPage(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := oneOf("status", d.Status, jobStatuses); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, err.Error())
		return
	}
	before := int64(math.MaxInt64)
	if v := r.URL.Query().Get("before"); v != "" {
		if before, err = strconv.ParseInt(v, 10, 64); err != nil || before <= 0 {
			s.errorPage(w, r, http.StatusBadRequest, "before must be a job id, got "+strconv.Quote(v))
			return
		}
	}
	d.Statuses, d.Kinds = jobStatuses, jobKinds
	rows, err := s.q.ConsoleListJobs(r.Context(), dbsqlc.ConsoleListJobsParams{
		Status: optional(d.Status), Kind: optional(d.Kind), HostID: optional(d.Host), GameID: optional(d.Game),
		BeforeID: before, MaxJobs: jobsPerPage + 1,
	})
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read jobs: "+err.Error())
		return
	}
	if len(rows) > jobsPerPage {
		rows = rows[:jobsPerPage]
		d.Next = strconv.FormatInt(rows[len(rows)-1].Job.ID, 10)
	}
	for _, row := range rows {
		d.Jobs = append(d.Jobs, s.jobViewOf(row.Job, row.CheckedAt))
	}
	s.render(w, r, "jobs", http.StatusOK, frame{Title: "Jobs", Nav: "jobs", Live: "jobs", Data: d})
}

type jobData struct {
	Job    jobView
	Notice string
}

// notices are the outcomes an action redirects with (?done=): a fixed set,
// so that no text of the query string reaches the page.
var notices = map[string]string{
	"cancelled":        "Job cancelled.",
	"cancel-requested": "Cancel requested: the job's agent stops it and records the outcome.",
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.errorPage(w, r, http.StatusBadRequest, "a job id is a positive number, got "+strconv.Quote(printable(r.PathValue("id"))))
		return
	}
	ctx := r.Context()
	j, err := s.q.GetJob(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		s.errorPage(w, r, http.StatusNotFound, "no job "+strconv.FormatInt(id, 10))
		return
	}
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read the job: "+err.Error())
		return
	}
	now, err := s.q.ConsoleNow(ctx)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	d := jobData{Job: s.jobViewOf(j, now), Notice: notices[r.URL.Query().Get("done")]}
	if from := r.URL.Query().Get("retried"); from != "" {
		if n, err := strconv.ParseInt(from, 10, 64); err == nil {
			d.Notice = "Enqueued as a retry of job " + strconv.FormatInt(n, 10) + "."
		}
	}
	s.render(w, r, "job", http.StatusOK, frame{Title: "Job " + strconv.FormatInt(id, 10), Nav: "jobs", Live: "job", LiveGame: j.GameID, Data: d})
}

type activityData struct {
	Hours  int
	Jobs   chart
	Events chart
	Tail   []eventView
}

func (s *Server) activityPage(w http.ResponseWriter, r *http.Request) {
	d := activityData{Hours: 3}
	if v := r.URL.Query().Get("hours"); v != "" {
		h, err := strconv.Atoi(v)
		if err != nil || h < 1 || h > 48 {
			s.errorPage(w, r, http.StatusBadRequest, "hours must be a whole number from 1 to 48, got "+strconv.Quote(v))
			return
		}
		d.Hours = h
	}
	ctx := r.Context()
	now, err := s.q.ConsoleNow(ctx)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	since := now.Add(-time.Duration(d.Hours) * time.Hour).Truncate(time.Minute)
	jobs, err := s.q.ConsoleJobsPerMinute(ctx, since)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "count jobs per minute: "+err.Error())
		return
	}
	evs, err := s.q.ConsoleEventsPerMinute(ctx, since)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "count events per minute: "+err.Error())
		return
	}
	tail, err := s.q.ConsoleRecentEvents(ctx, tailLength)
	if err != nil {
		s.errorPage(w, r, http.StatusInternalServerError, "read recent events: "+err.Error())
		return
	}
	d.Jobs, d.Events = jobsChart(jobs, since, now), eventsChart(evs, since, now)
	for _, e := range tail {
		d.Tail = append(d.Tail, eventViewOf(e))
	}
	s.render(w, r, "activity", http.StatusOK, frame{Title: "Activity", Nav: "activity", Live: "activity", Data: d})
}
