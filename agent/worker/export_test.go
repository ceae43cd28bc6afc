package worker

// Unbatched makes w finish every job in a transaction of its own (the
// store's FinishJob), as the worker did before the batch finisher, so that
// a benchmark can compare both in one run. Call it before Run.
func Unbatched(w *Worker) { w.unbatched = true }
