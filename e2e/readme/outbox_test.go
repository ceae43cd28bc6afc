package readme_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
	"github.com/galaxy/rtmanager/internal/testutil/wait"
	"github.com/galaxy/rtmanager/rtmclient"
)

// oldReadQuery is the README's read query before issue 13, kept as the
// negative control: its bare ORDER BY xid names the text output column, so
// it sorts "1000" before "999" while its WHERE compares numbers.
const oldReadQuery = `SELECT id, xid::text, type, host_id, game_id, job_id, payload, created_at
FROM outbox
WHERE (xid, id) > ($1::xid8, $2::bigint)           -- last position, ('0', 0) at first
  AND xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY xid, id
LIMIT 100`

// maxBurn bounds the transaction ids a test burns to reach the next power
// of ten (about 70,000 a second here). The throwaway cluster of pgtest
// starts near 1,000; only a long-lived RTM_TEST_DATABASE_URL server can be
// further away.
const maxBurn = 5_000_000

// TestReadLoopAcrossPowerOfTen writes more waiting events than one page on
// both sides of a power of ten of the transaction counter and reads them
// with the README's read loop, statement for statement: every event comes
// once, in (xid, id) order, and so through rtmclient's consumer. The old
// query, read the same way, loses events, which proves the test can see
// the bug.
func TestReadLoopAcrossPowerOfTen(t *testing.T) {
	c := loadContract(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	read := c.sql(roleReadOutbox)
	perSide := pageLimit(t, read) * 3 / 2 // more than a page on each side
	const perTx = 15                      // events per writing transaction

	current := func() uint64 {
		var x string
		if err := conn.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&x); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseUint(x, 10, 64)
		return n
	}
	// The counter is cluster-wide: other tests move it too, so leave room
	// before the boundary for the events that must land below it.
	boundary := uint64(10)
	for boundary <= current()+1000 {
		boundary *= 10
	}
	if d := boundary - current(); d > maxBurn {
		msg := fmt.Sprintf("the next power of ten of the transaction counter, %d, is %d transactions away (more than %d): run the tests on pgtest's throwaway cluster (unset %s)", boundary, d, maxBurn, pgtest.EnvDatabaseURL)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	var written []event
	write := func() uint64 {
		rows, err := conn.Query(ctx, `INSERT INTO outbox (type, host_id, game_id, payload)
			SELECT 'runtime.running', 'host-a', 'g' || i, '{}' FROM generate_series(1, $1::int) AS i
			RETURNING id, xid::text`, perTx)
		if err != nil {
			t.Fatal(err)
		}
		var xid uint64
		for rows.Next() {
			var e event
			if err := rows.Scan(&e.id, &e.xidArg); err != nil {
				t.Fatal(err)
			}
			e.xid, _ = strconv.ParseUint(e.xidArg, 10, 64)
			xid = e.xid
			written = append(written, e)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return xid
	}
	for below := 0; below < perSide; below += perTx {
		if xid := write(); xid >= boundary {
			t.Fatalf("the transaction counter passed %d before the events below it were written (xid %d)", boundary, xid)
		}
	}
	// One transaction per burnt id, committed in a loop on the server.
	for n := current(); n < boundary; n = current() {
		if _, err := conn.Exec(ctx, fmt.Sprintf(
			`DO $$ BEGIN FOR i IN 1..%d LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$`, boundary-n)); err != nil {
			t.Fatalf("burn transaction ids: %v", err)
		}
	}
	for above := 0; above < perSide; above += perTx {
		write()
	}
	slices.SortFunc(written, func(a, b event) int {
		if a.xid != b.xid {
			return cmpUint(a.xid, b.xid)
		}
		return cmpUint(uint64(a.id), uint64(b.id))
	})
	t.Logf("%d events from xid %d to %d, across %d", len(written), written[0].xid, written[len(written)-1].xid, boundary)

	// Every event readable first (no older transaction open anywhere in
	// the cluster), so that an empty page means the reader is done.
	wait.For(t, time.Minute, "every written event to be below the watermark", func() bool {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE xid < pg_snapshot_xmin(pg_current_snapshot())`).Scan(&n)
		return err == nil && n == len(written)
	})

	old := c.newReader(ctx, conn, "old-readme", oldReadQuery).drain(ctx, t, conn)
	if lost, dup, disorder := compare(written, old); lost == 0 && dup == 0 && !disorder {
		t.Fatalf("negative control: the old README query delivered all %d events in order across %d: the test no longer sees the bug", len(written), boundary)
	} else {
		t.Logf("negative control: the old README query lost %d of %d events (duplicated %d, out of order: %v)", lost, len(written), dup, disorder)
	}

	got := c.newReader(ctx, conn, "game-master", read).drain(ctx, t, conn)
	if lost, dup, disorder := compare(written, got); lost != 0 || dup != 0 || disorder {
		t.Fatalf("the README's read loop across %d: lost %d of %d events, duplicated %d, out of order: %v\ngot %d events: %v …", boundary, lost, len(written), dup, disorder, len(got), got[:min(len(got), 5)])
	}

	// The Go client reads the same events the same way.
	client, err := rtmclient.Connect(ctx, conn.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	consumer, err := client.Consumer(ctx, "go-client", rtmclient.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var viaGo []event
	for {
		evs, err := consumer.Fetch(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			viaGo = append(viaGo, event{id: ev.ID, xid: ev.Xid, typ: string(ev.Type), gameID: ev.GameID})
		}
		if err := consumer.Ack(ctx, evs[len(evs)-1]); err != nil {
			t.Fatal(err)
		}
	}
	if lost, dup, disorder := compare(written, viaGo); lost != 0 || dup != 0 || disorder {
		t.Fatalf("rtmclient's consumer across %d: lost %d of %d events, duplicated %d, out of order: %v", boundary, lost, len(written), dup, disorder)
	}
}

// compare counts the events of want missing from got, the events got has
// more than once, and whether got leaves (xid, id) order.
func compare(want, got []event) (lost, dup int, disorder bool) {
	seen := map[int64]int{}
	for i, e := range got {
		seen[e.id]++
		if i > 0 && (got[i-1].xid > e.xid || got[i-1].xid == e.xid && got[i-1].id >= e.id) {
			disorder = true
		}
	}
	for _, e := range want {
		switch n := seen[e.id]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	return lost, dup, disorder
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
