// Package contract holds the Game Master contract as JSON Schemas (draft
// 2020-12): one per job kind's payload, one for the jobs row a Game
// Master inserts, one per outbox event type, and the definitions they
// share. They are embedded here so that tests (and any Go program) can
// load them; see README.md beside this file for how to use them from
// another language.
//
// The schemas are checked both ways against the agent's own validation
// (internal/domain/job) and event constructors (internal/domain/outbox):
// see this package's tests and the README for the few differences a
// schema cannot express.
package contract

import (
	"embed"
	"io/fs"
	"strings"
)

// BaseURI is the base of every schema's $id. The ids name the schemas;
// nothing is served there: load the files themselves.
const BaseURI = "https://github.com/galaxy/rtmanager/contract/"

// DefsFile holds the definitions the other schemas refer to.
const DefsFile = "defs.schema.json"

// JobRowFile is the schema of a jobs row as a JSON object of its columns.
const JobRowFile = "jobs/row.schema.json"

// FS holds every schema file, by its path in this folder.
//
//go:embed defs.schema.json jobs/*.schema.json events/*.schema.json
var FS embed.FS

// JobPayloadFile returns the path of the payload schema of a job kind.
func JobPayloadFile(kind string) string { return "jobs/" + kind + ".schema.json" }

// EventFile returns the path of the payload schema of an event type.
func EventFile(eventType string) string { return "events/" + eventType + ".schema.json" }

// Files returns the paths of every schema file in FS, sorted.
func Files() []string {
	var out []string
	// The embedded tree is fixed at build time: a walk error cannot happen.
	_ = fs.WalkDir(FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".schema.json") {
			out = append(out, path)
		}
		return err
	})
	return out
}

// ID returns the $id of the schema at path.
func ID(path string) string { return BaseURI + path }
