package cli

import (
	"fmt"
	"runtime/debug"
	"strconv"
)

// MemoryLimitEnv names the environment variable the chart sets to the container's memory limit
// in bytes (the downward API's limits.memory; without a limit, the node's allocatable memory).
const MemoryLimitEnv = "PREWARM_MEMORY_LIMIT"

// SetMemoryLimit gives the Go runtime a soft memory limit of 90% of the container's memory limit
// (MemoryLimitEnv), unless GOMEMLIMIT sets one: the garbage collector works harder as the heap
// nears it, rather than let the kernel kill the process. The tenth left is for what the runtime
// does not count (the binary's mapped pages above all), the headroom the Go GC guide advises.
// It returns the limit set, 0 when it set none.
func SetMemoryLimit(getenv func(string) string) (int64, error) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	v := getenv(MemoryLimitEnv)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: not a positive number of bytes; no memory limit set", MemoryLimitEnv, v)
	}
	limit := n - n/10
	debug.SetMemoryLimit(limit)
	return limit, nil
}
