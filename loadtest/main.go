// Command loadtest is kubeshard's load-test harness: it creates, changes and
// deletes up to millions of LargeData objects, scales the operator's
// StatefulSet, measures what the members did (time to reconciled, objects
// and slots per member, CPU and memory, API server request rates) and writes
// the reports. `run` does a whole scenario in one process and starts a
// local cluster when no kubeconfig is given; the other subcommands do one
// part each against a running cluster. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"run", "Run a whole scenario: cluster, baseline, create, churn and scale, measure, report, cleanup.", runCommand},
		{"create", "Create N LargeData objects across M namespaces (resumable).", createCommand},
		{"churn", "Change the spec of a share of the objects per second, for a duration.", churnCommand},
		{"scale", "Change the StatefulSet's replicas through the scale subresource at given times.", scaleCommand},
		{"measure", "Record time to reconciled, objects and slots per member, CPU, memory and API rates; write reports.", measureCommand},
		{"cleanup", "Delete every object and namespace of a run.", cleanupCommand},
		{"cluster", "Start a local cluster with the operator and keep it running until Ctrl-C.", clusterCommand},
		{"report", "Write the Markdown summary of a report.json again, with this version's figures.", reportCommand},
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "loadtest is kubeshard's load-test harness.\n\nUsage: loadtest <command> [flags]   (loadtest <command> --help for its flags)\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", c.name, c.summary)
	}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name != os.Args[1] {
			continue
		}
		err := c.run(ctx, os.Args[2:])
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "\nloadtest %s: %v\n", c.name, err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "loadtest: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}
