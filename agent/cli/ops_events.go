package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/galaxy/rtmanager/rtmclient"
)

func cmdEvents(ctx context.Context, e *env, args []string) int {
	const actions = "tail"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(e.stdout, "Usage: rtmanager events tail [--follow] [--consumer NAME] [-n N] [flags]")
		return ExitOK
	}
	if len(args) == 0 || args[0] != "tail" {
		return unknownAction(e, "events", args, actions)
	}
	var follow bool
	var consumer string
	var n int
	var poll time.Duration
	c, code, ok := parseOps(e, "events tail", "[--follow] [--consumer NAME] [-n N]", args[1:], func(fs *flag.FlagSet) {
		fs.BoolVar(&follow, "follow", false, "keep printing events as they are committed, until interrupted")
		fs.StringVar(&consumer, "consumer", "", "read as this registered consumer, from its acknowledged position, and acknowledge what is printed; "+
			"use a name of your own, never the Game Master's (it would miss what you read)")
		fs.IntVar(&n, "n", 20, "without --consumer: how many of the last events to print first")
		fs.DurationVar(&poll, "poll-interval", time.Second, "with --follow: how often to look when no notification came")
	})
	if !ok {
		return code
	}
	if code, ok := c.noArgs(); !ok {
		return code
	}
	if n < 0 || poll <= 0 {
		return usageError(e, c.name, fmt.Errorf("-n must not be negative and --poll-interval must be positive"))
	}
	if consumer != "" && strings.TrimSpace(consumer) == "" {
		return usageError(e, c.name, fmt.Errorf("--consumer must not be blank"))
	}
	client, code := c.connect(ctx)
	if client == nil {
		return code
	}
	defer client.Close()
	print := func(ev rtmclient.Event) error { return printEvent(e.stdout, ev, c.json()) }

	if consumer != "" {
		cons, err := client.Consumer(ctx, consumer, rtmclient.ConsumerOptions{PollInterval: poll})
		if err != nil {
			return c.fail(err)
		}
		if follow {
			err := cons.Run(ctx, func(_ context.Context, ev rtmclient.Event) error { return print(ev) })
			return c.done(err)
		}
		for {
			evs, err := cons.Fetch(ctx, 0)
			if err != nil {
				return c.fail(err)
			}
			if len(evs) == 0 {
				return ExitOK
			}
			for _, ev := range evs {
				if err := print(ev); err != nil {
					return c.fail(err)
				}
			}
			if err := cons.Ack(ctx, evs[len(evs)-1]); err != nil {
				return c.fail(err)
			}
		}
	}

	evs, err := client.TailEvents(ctx, n)
	if err != nil {
		return c.fail(err)
	}
	var pos rtmclient.Position
	for _, ev := range evs {
		if err := print(ev); err != nil {
			return c.fail(err)
		}
		pos = ev.Position()
	}
	if !follow {
		return ExitOK
	}
	if n == 0 {
		// Follow from now: skip what is readable already.
		if last, err := client.TailEvents(ctx, 1); err == nil && len(last) == 1 {
			pos = last[0].Position()
		}
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		evs, err := client.ReadEvents(ctx, pos, 500)
		if err != nil {
			if ctx.Err() != nil {
				return ExitOK
			}
			return c.fail(err)
		}
		for _, ev := range evs {
			if err := print(ev); err != nil {
				return c.fail(err)
			}
			pos = ev.Position()
		}
		if len(evs) == 500 {
			continue
		}
		select {
		case <-ctx.Done():
			return ExitOK
		case <-tick.C:
		}
	}
}

// printEvent prints one event: a JSON object on one line, or a line of
// fixed-width columns that reads well while following.
func printEvent(w io.Writer, ev rtmclient.Event, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, "%-7d %s  %-18s %-12s %-16s %s\n", ev.ID, stamp(ev.CreatedAt), ev.Type, ev.HostID, orDash(ev.GameID), summary(ev))
	return err
}

// summary says in a few words what an event reports.
func summary(ev rtmclient.Event) string {
	switch {
	case ev.IsRuntime():
		p, err := ev.RuntimePayload()
		if err != nil {
			return "(unreadable payload)"
		}
		s := orDash(string(p.FromStatus)) + " -> " + string(p.ToStatus) + " (" + string(p.Reason) + ")"
		if p.ExitCode != nil {
			s += fmt.Sprintf(" exit %d", *p.ExitCode)
		}
		if p.OOM {
			s += " oom"
		}
		if p.JobID != nil {
			s += fmt.Sprintf(" job %d", *p.JobID)
		}
		return s
	case ev.IsJob():
		p, err := ev.JobPayload()
		if err != nil {
			return "(unreadable payload)"
		}
		s := fmt.Sprintf("job %d %s %s after %d attempt(s)", p.JobID, p.Kind, p.Status, p.Attempt)
		if p.Error != "" {
			s += ": " + clip(p.Error, 80)
		}
		return s
	case ev.Type == rtmclient.EventContainerOrphaned:
		p, err := ev.OrphanPayload()
		if err != nil {
			return "(unreadable payload)"
		}
		return "container " + clip(p.ContainerID, 12) + " " + p.ContainerName
	default:
		return clip(string(ev.Payload), 80)
	}
}
