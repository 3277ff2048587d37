package orchestrator_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// requestCounter counts the API requests made through a client, and can make PATCH requests fail
// after a number of them (a cycle that dies half-way).
type requestCounter struct {
	mu           sync.Mutex
	requests     []string // "VERB path"
	responses    []string // "VERB path code"
	failAfter    int      // fail PATCHes once this many succeeded; 0: never
	patchesMade  int
	patchFailure error
	// beforePatch, when set, runs before each PATCH is sent (another writer slipping in
	// between the client's read and its write).
	beforePatch func(*http.Request)
	// dropResponse, when set, is asked after each PATCH the API server answered: true loses the
	// answer (the patch applied, the client told only that the connection broke).
	dropResponse func(*http.Request, *http.Response) bool
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if c.beforePatch != nil && req.Method == http.MethodPatch {
			c.beforePatch(req)
		}
		resp, err := c.roundTrip(rt, req)
		if resp != nil {
			c.mu.Lock()
			c.responses = append(c.responses, fmt.Sprintf("%s %s %d", req.Method, req.URL.Path, resp.StatusCode))
			c.mu.Unlock()
			if c.dropResponse != nil && req.Method == http.MethodPatch && c.dropResponse(req, resp) {
				_ = resp.Body.Close()
				return nil, errors.New("injected: connection lost before the response")
			}
		}
		return resp, err
	})
}

// roundTrip records the request and sends it, or fails it as failAfter says.
func (c *requestCounter) roundTrip(rt http.RoundTripper, req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.requests = append(c.requests, req.Method+" "+req.URL.Path)
	if req.Method == http.MethodPatch {
		if c.failAfter > 0 && c.patchesMade >= c.failAfter {
			// Under the lock: the engine's PATCH workers run in parallel.
			if c.patchFailure == nil {
				c.patchFailure = errors.New("injected: connection lost mid-cycle")
			}
			err := c.patchFailure
			c.mu.Unlock()
			return nil, err
		}
		c.patchesMade++
	}
	c.mu.Unlock()
	return rt.RoundTrip(req)
}

// answered returns how many responses to requests with the method and a path ending in suffix
// had the status code.
func (c *requestCounter) answered(method, suffix string, code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.responses {
		if strings.HasPrefix(r, method+" ") && strings.HasSuffix(r, fmt.Sprintf("%s %d", suffix, code)) {
			n++
		}
	}
	return n
}

// count returns how many requests had the method and a path containing fragment.
func (c *requestCounter) count(method, fragment string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.requests {
		if strings.HasPrefix(r, method+" ") && strings.Contains(r, fragment) {
			n++
		}
	}
	return n
}

// reset forgets the requests and responses seen so far.
func (c *requestCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests, c.responses = nil, nil
}

func (c *requestCounter) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requests...)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
