package cli

// operatorCommands are the commands operators and scripts use to look at
// and act on jobs, records, events and hosts.
func operatorCommands() []command {
	return nil
}
