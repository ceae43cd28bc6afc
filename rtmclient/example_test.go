package rtmclient_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"

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
