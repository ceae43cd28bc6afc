package rtmclient_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/galaxy/rtmanager/rtmclient"
)

// The Game Master enqueues a start in the transaction that records its own
// decision: both commit, or neither. The idempotency key makes a retried
// request harmless.
func Example() {
	ctx := context.Background()
	client, err := rtmclient.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	req := rtmclient.JobRequest{
		HostID: "host-a",
		GameID: "example-start",
		Payload: rtmclient.StartPayload{
			ImageRef: "registry.example.com/galaxy/engine:1.4",
			Env:      map[string]string{"GAME_MODE": "ranked"},
			Limits:   rtmclient.Limits{MemoryBytes: 256 << 20},
		},
		IdempotencyKey: "start-example-start-1",
	}
	err = pgx.BeginFunc(ctx, client.Pool(), func(tx pgx.Tx) error {
		// ... the Game Master's own writes, in tx ...
		j, inserted, err := client.Enqueue(ctx, tx, req)
		if err != nil {
			return err
		}
		fmt.Println(j.Kind, j.Status, "inserted:", inserted)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	// The same request again (a retry after a timeout, say) returns the
	// first job.
	j, inserted, err := client.Enqueue(ctx, client.Pool(), req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.Kind, j.Status, "inserted:", inserted)
	// Output:
	// start queued inserted: true
	// start queued inserted: false
}

// A request that can never run is refused before anything is written.
func ExampleClient_Enqueue_invalid() {
	ctx := context.Background()
	client, err := rtmclient.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	_, _, err = client.Enqueue(ctx, client.Pool(), rtmclient.JobRequest{
		HostID:  "host-a",
		GameID:  "example-invalid",
		Payload: rtmclient.StartPayload{ImageRef: "engine:1", Env: map[string]string{"RTM_SECRET": "x"}},
	})
	var ve *rtmclient.ValidationError
	fmt.Println(errors.Is(err, rtmclient.ErrInvalidJob), errors.As(err, &ve) && ve.Field == `env["RTM_SECRET"]`)
	// Output:
	// true true
}

// Run delivers every event once per consumer name, in order, and
// acknowledges each after the handler returns nil. Here a cancelled job
// produces a job.cancelled event.
func ExampleConsumer_Run() {
	ctx := context.Background()
	client, err := rtmclient.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	j, _, err := client.Enqueue(ctx, client.Pool(), rtmclient.JobRequest{
		HostID: "host-a", GameID: "example-run", Payload: rtmclient.StopPayload{},
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.CancelJob(ctx, j.ID); err != nil {
		log.Fatal(err)
	}

	consumer, err := client.Consumer(ctx, "example-run-gm", rtmclient.ConsumerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	err = consumer.Run(runCtx, func(ctx context.Context, ev rtmclient.Event) error {
		if ev.GameID != "example-run" {
			return nil // other games' events: this example ignores them
		}
		p, err := ev.JobPayload()
		if err != nil {
			return err
		}
		fmt.Println(ev.Type, p.Kind, p.Status, p.JobID == j.ID)
		stop()
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// job.cancelled stop cancelled true
}

// The pull API: fetch, process, acknowledge. A process that crashes
// before Ack gets the same events (same IDs) again.
func ExampleConsumer_Fetch() {
	ctx := context.Background()
	client, err := rtmclient.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	j, _, err := client.Enqueue(ctx, client.Pool(), rtmclient.JobRequest{
		HostID: "host-a", GameID: "example-fetch", Payload: rtmclient.RemovePayload{},
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := client.CancelJob(ctx, j.ID); err != nil {
		log.Fatal(err)
	}

	consumer, err := client.Consumer(ctx, "example-fetch-gm", rtmclient.ConsumerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for done := false; !done; {
		evs, err := consumer.Fetch(ctx, 100)
		if err != nil {
			log.Fatal(err)
		}
		for _, ev := range evs {
			if ev.GameID == "example-fetch" {
				fmt.Println(ev.Type, ev.JobID == j.ID)
				done = true
			}
		}
		if len(evs) > 0 {
			if err := consumer.Ack(ctx, evs[len(evs)-1]); err != nil {
				log.Fatal(err)
			}
		}
		// A real consumer would wait for a notification here; the event
		// becomes readable as soon as older transactions have finished.
	}
	// Output:
	// job.cancelled true
}

// The README's Go client block is gameMaster's body between the README
// markers, verbatim (e2e/readme compares them), so the README's Go
// compiles and runs. No agent runs here: the game gets no record, and the
// job is cancelled while queued.
func Example_gameMaster() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := gameMaster(ctx, pool, &exampleGM{game: "g1", stop: stop}); err != nil {
		log.Fatal(err)
	}
	// Output:
	// g1 has no record yet
	// 0 games running on host-a; g1's jobs: start queued
	// cancelled the start job
	// event: start job of g1 cancelled
}

// exampleGM is the Game Master's own event handling: here it prints the
// events of its game and ends the example after the job's outcome.
type exampleGM struct {
	game string
	stop context.CancelFunc
}

func (gm *exampleGM) RecordChanged(ctx context.Context, p rtmclient.RuntimePayload) error {
	if p.GameID == gm.game {
		fmt.Println("event: record of", p.GameID, p.ToStatus)
	}
	return nil
}

func (gm *exampleGM) JobEnded(ctx context.Context, p rtmclient.JobPayload) error {
	if p.GameID == gm.game {
		fmt.Println("event:", p.Kind, "job of", p.GameID, p.Status)
		gm.stop()
	}
	return nil
}

func gameMaster(ctx context.Context, pool *pgxpool.Pool, gm *exampleGM) error {
	// README begin
	client := rtmclient.New(pool) // or rtmclient.Connect(ctx, url)

	// Enqueue inside the Game Master's transaction. The payload is typed and
	// validated before insert (*rtmclient.ValidationError, errors.Is
	// rtmclient.ErrInvalidJob); the traceparent of the span in ctx is stored.
	var job rtmclient.Job
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// ... the Game Master's own writes ...
		var err error
		job, _, err = client.Enqueue(ctx, tx, rtmclient.JobRequest{
			HostID: "host-a", GameID: "g1", IdempotencyKey: "start-g1-7",
			Payload: rtmclient.StartPayload{ImageRef: "registry.example.com/galaxy/engine:1.4"},
		})
		return err
	})
	if err != nil {
		return err
	}

	// Read. A game has no record until its first start job has run.
	rec, err := client.GetRecord(ctx, "g1")
	switch {
	case errors.Is(err, rtmclient.ErrNotFound):
		fmt.Println("g1 has no record yet")
	case err != nil:
		return err
	default:
		fmt.Println("g1 is", rec.Status, "at", rec.EngineEndpoint)
	}
	running, err := client.ListRecords(ctx, rtmclient.RecordFilter{HostID: "host-a", Status: rtmclient.RecordRunning})
	if err != nil {
		return err
	}
	jobs, err := client.ListJobs(ctx, rtmclient.JobFilter{GameID: "g1"})
	if err != nil {
		return err
	}
	fmt.Println(len(running), "games running on host-a; g1's jobs:", jobs[0].Kind, jobs[0].Status)

	// Cancel: a queued job at once, a running one is asked to stop
	// (errors.Is ErrNotFound, ErrJobFinished).
	if job, err = client.CancelJob(ctx, job.ID); err != nil {
		return err
	}
	fmt.Println(job.Status, "the", job.Kind, "job")

	// Consume: Run delivers each event once per name, in order, acknowledging
	// after the handler returns nil; LISTEN wake-up with polling fallback. It
	// returns nil when ctx ends. gm is the Game Master's own code.
	consumer, err := client.Consumer(ctx, "game-master", rtmclient.ConsumerOptions{})
	if err != nil {
		return err
	}
	return consumer.Run(ctx, func(ctx context.Context, ev rtmclient.Event) error {
		switch {
		case ev.IsRuntime():
			p, err := ev.RuntimePayload()
			if err != nil {
				return err
			}
			return gm.RecordChanged(ctx, p)
		case ev.IsJob():
			p, err := ev.JobPayload()
			if err != nil {
				return err
			}
			return gm.JobEnded(ctx, p)
		}
		return nil // an error stops Run; that event comes again next time
	})
	// Or pull: evs, err := consumer.Fetch(ctx, 100); ...; consumer.Ack(ctx, evs[len(evs)-1])
	// README end
}
