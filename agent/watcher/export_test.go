package watcher

import (
	"time"

	"github.com/galaxy/rtmanager/agent/engine"
)

// SetApplyHook makes w call f before it applies each event (on the applying
// goroutine). Call before Run.
func SetApplyHook(w *Watcher, f func(engine.Event)) { w.applyHook = f }

// SetAppliedHook makes w call f after each committed transition, with its
// lag (commit minus event time) and the time since the reader got it. Call
// before Run.
func SetAppliedHook(w *Watcher, f func(ev engine.Event, lag, sinceRead time.Duration)) {
	w.appliedHook = f
}

// PendingDrops returns the events the reader dropped that the applier has
// not accounted for yet.
func PendingDrops(w *Watcher) int64 { return w.drops.Load() }
