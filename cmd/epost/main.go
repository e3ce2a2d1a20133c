// Command epost is the single ePOST binary: ring and node administration, the node daemon,
// the demo ring and the simulator. Each subcommand lives in its own file and registers itself
// in commands (see register).
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// command is one subcommand: "sim route", "ring init", "status", ...
type command struct {
	name    string // words joined by spaces
	summary string
	run     func(args []string) error
}

var commands = map[string]command{}

// register adds a subcommand; called from init functions of this package's files.
func register(name, summary string, run func(args []string) error) {
	commands[name] = command{name: name, summary: summary, run: run}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: epost COMMAND [flags]   (epost COMMAND -h for a command's flags)")
	fmt.Fprintln(os.Stderr, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, commands[n].summary)
	}
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		if len(args) == 0 {
			os.Exit(2)
		}
		return
	}
	// Longest match first: "sim route" before "sim".
	for n := min(len(args), 3); n >= 1; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			if err := c.run(args[n:]); err != nil {
				fmt.Fprintf(os.Stderr, "epost %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "epost: unknown command %q\n\n", strings.Join(args, " "))
	usage()
	os.Exit(2)
}
