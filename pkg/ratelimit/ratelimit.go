// Package ratelimit is the client-side rate limiter of the orchestrator's Kubernetes client: a
// token bucket, as client-go's default (qps tokens a second, at most burst), that puts requests
// whose context is marked Urgent (writing a node release: a user waits for that node) first, and
// those marked Expedited (the other writes of a node on its way to its release) next.
//
// Urgent requests are served before any waiting request of the other levels, expedited ones
// before any waiting normal request, and a share of the burst can be reserved for urgent ones:
// an expedited or normal request then takes a token only while more than the reserve are left.
// Under a long run of normal writes (a thousand nodes joining at once) the bucket stays at the
// reserve, a burst of releases that size goes out at once instead of queueing at qps, and an
// expedited request waits for the next token, not behind the run. Over time the rate never
// exceeds qps, nor a burst the configured burst.
package ratelimit

import (
	"context"
	"slices"
	"sync"
	"time"

	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"
)

type urgentKey struct{}

// Urgent marks the requests made with the returned context as urgent.
func Urgent(ctx context.Context) context.Context { return context.WithValue(ctx, urgentKey{}, true) }

// IsUrgent reports whether ctx was marked by Urgent.
func IsUrgent(ctx context.Context) bool { v, _ := ctx.Value(urgentKey{}).(bool); return v }

type expeditedKey struct{}

// Expedited marks the requests made with the returned context as expedited: served after urgent
// ones, before normal ones. A context marked by Urgent too is urgent.
func Expedited(ctx context.Context) context.Context {
	return context.WithValue(ctx, expeditedKey{}, true)
}

// IsExpedited reports whether ctx was marked by Expedited.
func IsExpedited(ctx context.Context) bool { v, _ := ctx.Value(expeditedKey{}).(bool); return v }

type checkKey struct{}

// WithCheck returns a context whose requests run check once the limiter grants them a token,
// right before they are sent: a request that waited long for its token may no longer be wanted
// (a node's entry after the installation's uninstall began). An error from check is what Wait
// returns, and client-go fails the request with it unsent; the token goes back to the bucket. A
// nil check removes the one ctx carries.
func WithCheck(ctx context.Context, check func() error) context.Context {
	return context.WithValue(ctx, checkKey{}, check)
}

// Check runs the check ctx carries (see WithCheck), if any: for a request that no limiter holds
// back, or one sent again without waiting.
func Check(ctx context.Context) error {
	if check, _ := ctx.Value(checkKey{}).(func() error); check != nil {
		return check()
	}
	return nil
}

// The levels of requests, served in this order.
const (
	urgent = iota
	expedited
	normal
	levels
)

// Clock is what the limiter needs of a clock; k8s.io/utils/clock's real and fake clocks have it.
type Clock interface {
	clock.PassiveClock
	AfterFunc(d time.Duration, f func()) clock.Timer
}

// Limiter is a token bucket of qps tokens a second holding at most burst, with a queue of
// waiters per level. It implements client-go's flowcontrol.RateLimiter.
type Limiter struct {
	clock Clock
	qps   float64
	burst float64
	// reserve is how many tokens expedited and normal requests leave for urgent ones.
	reserve float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
	queues [levels][]*waiter
	// timer, due and gen: the one armed timer, when it fires, and its generation (a timer
	// replaced by an earlier one may still fire; only the current one's firing clears it).
	timer   clock.Timer
	due     time.Time
	gen     uint64
	stopped bool
}

var _ flowcontrol.RateLimiter = (*Limiter)(nil)

type waiter struct {
	ch      chan struct{}
	granted bool
}

// maxWait bounds how far ahead the timer for the next token is armed.
const maxWait = time.Hour

// New returns a limiter that starts full (burst tokens), as client-go's does, and keeps reserve
// tokens (at most burst-1) for urgent requests.
func New(qps float32, burst, reserve int) *Limiter {
	return NewWithClock(qps, burst, reserve, clock.RealClock{})
}

// NewWithClock is New with an injected clock, for tests.
func NewWithClock(qps float32, burst, reserve int, c Clock) *Limiter {
	burst = max(burst, 1)
	reserve = min(max(reserve, 0), burst-1)
	return &Limiter{clock: c, qps: float64(qps), burst: float64(burst), reserve: float64(reserve), tokens: float64(burst), last: c.Now()}
}

// Wait blocks until the request may be sent, or ctx ends (then it returns ctx's error and takes
// no token), then runs ctx's check (see WithCheck).
func (l *Limiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	level := levelOf(ctx)
	l.mu.Lock()
	if l.takeLocked(level) {
		l.mu.Unlock()
		return l.checked(ctx)
	}
	w := &waiter{ch: make(chan struct{})}
	l.queues[level] = append(l.queues[level], w)
	l.scheduleLocked()
	l.mu.Unlock()

	select {
	case <-w.ch:
		return l.checked(ctx)
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		l.cancelLocked(w, level)
		return ctx.Err()
	}
}

// levelOf returns the level of the requests made with ctx.
func levelOf(ctx context.Context) int {
	switch {
	case IsUrgent(ctx):
		return urgent
	case IsExpedited(ctx):
		return expedited
	}
	return normal
}

// checked runs ctx's check for a request granted a token, and hands the token back when the
// check fails: the request is not sent.
func (l *Limiter) checked(ctx context.Context) error {
	err := Check(ctx)
	if err != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.giveBackLocked()
	}
	return err
}

// cancelLocked withdraws a waiter whose context ended: out of its queue, or, granted as the
// context ended, its token back to the bucket for the next waiter.
func (l *Limiter) cancelLocked(w *waiter, level int) {
	if w.granted {
		l.giveBackLocked()
	} else if i := slices.Index(l.queues[level], w); i >= 0 {
		l.queues[level] = slices.Delete(l.queues[level], i, i+1)
	}
}

// giveBackLocked returns a granted token that was not used to the bucket (never beyond burst),
// for the next waiter.
func (l *Limiter) giveBackLocked() {
	l.refillLocked()
	l.tokens = min(l.burst, l.tokens+1)
	l.dispatchLocked()
}

// Accept blocks until a token is available.
func (l *Limiter) Accept() { _ = l.Wait(context.Background()) }

// TryAccept takes a token if one is available now and nobody is waiting for one.
func (l *Limiter) TryAccept() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeLocked(normal)
}

// QPS returns the refill rate.
func (l *Limiter) QPS() float32 { return float32(l.qps) }

// Stop stops the refill timer; waiters then wait until their context ends.
func (l *Limiter) Stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
}

// takeLocked takes a token for a request of level when one is available and no request of the
// same or a higher priority is waiting (waiters are served in order).
func (l *Limiter) takeLocked(level int) bool {
	if l.stopped {
		return false
	}
	for i := urgent; i <= level; i++ {
		if len(l.queues[i]) > 0 {
			return false
		}
	}
	l.refillLocked()
	if l.tokens < l.need(level) {
		return false
	}
	l.tokens--
	return true
}

// need is how many tokens must be in the bucket for a request of level to take one.
func (l *Limiter) need(level int) float64 {
	if level == urgent {
		return 1
	}
	return 1 + l.reserve
}

func (l *Limiter) refillLocked() {
	now := l.clock.Now()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(l.burst, l.tokens+d.Seconds()*l.qps)
	}
	l.last = now
}

// dispatchLocked grants the available tokens to the waiters, level by level, and arms the
// timer for the next token while any are left waiting.
func (l *Limiter) dispatchLocked() {
	l.refillLocked()
	for level := range l.queues {
		for len(l.queues[level]) > 0 && l.tokens >= l.need(level) {
			w := l.queues[level][0]
			l.queues[level] = l.queues[level][1:]
			l.tokens--
			w.granted = true
			close(w.ch)
		}
	}
	l.scheduleLocked()
}

// scheduleLocked arms the timer for the moment the first waiter can be served, if any waits.
func (l *Limiter) scheduleLocked() {
	if l.stopped {
		return
	}
	level := slices.IndexFunc(l.queues[:], func(q []*waiter) bool { return len(q) > 0 })
	if level < 0 {
		return
	}
	l.refillLocked()
	// Capped: at an absurdly small qps the product would overflow a Duration (and turn negative).
	wait := maxWait
	if secs := (l.need(level) - l.tokens) / l.qps; secs < maxWait.Seconds() {
		wait = max(time.Duration(secs*float64(time.Second)), 0)
	}
	due := l.clock.Now().Add(wait)
	if l.timer != nil {
		if !l.due.After(due) {
			return // armed early enough
		}
		l.timer.Stop() // a request of a higher level arrived: serve it sooner
	}
	l.gen++
	gen := l.gen
	l.due = due
	// The callback runs in a goroutine of its own: a fake clock calls it with its lock held.
	l.timer = l.clock.AfterFunc(wait, func() { go l.fire(gen) })
}

func (l *Limiter) fire(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen == l.gen {
		l.timer = nil
	}
	l.dispatchLocked()
}

// waiting returns how many requests wait at each level: urgent, expedited, normal.
func (l *Limiter) waiting() [levels]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n [levels]int
	for level, q := range l.queues {
		n[level] = len(q)
	}
	return n
}
