package cli

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answering is a transport whose answers carry the Date header date ("" for none).
type answering struct{ date string }

func (a answering) RoundTrip(*http.Request) (*http.Response, error) {
	h := http.Header{}
	if a.date != "" {
		h.Set("Date", a.date)
	}
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: http.NoBody}, nil
}

// A host whose clock is off the API server's by more than maxClockSkew says so, once per process
// (every client shares the check); the Date header's resolution and a response's latency do not.
func TestClockSkewIsWarnedOnce(t *testing.T) {
	host := time.Date(2026, 11, 29, 12, 0, 0, 700_000_000, time.UTC)
	for _, tc := range []struct {
		name   string
		server time.Time
		date   string // overrides server's
		want   string
	}{
		{name: "within the header's resolution", server: host.Add(-time.Second)},
		{name: "seconds off", server: host.Add(20 * time.Second)},
		{name: "no Date header", date: "-"},
		{name: "an unreadable Date header", date: "yesterday"},
		{name: "ahead", server: host.Add(-10 * time.Minute), want: "this host's clock is 10m0s ahead of the API server's"},
		{name: "behind", server: host.Add(2*time.Hour + 3*time.Second), want: "this host's clock is 2h0m2s behind the API server's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			c := &clockSkew{log: slog.New(slog.NewTextHandler(&log, nil)), now: func() time.Time { return host }}
			date := tc.server.UTC().Format(http.TimeFormat)
			switch tc.date {
			case "-":
				date = ""
			case "":
			default:
				date = tc.date
			}
			for _, rt := range []http.RoundTripper{c.wrap(answering{date}), c.wrap(answering{date})} {
				for range 2 {
					resp, err := rt.RoundTrip(&http.Request{})
					require.NoError(t, err)
					require.NoError(t, resp.Body.Close())
				}
			}
			if tc.want == "" {
				assert.Empty(t, log.String())
				return
			}
			assert.Equal(t, 1, strings.Count(log.String(), "level=WARN"), "once for two clients' four answers:\n%s", log.String())
			assert.Contains(t, log.String(), tc.want)
			assert.Contains(t, log.String(), "cancelAfter, maxWaitForUpgrade, maxWaitForWarm")
		})
	}
}
