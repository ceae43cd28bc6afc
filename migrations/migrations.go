// Package migrations embeds the SQL schema migrations of rtmanager so that
// the binary carries its own schema (golang-migrate, iofs source).
package migrations

import "embed"

// FS holds the numbered up and down migrations.
//
//go:embed *.sql
var FS embed.FS
