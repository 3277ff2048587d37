package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPhasesFromLog(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	log := `time=2026-11-25T15:00:00.010Z level=DEBUG msg=planned node=n1 action=adopt reason=joined-tainted
time=2026-11-25T15:00:00.020Z level=INFO msg=adopt node=n1 reason=joined-tainted message="x"
time=2026-11-25T15:00:01.005Z level=DEBUG msg=planned node=n1 action=release reason=warm
time=2026-11-25T15:00:01.030Z level=INFO msg=release node=n1 reason=warm message="warmer pod w is Ready"
time=2026-11-25T15:00:01.100Z level=DEBUG msg=planned node=n2 action=release reason=warm
time=2026-11-25T15:00:01.150Z level=INFO msg=release node=n2 reason=warm message="y"
`
	path := filepath.Join(t.TempDir(), "log")
	require.NoError(t, os.WriteFile(path, []byte(log), 0o600))
	w := &watcher{
		readyAt: map[string]time.Time{"n1": t0.Add(time.Second), "n2": t0.Add(1110 * time.Millisecond), "n3": t0},
		freeAt:  map[string]time.Time{"n1": t0.Add(1032 * time.Millisecond), "n2": t0.Add(1160 * time.Millisecond)},
	}
	got := w.phases(path, []string{"n1", "n2", "n3"})
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{-10 * ms, 5 * ms}, got[0], "reaction: ready seen -> planned (n2's pod event reached the orchestrator first)")
	assert.Equal(t, []time.Duration{25 * ms, 50 * ms}, got[1], "write: planned -> patch returned")
	assert.Equal(t, []time.Duration{2 * ms, 10 * ms}, got[2], "delivery: returned -> seen released")
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	assert.Equal(t, time.Duration(50), percentile(s, 50))
	assert.Equal(t, time.Duration(99), percentile(s, 99))
	assert.Equal(t, time.Duration(100), percentile(s, 100))
	assert.Equal(t, time.Duration(0), percentile(nil, 99))
}
