// Command demo shows image-prewarmer at work on a local cluster, for a newcomer's first hour
// (`make demo`, `make demo-down`).
//
//	go run ./hack/demo up     bring up the local cluster, install the chart, play a rolling OS upgrade
//	                          of a 20-node notebook pool with the orchestrator running for real, show
//	                          `prewarm-orchestrator status --watch`, end with a summary
//	go run ./hack/demo down   delete the demo's cluster and files
//
// `up` exits 0 once every pool node has been upgraded and released, 1 when that does not happen
// within -timeout or a step fails. It always starts from a fresh cluster, so it can be run again
// without cleaning up; the cluster stays up afterwards for exploring.
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flags were printed
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}
