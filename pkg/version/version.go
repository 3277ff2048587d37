// Package version holds the build's version, set with -ldflags -X at build time.
package version

import (
	"fmt"
	"runtime"
)

// Set by the build: -X github.com/image-prewarmer/image-prewarmer/pkg/version.Version=...
var (
	Version = "dev"
	Commit  = "unknown"
)

// String returns "VERSION (commit COMMIT, GOVERSION)".
func String() string {
	return fmt.Sprintf("%s (commit %s, %s)", Version, Commit, runtime.Version())
}
