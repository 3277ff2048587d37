package cli

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The runtime's soft limit is 90% of the container's; GOMEMLIMIT, when set, wins; a malformed
// value sets nothing and says why.
func TestSetMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}

	debug.SetMemoryLimit(math.MaxInt64)
	got, err := SetMemoryLimit(env(MemoryLimitEnv, "268435456")) // 256Mi
	require.NoError(t, err)
	assert.Equal(t, int64(241591911), got)
	assert.Equal(t, got, debug.SetMemoryLimit(-1), "the runtime's limit")

	for name, e := range map[string]func(string) string{
		"GOMEMLIMIT set":  env("GOMEMLIMIT", "100MiB", MemoryLimitEnv, "268435456"),
		"no memory limit": env(),
	} {
		debug.SetMemoryLimit(math.MaxInt64)
		got, err := SetMemoryLimit(e)
		require.NoError(t, err, name)
		assert.Zero(t, got, name)
		assert.Equal(t, int64(math.MaxInt64), debug.SetMemoryLimit(-1), "%s: left alone", name)
	}

	for _, bad := range []string{"256Mi", "-1", "0"} {
		debug.SetMemoryLimit(math.MaxInt64)
		_, err := SetMemoryLimit(env(MemoryLimitEnv, bad))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), MemoryLimitEnv)
		assert.Equal(t, int64(math.MaxInt64), debug.SetMemoryLimit(-1), "%q: left alone", bad)
	}
}
