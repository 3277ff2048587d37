package cli

import (
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// maxClockSkew is how far this host's clock may be from the API server's before a warning: well
// above the Date header's one-second resolution and a response's latency, well below the
// timers' (cancelAfter, the timeouts) and the 5 minutes past which a recorded time in the future
// is repaired.
const maxClockSkew = 30 * time.Second

// clockSkew compares the Date header of the API server's answers with this host's clock and
// logs a warning, once per process, when they differ by more than maxClockSkew. The orchestrator
// compares node and pod times (the API server's and the kubelets') and its own records (written
// by whichever host ran the last cycle) with this clock: a skewed host moves every timer by the
// skew, and a workstation's `status` would show problems the cluster's orchestrator does not see.
type clockSkew struct {
	log  *slog.Logger
	now  func() time.Time
	once sync.Once
}

// wrap returns rt checking each answer's Date header; use it with rest.Config.Wrap. Every client
// built from the configuration shares c, so the warning comes once.
func (c *clockSkew) wrap(rt http.RoundTripper) http.RoundTripper {
	return &clockSkewTransport{rt: rt, c: c}
}

type clockSkewTransport struct {
	rt http.RoundTripper
	c  *clockSkew
}

func (t *clockSkewTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err == nil && resp != nil {
		t.c.check(resp.Header.Get("Date"))
	}
	return resp, err
}

// WrappedRoundTripper lets client-go's utilities (k8s.io/apimachinery/pkg/util/net) reach the
// transport underneath.
func (t *clockSkewTransport) WrappedRoundTripper() http.RoundTripper { return t.rt }

// check compares a Date header's time with this host's clock.
func (c *clockSkew) check(date string) {
	server, err := http.ParseTime(date)
	if err != nil {
		return // no Date header (a proxy may drop it): nothing to compare
	}
	skew := c.now().Sub(server)
	if skew <= maxClockSkew && skew >= -maxClockSkew {
		return
	}
	c.once.Do(func() {
		way := "ahead of"
		if skew < 0 {
			way, skew = "behind", -skew
		}
		c.log.Warn("this host's clock is "+skew.Truncate(time.Second).String()+" "+way+" the API server's (its Date header): "+
			"times on the nodes and the timers (cancelAfter, maxWaitForUpgrade, maxWaitForWarm) are read against this clock, so they are off by as much; fix the host's time synchronization",
			"skew", skew.Truncate(time.Second).String(), "direction", way)
	})
}
