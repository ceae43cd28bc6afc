package db_test

import (
	"testing"

	"github.com/galaxy/rtmanager/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
