package worker

// Wake makes the worker look for due jobs now, as a LISTEN notification for
// its host would. It never blocks. It is for a process that runs many
// workers and shares one LISTEN connection among them (the fleet load
// simulation) instead of one per worker (Config.UseListen).
func (w *Worker) Wake() { w.signal() }
