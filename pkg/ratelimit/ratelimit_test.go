package ratelimit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"
)

// start runs Wait in a goroutine and returns the channel its result arrives on.
func start(l *Limiter, ctx context.Context) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- l.Wait(ctx) }()
	return ch
}

// waitQueued waits until the limiter's queues hold urgent, expedited and normal waiters.
func waitQueued(t *testing.T, l *Limiter, urgent, expedited, normal int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return l.waiting() == [levels]int{urgent, expedited, normal}
	}, 5*time.Second, time.Millisecond, "waiters queued")
}

func granted(ch <-chan error) bool {
	select {
	case err := <-ch:
		return err == nil
	case <-time.After(5 * time.Second):
		return false
	}
}

// assertBlocked asserts that the waiters whose results arrive on chs are still queued, the
// queues holding urgent, expedited and normal waiters, at the clock's current time. It first hands out
// under the limiter's lock what its timer would when it fires at this time, so that a wrong
// grant the timer's goroutine has not got to yet is made, and seen, here: not waiting for a
// grant for some milliseconds, which a slow goroutine would outlast.
func assertBlocked(t *testing.T, l *Limiter, urgent, expedited, normal int, chs []<-chan error, msg string) {
	t.Helper()
	l.mu.Lock()
	l.dispatchLocked()
	l.mu.Unlock()
	assert.Equal(t, [levels]int{urgent, expedited, normal}, l.waiting(), "waiters queued (urgent, expedited, normal): %s", msg)
	for i, ch := range chs {
		select {
		case err := <-ch:
			assert.Fail(t, "a waiter was answered", "waiter %d: %v: %s", i, err, msg)
		default:
		}
	}
}

func TestBurstThenRate(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 6, 3, clk) // a token every 100 ms; 3 reserved for urgent requests
	for range 3 {
		require.NoError(t, l.Wait(context.Background()))
	}
	assert.False(t, l.TryAccept(), "normal requests leave the reserve")
	ch := start(l, context.Background())
	waitQueued(t, l, 0, 0, 1)
	clk.Step(50 * time.Millisecond)
	assertBlocked(t, l, 0, 0, 1, []<-chan error{ch}, "half a token is not a token")
	clk.Step(50 * time.Millisecond)
	assert.True(t, granted(ch))
	clk.Step(time.Hour)
	for range 3 {
		assert.True(t, l.TryAccept(), "refills up to burst")
	}
	assert.False(t, l.TryAccept())
	for range 3 {
		require.NoError(t, l.Wait(Urgent(context.Background())), "the reserve is there for urgent requests")
	}
	u := start(l, Urgent(context.Background()))
	waitQueued(t, l, 1, 0, 0)
	assertBlocked(t, l, 1, 0, 0, []<-chan error{u}, "never beyond burst")
}

func TestReserveServesUrgentBurst(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 4, 2, clk)
	for range 2 {
		require.NoError(t, l.Wait(context.Background()))
	}
	require.NoError(t, l.Wait(Urgent(context.Background())), "the reserve is the urgent requests'")
	// One token left; the normal waiter needs 3: its timer is due in 200 ms.
	n := start(l, context.Background())
	waitQueued(t, l, 0, 0, 1)
	require.NoError(t, l.Wait(Urgent(context.Background())), "urgent requests pass a waiting normal one")
	// The bucket is empty: an urgent request needs 1 token (100 ms), before n's timer.
	u := start(l, Urgent(context.Background()))
	waitQueued(t, l, 1, 0, 1)
	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(u), "the timer is re-armed for the earlier urgent request")
	// u is granted before the timer is armed for n, under the limiter's lock: stepping the clock
	// earlier would leave that timer due after the step.
	waitQueued(t, l, 0, 0, 1)
	assertBlocked(t, l, 0, 0, 1, []<-chan error{n}, "n needs 3 tokens")
	clk.Step(300 * time.Millisecond)
	assert.True(t, granted(n))
}

func TestUrgentBeforeWaitingNormal(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 1, 0, clk)
	require.NoError(t, l.Wait(context.Background()))
	n1 := start(l, context.Background())
	n2 := start(l, context.Background())
	waitQueued(t, l, 0, 0, 2)
	u := start(l, Urgent(context.Background()))
	waitQueued(t, l, 1, 0, 2)

	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(u), "the urgent request takes the next token")
	waitQueued(t, l, 0, 0, 2)
	assertBlocked(t, l, 0, 0, 2, []<-chan error{n1, n2}, "the urgent request took the token")

	clk.Step(100 * time.Millisecond)
	waitQueued(t, l, 0, 0, 1)
	clk.Step(100 * time.Millisecond)
	waitQueued(t, l, 0, 0, 0)
	assert.True(t, granted(n1) && granted(n2), "normal requests follow, in order")
}

// Expedited requests pass waiting normal ones and follow waiting urgent ones, and leave the
// reserve to urgent ones as normal requests do.
func TestExpeditedBetweenUrgentAndNormal(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 3, 1, clk) // a token every 100 ms; 1 reserved for urgent requests
	for range 2 {
		require.NoError(t, l.Wait(context.Background()))
	}
	// One token left, the reserve.
	e0 := start(l, Expedited(context.Background()))
	waitQueued(t, l, 0, 1, 0)
	assertBlocked(t, l, 0, 1, 0, []<-chan error{e0}, "expedited requests leave the reserve")
	require.NoError(t, l.Wait(Urgent(context.Background())), "the reserve is the urgent requests'")

	n := start(l, context.Background())
	waitQueued(t, l, 0, 1, 1)
	e1 := start(l, Expedited(context.Background()))
	waitQueued(t, l, 0, 2, 1)
	u := start(l, Urgent(context.Background()))
	waitQueued(t, l, 1, 2, 1)

	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(u), "the urgent request takes the first token")
	waitQueued(t, l, 0, 2, 1)
	clk.Step(100 * time.Millisecond)
	assertBlocked(t, l, 0, 2, 1, []<-chan error{e0, e1, n}, "one token is the reserve")
	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(e0), "expedited requests next, in order")
	waitQueued(t, l, 0, 1, 1)
	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(e1))
	waitQueued(t, l, 0, 0, 1)
	assertBlocked(t, l, 0, 0, 1, []<-chan error{n}, "the normal request came first, and is served last")
	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(n))
}

func TestNoBypassOfWaiters(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 1, 0, clk)
	require.NoError(t, l.Wait(context.Background()))
	n := start(l, context.Background())
	waitQueued(t, l, 0, 0, 1)
	assert.False(t, l.TryAccept(), "TryAccept does not jump the queue")
	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(n))
}

func TestCancelledWaiterTakesNoToken(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 1, 0, clk)
	require.NoError(t, l.Wait(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	c := start(l, ctx)
	n := start(l, context.Background())
	waitQueued(t, l, 0, 0, 2)
	cancel()
	assert.ErrorIs(t, <-c, context.Canceled)
	waitQueued(t, l, 0, 0, 1)
	clk.Step(100 * time.Millisecond)
	assert.True(t, granted(n), "the token the cancelled request would have had goes to the next")

	done, stop := context.WithCancel(context.Background())
	stop()
	assert.ErrorIs(t, l.Wait(done), context.Canceled, "an ended context fails at once")
}

func TestUrgentContext(t *testing.T) {
	assert.False(t, IsUrgent(context.Background()))
	assert.True(t, IsUrgent(Urgent(context.Background())))
	ctx, cancel := context.WithTimeout(Urgent(context.Background()), time.Minute)
	defer cancel()
	assert.True(t, IsUrgent(ctx), "derived contexts stay urgent")

	assert.Equal(t, normal, levelOf(context.Background()))
	assert.Equal(t, expedited, levelOf(Expedited(context.Background())))
	assert.Equal(t, urgent, levelOf(Urgent(Expedited(context.Background()))), "urgent wins")
	assert.Equal(t, urgent, levelOf(Expedited(Urgent(context.Background()))))
}

func TestRealClockRate(t *testing.T) {
	// 200 requests at 1,000 QPS with a burst of 100 take at least the 100 ms that the 100
	// requests beyond the burst need (no reserve: the whole burst is for normal requests).
	l := New(1000, 100, 0)
	begin := time.Now()
	for range 200 {
		require.NoError(t, l.Wait(context.Background()))
	}
	assert.GreaterOrEqual(t, time.Since(begin), 95*time.Millisecond)
	assert.InDelta(t, 1000, l.QPS(), 0.001)
}

func TestReserveNeverTakesTheWholeBurst(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 2, 5, clk) // reserve clamped to 1
	assert.True(t, l.TryAccept(), "normal requests keep at least one token of the burst")
	assert.False(t, l.TryAccept())
	require.NoError(t, l.Wait(Urgent(context.Background())))
}

// A waiter granted its token as its context ended hands the token back, and the bucket still
// never holds more than burst.
func TestHandedBackTokenNeverExceedsBurst(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(10, 2, 0, clk)
	require.True(t, l.TryAccept())
	require.True(t, l.TryAccept())
	cancelGranted := func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.cancelLocked(&waiter{ch: make(chan struct{}), granted: true}, normal)
		return l.tokens
	}
	assert.Equal(t, 1.0, cancelGranted(), "empty (the clock stands still): the token is back")
	assert.True(t, l.TryAccept(), "and the next request takes it")
	require.Equal(t, 1.0, cancelGranted())
	assert.Equal(t, 2.0, cancelGranted(), "full")
	assert.Equal(t, 2.0, cancelGranted(), "full: the token handed back is not added beyond burst")
}

// At an absurdly small qps the wait for the next token would overflow a Duration and turn
// negative: the timer would fire at once, again and again. It is armed at most maxWait ahead.
func TestTinyQPSDoesNotSpin(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(1e-12, 1, 0, clk)
	require.NoError(t, l.Wait(context.Background()))
	ch := start(l, context.Background())
	waitQueued(t, l, 0, 0, 1)
	l.mu.Lock()
	due := l.due
	l.mu.Unlock()
	assert.Equal(t, clk.Now().Add(maxWait), due)
	clk.Step(time.Minute)
	assertBlocked(t, l, 0, 0, 1, []<-chan error{ch}, "the next token is eons away")
}

// A request's check runs once its token is granted, not while it waits; a check that fails is
// the request's error, and its token goes to the next waiter at once.
func TestCheckRunsOnceGranted(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	l := NewWithClock(1, 1, 0, clk) // a token a second
	require.NoError(t, l.Wait(context.Background()))

	errHeld := errors.New("no longer wanted")
	var checks atomic.Int32
	held := start(l, WithCheck(context.Background(), func() error { checks.Add(1); return errHeld }))
	waitQueued(t, l, 0, 0, 1)
	next := start(l, context.Background())
	waitQueued(t, l, 0, 0, 2)
	assertBlocked(t, l, 0, 0, 2, []<-chan error{held, next}, "no token yet")
	assert.Zero(t, checks.Load(), "no check while waiting")

	clk.Step(time.Second)
	select {
	case err := <-held:
		assert.ErrorIs(t, err, errHeld)
	case <-time.After(5 * time.Second):
		t.Fatal("the checked request was not answered")
	}
	assert.Equal(t, int32(1), checks.Load())
	assert.True(t, granted(next), "the token the check gave back goes to the next waiter, not a second later")

	passed := WithCheck(context.Background(), func() error { return nil })
	clk.Step(time.Second)
	assert.NoError(t, l.Wait(passed), "a check that passes lets the request go")
	assert.NoError(t, Check(WithCheck(passed, nil)), "a nil check removes it")
	assert.ErrorIs(t, Check(WithCheck(context.Background(), func() error { return errHeld })), errHeld)
}
