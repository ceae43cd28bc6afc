package pgtest

import (
	"fmt"
	"os"
	"testing"
)

// MainWithDatabase is Main for a package whose Example functions need a
// database (an example gets no *testing.T to ask URL with): it creates one
// migrated database, passes its URL to set before the tests and examples
// run, and drops it after them. Examples share that database, so each
// should use game ids and consumer names of its own.
func MainWithDatabase(m *testing.M, set func(databaseURL string)) {
	tb := &mainTB{}
	url, err := tb.url()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		teardown()
		os.Exit(1)
	}
	set(url)
	code := m.Run()
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
	teardown()
	os.Exit(code)
}

// mainTB is the part of testing.TB that URL uses, for use outside a test.
type mainTB struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

type fatal string

func (t *mainTB) Helper()                   {}
func (t *mainTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *mainTB) Fatalf(f string, a ...any) { panic(fatal(fmt.Sprintf(f, a...))) }

func (t *mainTB) url() (u string, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", string(msg))
		}
	}()
	return URL(t), nil
}
