package engine

// PullRequests counts the pull requests d has sent to the daemon.
func PullRequests(d *Docker) int64 { return d.pullRequests.Load() }

// SetPullHooks installs test hooks: joined runs once a caller waits for a
// pull, pulling at the start of each pull. Set them before any pull.
func SetPullHooks(d *Docker, joined, pulling func()) {
	d.testHookJoined, d.testHookPulling = joined, pulling
}
