package rtmclient_test

import (
	"testing"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

// exampleURL is the database the Example functions share; tests take
// databases of their own from pgtest.
var exampleURL string

func TestMain(m *testing.M) {
	pgtest.MainWithDatabase(m, func(u string) { exampleURL = u })
}
