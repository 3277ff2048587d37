package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderElection configures leader election on a coordination.k8s.io Lease.
type LeaderElection struct {
	// Enabled runs the reconcile loop only while this process holds the Lease.
	Enabled bool
	// Namespace and Name locate the Lease.
	Namespace, Name string
	// Identity names this candidate (the pod name); unique among replicas.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod as in client-go (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Client reads and writes the Lease; default Options.Client. A client of its own (own rate
	// limiter) keeps a burst of node writes from delaying the renewal past RenewDeadline.
	Client kubernetes.Interface
}

// RunOptions configure Run.
type RunOptions struct {
	Options
	LeaderElection LeaderElection
	// Listen is the address of /healthz, /readyz and /metrics ("" serves nothing);
	// "127.0.0.1:0" picks a free port, reported to OnListen.
	Listen string
	// OnListen, if set, is called with the address the HTTP server listens on.
	OnListen func(addr string)
	// Profiling also serves Go's runtime profiles under /debug/pprof/ on Listen.
	Profiling bool
}

// ErrLeadershipLost is returned by Run when this process stopped leading while it was meant to
// keep running: the process should exit, and its restart will stand for election again.
var ErrLeadershipLost = errors.New("leader election lost")

// Run is `prewarm-orchestrator run`: it serves the HTTP endpoints, starts the informers (every
// replica, so a standby takes over from warm caches), and reconciles while it leads. It returns
// nil when ctx ends (SIGTERM), after waiting for the patches in flight, then releasing the Lease.
func Run(ctx context.Context, o RunOptions) error {
	c, err := New(o.Options)
	if err != nil {
		return err
	}
	le := o.LeaderElection.withDefaults()
	var health *leaderelection.HealthzAdaptor
	if le.Enabled {
		if err := le.check(); err != nil {
			return err
		}
		health = leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
	}

	stopHTTP, err := c.serve(o.Listen, health, o.OnListen, o.Profiling)
	if err != nil {
		return err
	}
	defer stopHTTP()

	if err := c.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if !le.Enabled {
		c.log.Info("reconciling (leader election disabled)")
		return c.Lead(ctx)
	}

	var (
		leadErr  error
		leadDone = make(chan struct{})
	)
	if le.Client == nil {
		le.Client = o.Client
	}
	lock := le.lock()
	// The elector runs until this process has stopped leading, not only until ctx ends: it
	// releases the Lease (ReleaseOnCancel) as soon as its context ends, and a standby taking over
	// then would plan while this leader still finishes its writes in flight and Events. Lead
	// stops with ctx; the elector, once Lead has returned.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	go func() {
		select {
		case <-ctx.Done():
		case <-electCtx.Done():
			return
		}
		if lock.acquired.Load() {
			<-leadDone
		}
		stopElection()
	}()
	config := le.electorConfig(lock, leaderelection.LeaderCallbacks{
		OnStartedLeading: func(lctx context.Context) {
			defer close(leadDone)
			c.log.Info("leading: reconciling", "lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
			// Until the Lease is lost, or ctx ends.
			leadCtx, stop := context.WithCancel(lctx)
			defer stop()
			defer context.AfterFunc(ctx, stop)()
			lock.stopLeading(stop, leadDone)
			leadErr = c.Lead(leadCtx)
		},
		OnStoppedLeading: func() {
			c.log.Info("not leading", "lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
		},
		OnNewLeader: func(id string) {
			if id != le.Identity {
				c.log.Info("standing by", "leader", id, "lease", le.Namespace+"/"+le.Name)
			}
		},
	})
	config.WatchDog = health
	elector, err := leaderelection.NewLeaderElector(config)
	if err != nil {
		return fmt.Errorf("configuring leader election on lease %s/%s: %w", le.Namespace, le.Name, err)
	}
	health.SetLeaderElection(elector)
	elector.Run(electCtx)
	if lock.acquired.Load() {
		// Run starts OnStartedLeading in a goroutine and cancels its context on return.
		<-leadDone
	}
	if leadErr != nil {
		return leadErr
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("lease %s/%s: %w", le.Namespace, le.Name, ErrLeadershipLost)
}

// withDefaults returns le with client-go's usual timings where unset.
func (le LeaderElection) withDefaults() LeaderElection {
	if le.LeaseDuration <= 0 {
		le.LeaseDuration = 15 * time.Second
	}
	if le.RenewDeadline <= 0 {
		le.RenewDeadline = 10 * time.Second
	}
	if le.RetryPeriod <= 0 {
		le.RetryPeriod = 2 * time.Second
	}
	return le
}

func (le LeaderElection) check() error {
	if le.Namespace == "" || le.Name == "" || le.Identity == "" {
		return errors.New("leader election: lease namespace, name and identity are required")
	}
	return nil
}

// electorConfig is client-go's configuration of an elector for le on lock with callbacks, which
// releases the Lease when its context ends (ReleaseOnCancel).
func (le LeaderElection) electorConfig(lock resourcelock.Interface, callbacks leaderelection.LeaderCallbacks) leaderelection.LeaderElectionConfig {
	return leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            le.Namespace + "/" + le.Name,
		Callbacks:       callbacks,
	}
}

// lock is the Lease as a resource lock for le.Client.
func (le LeaderElection) lock() *trackingLock {
	return &trackingLock{Interface: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     le.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}}
}

// ErrLeaseHeld is returned by WithLease when another holder kept the Lease for the whole wait.
var ErrLeaseHeld = errors.New("held by another orchestrator")

// WithLease runs fn while this process holds the Lease: the one cycle of `run --once`, which must
// not write next to the event-driven mode's leader or another cycle (a Job created by hand, a run
// from a workstation, the other mode during a switch), since each would count maxConcurrent from
// its own snapshot. It waits up to wait for the Lease: a holder that stopped without releasing it
// loses it once it has gone unrenewed for its lease duration. It releases the Lease once fn has
// returned; if the Lease is lost meanwhile (renewals failing for the renew deadline), fn's context
// ends and WithLease says so. le.Client must be set.
func WithLease(ctx context.Context, le LeaderElection, wait time.Duration, fn func(context.Context) error) error {
	le = le.withDefaults()
	if err := le.check(); err != nil {
		return err
	}
	lock := le.lock()
	name := le.Namespace + "/" + le.Name
	// The elector logs a failed read and tries again: an API server that cannot be reached, or
	// credentials without the right to read the Lease, would only show as a wait. One read first.
	if _, err := le.Client.CoordinationV1().Leases(le.Namespace).Get(ctx, le.Name, metav1.GetOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("lease %s: %w", name, err)
	}
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	var (
		fnErr error
		lost  bool
		done  = make(chan struct{})
		// started (fn runs) and gaveUp (the wait ended, or ctx, first) are decided once, under
		// mu: a Lease acquired just as the wait ends runs no cycle on a cancelled context.
		mu              sync.Mutex
		started, gaveUp bool
	)
	elector, err := leaderelection.NewLeaderElector(le.electorConfig(lock, leaderelection.LeaderCallbacks{
		OnStartedLeading: func(lctx context.Context) {
			defer close(done)
			mu.Lock()
			started = !gaveUp
			mu.Unlock()
			if !started {
				return // the elector releases the Lease: its context is cancelled
			}
			runCtx, stop := context.WithCancel(lctx)
			defer stop()
			defer context.AfterFunc(ctx, stop)()
			lock.stopLeading(stop, done)
			fnErr = fn(runCtx)
			// Ended by neither ctx nor this function: the elector stopped leading (its
			// renewals failed; it cancels lctx, or stops fn first through the lock's release).
			lost = runCtx.Err() != nil && ctx.Err() == nil && electCtx.Err() == nil
			stopElection() // releases the Lease
		},
		OnStoppedLeading: func() {},
	}))
	if err != nil {
		return fmt.Errorf("configuring leader election on lease %s: %w", name, err)
	}
	// Not leading by the end of the wait, or before ctx ends: stop campaigning.
	giveUp := func() {
		mu.Lock()
		defer mu.Unlock()
		if !started {
			gaveUp = true
			stopElection()
		}
	}
	timer := time.AfterFunc(wait, giveUp)
	defer timer.Stop()
	defer context.AfterFunc(ctx, giveUp)()
	elector.Run(electCtx)
	if lock.acquired.Load() {
		<-done // OnStartedLeading runs once the Lease is acquired, whether or not fn does
	}
	mu.Lock()
	ran := started
	mu.Unlock()
	switch {
	case !ran && ctx.Err() != nil:
		return ctx.Err()
	case !ran && elector.GetLeader() != "" && elector.GetLeader() != le.Identity:
		err := fmt.Errorf("lease %s: %w (%q) for %s: the event-driven mode's leader or another run --once of this installation is writing",
			name, ErrLeaseHeld, elector.GetLeader(), wait)
		if last := lock.lastError(); last != nil {
			// Its holder may have stopped: then taking it over failed.
			err = fmt.Errorf("%w (the last attempt to take it: %v)", err, last)
		}
		return err
	case !ran:
		msg := fmt.Sprintf("lease %s: not acquired within %s", name, wait)
		if err := lock.lastError(); err != nil {
			msg += ": " + err.Error()
		}
		return errors.New(msg)
	case lost && fnErr != nil:
		return fmt.Errorf("lease %s: %w mid-cycle (renewals failed for %s): %w", name, ErrLeadershipLost, le.RenewDeadline, fnErr)
	case lost:
		return fmt.Errorf("lease %s: %w mid-cycle (renewals failed for %s)", name, ErrLeadershipLost, le.RenewDeadline)
	}
	return fnErr
}

// trackingLock records whether this candidate ever wrote the Lease as its holder: the elector
// then has started (or is about to start) OnStartedLeading, which Run must wait for.
//
// It also holds back the elector's release of the Lease (ReleaseOnCancel) until this process has
// stopped leading. The elector releases it as soon as renewing fails too (an API server that did
// not answer for the renew deadline, then does), before it cancels the leading context: a
// standby would take over within a retry period and plan while this leader's writes in flight
// still land, and the two would count maxConcurrent each on its own. A release waits at most as
// long as the elector gives it (the renew deadline); after that the Lease expires on its own.
type trackingLock struct {
	resourcelock.Interface
	acquired atomic.Bool

	mu      sync.Mutex
	stop    context.CancelFunc // stops leading
	done    <-chan struct{}    // closed once leading has stopped
	lastErr error              // of the last Create or Update, nil if it succeeded
}

// lastError returns the error of the last write of the Lease, nil if it succeeded or none was made.
func (l *trackingLock) lastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

func (l *trackingLock) wrote(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastErr = err
}

// stopLeading records how to stop leading, and when that is done.
func (l *trackingLock) stopLeading(stop context.CancelFunc, done <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stop, l.done = stop, done
}

func (l *trackingLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, r)
	l.wrote(err)
	if err == nil && r.HolderIdentity == l.Identity() {
		l.acquired.Store(true)
	}
	return err
}

func (l *trackingLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	if r.HolderIdentity == "" { // a release
		l.mu.Lock()
		stop, done := l.stop, l.done
		l.mu.Unlock()
		if stop != nil {
			stop()
			select {
			case <-done:
			case <-ctx.Done():
				return fmt.Errorf("not releasing the Lease while writes are in flight: %w", ctx.Err())
			}
		}
	}
	err := l.Interface.Update(ctx, r)
	l.wrote(err)
	if err == nil && r.HolderIdentity == l.Identity() {
		l.acquired.Store(true)
	}
	return err
}

// serve starts the HTTP endpoints and returns a function that stops them.
func (c *Controller) serve(addr string, health *leaderelection.HealthzAdaptor, onListen func(string), profiling bool) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if health != nil {
			if err := health.Check(r); err != nil {
				http.Error(w, "leader election: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.Synced() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if c.metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(c.metrics.Registry, promhttp.HandlerOpts{Registry: c.metrics.Registry}))
	}
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("HTTP server stopped", "address", ln.Addr().String(), "error", err)
		}
	}()
	c.log.Info("serving /healthz, /readyz, /metrics", "address", ln.Addr().String())
	if onListen != nil {
		onListen(ln.Addr().String())
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
