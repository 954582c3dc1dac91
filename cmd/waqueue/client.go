package main

import "github.com/spf13/cobra"

// clientCommands are the subcommands that talk to a running server over the API.
func clientCommands() []*cobra.Command { return nil }
