// Command prewarm-orchestrator keeps upgraded nodes closed to user pods until their base images
// are on disk. See the README and docs/ for how it works.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	// Mozilla's CA roots, used only where the system has none: the image `make image` builds holds
	// the binary alone, and an https Pushgateway must still verify.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/image-prewarmer/image-prewarmer/pkg/cli"
)

func main() {
	if _, err := cli.SetMemoryLimit(os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "prewarm-orchestrator: warning: "+err.Error())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
