package console_test

import (
	"encoding/json"
	"github.com/galaxy/rtmanager/internal/testutil/syncbuf"
	"io"
	"log/slog"
)

// syncBuffer is a buffer a test reads while others write it.
type syncBuffer = syncbuf.Buffer

func newLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}
