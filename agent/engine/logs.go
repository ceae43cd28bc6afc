package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/galaxy/rtmanager/internal/domain/crash"
)

// TailLogs implements Engine: the last lines of one of our containers'
// output, stdout and stderr demultiplexed (engines run without a TTY),
// bounded by lim and sanitised (package crash). A log driver that keeps
// nothing readable (none, syslog, …) is an error.
func (d *Docker) TailLogs(ctx context.Context, id string, lim crash.Limits) (crash.Output, error) {
	ctx, cancel := d.callCtx(ctx, 0)
	defer cancel()
	lim = lim.WithDefaults()
	c, err := d.managed(ctx, id)
	if err != nil {
		return crash.Output{}, fmt.Errorf("read the logs of container %s: %w", id, err)
	}
	rc, err := d.cli.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{
		ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lim.Lines),
	})
	if err != nil {
		return crash.Output{}, fmt.Errorf("read the logs of container %s: %w", id, mapErr(err))
	}
	defer rc.Close()
	col := crash.NewCollector(lim)
	if _, err := stdcopy.StdCopy(col.Writer(crash.Stdout), col.Writer(crash.Stderr), rc); err != nil && !errors.Is(err, crash.ErrReadLimit) {
		// What was read is still worth keeping: say it is incomplete.
		out := col.Output()
		out.Truncated = true
		return out, fmt.Errorf("read the logs of container %s: %w", id, err)
	}
	return col.Output(), nil
}
