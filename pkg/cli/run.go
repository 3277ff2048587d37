package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/controller"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/version"
)

// oneShotGCPercent is the GC target of run --once (the Go default is 100).
const oneShotGCPercent = 40

// runOptions are the flags of `run`.
type runOptions struct {
	once        bool
	pushgateway string
	resync      time.Duration
	listen      string
	leaderElect bool
	leaseNS     string
	leaseName   string
	leaseDur    time.Duration
	renew       time.Duration
	retry       time.Duration
	profiling   bool
}

func newRunCommand(o *globalOptions) *cobra.Command {
	ro := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Reconcile the pool: taint nodes in maintenance, release them once warm",
		Long: `run --once runs one reconcile cycle and exits (CronJob mode): exit 0 when the cycle completed
(nodes still waiting is normal), 1 when it could not (API unreachable, RBAC denied), 2 on invalid
config, flags or cluster credentials. With --pushgateway, the cycle's metrics are pushed there
afterwards. It holds the installation's Lease for its cycle, as the event-driven mode's leader
does: it never writes next to that leader or another cycle (a Job created by hand, a run from a
workstation given the same --leader-elect-name), which would count maxConcurrent each on its
own. It waits for the Lease up to twice --leader-elect-lease-duration, then exits 1 naming the
holder; --leader-elect=false runs without it.

run without --once is the event-driven mode (Deployment): informers on the pool's nodes, the
maintenance source and the warmer DaemonSet's revisions and pods; a reconcile on every relevant
change and every --resync (for the timers); leader election on a Lease so that one of several
replicas writes; /healthz, /readyz (caches synced) and /metrics on --listen. SIGTERM releases the
Lease and exits 0. Its flags (--listen, --resync, --profiling) are refused with --once.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ro.leaderElect {
				if err := ro.validateLeaderElection(); err != nil {
					return &ConfigError{err}
				}
				if !o.dryRun && ro.leaseName == "" {
					o.checkConfig = checkDefaultLeaseName
				}
			}
			if ro.once {
				if err := refuseEventDrivenFlags(cmd); err != nil {
					return err
				}
				if err := ValidatePushgateway(ro.pushgateway); err != nil {
					return &ConfigError{err}
				}
				return runOnce(cmd.Context(), o, ro)
			}
			return runWatch(cmd.Context(), o, ro)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&ro.once, "once", false, "run one cycle and exit (CronJob mode)")
	f.StringVar(&ro.pushgateway, "pushgateway", "", "with --once: push the cycle's metrics to this Prometheus Pushgateway URL")
	f.DurationVar(&ro.resync, "resync", controller.DefaultResync, "event-driven mode: re-plan this often without a change (timers: cancelAfter, timeouts)")
	f.StringVar(&ro.listen, "listen", ":8080", "event-driven mode: address of /healthz, /readyz and /metrics (empty: none)")
	f.BoolVar(&ro.leaderElect, "leader-elect", true, "write only while holding the Lease: the event-driven mode's replicas take turns, run --once waits for it")
	f.StringVar(&ro.leaseNS, "leader-elect-namespace", "", "namespace of the Lease (default: $POD_NAMESPACE, else the warmer's namespace)")
	f.StringVar(&ro.leaseName, "leader-elect-name", "", "name of the Lease (default: <warmer DaemonSet name>-orchestrator)")
	f.DurationVar(&ro.leaseDur, "leader-elect-lease-duration", 15*time.Second, "how long a candidate waits before taking over a Lease that is not renewed")
	f.DurationVar(&ro.renew, "leader-elect-renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up leading")
	f.BoolVar(&ro.profiling, "profiling", false, "event-driven mode: also serve Go runtime profiles under /debug/pprof/ on --listen")
	f.DurationVar(&ro.retry, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire or renew the Lease")
	return cmd
}

// eventDrivenFlags are the flags of run without --once only.
var eventDrivenFlags = []string{"resync", "listen", "profiling"}

// refuseEventDrivenFlags refuses, with --once, the flags of the event-driven mode given on the
// command line: a one-shot cycle would ignore them.
func refuseEventDrivenFlags(cmd *cobra.Command) error {
	var set []string
	for _, name := range eventDrivenFlags {
		if cmd.Flags().Changed(name) {
			set = append(set, "--"+name)
		}
	}
	if len(set) == 0 {
		return nil
	}
	them := "it"
	if len(set) > 1 {
		them = "them"
	}
	return &ConfigError{fmt.Errorf("%s: for the event-driven mode (run without --once); run --once does not use %s",
		strings.Join(set, ", "), them)}
}

// ValidatePushgateway checks a --pushgateway value as the push will read it: empty (no push), or an
// http or https URL with a host and without query or fragment; without a scheme, http is meant
// (host:9091).
func ValidatePushgateway(raw string) error {
	if raw == "" {
		return nil
	}
	full := raw
	if !strings.Contains(raw, "://") {
		full = "http://" + raw
	}
	u, err := url.Parse(full)
	switch {
	case err != nil:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("--pushgateway %q: not a URL (%w)", raw, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("--pushgateway %q: must be an http or https URL", raw)
	case u.Hostname() == "":
		// ":9091" has a port and no host: the push would go to the pod itself.
		return fmt.Errorf("--pushgateway %q: has no host", raw)
	case strings.ContainsAny(raw, "?#"):
		// The push appends /metrics/job/... to the URL as written: after a query or a fragment,
		// that path would be part of them, and every push would go to the base path.
		return fmt.Errorf("--pushgateway %q: must not have a query or fragment", raw)
	}
	return nil
}

// validateListen checks --listen as the HTTP server will use it: empty (serve nothing) or
// host:port with a numeric port (0 picks a free one).
func validateListen(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err != nil {
		return fmt.Errorf("--listen %q: must be host:port, :port or empty (%w)", addr, err)
	}
	return nil
}

func runOnce(ctx context.Context, o *globalOptions, ro *runOptions) error {
	if os.Getenv("GOGC") == "" {
		// A one-shot cycle holds the whole pool in memory for a second: collect more often for a
		// smaller peak (about 30% less at 5,000 nodes for a few tens of milliseconds of CPU).
		debug.SetGCPercent(oneShotGCPercent)
	}
	var m *metrics.Metrics
	if ro.pushgateway != "" {
		m = metrics.New()
	}
	w, err := o.wire(o.dryRun, m, false)
	if err != nil {
		return err
	}
	le, err := ro.leaderElection(o, w)
	if err != nil {
		return err
	}
	start := time.Now()
	var (
		res engine.Result
		ran bool
	)
	cycle := func(ctx context.Context) error {
		start, ran = time.Now(), true // the cycle's duration, without the wait for the Lease
		var cerr error
		res, cerr = w.engine.RunOnce(ctx)
		return cerr
	}
	if le.Enabled {
		w.log.Debug("taking the Lease for the cycle", "lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
		err = controller.WithLease(ctx, le, 2*le.LeaseDuration, cycle)
	} else {
		err = cycle(ctx)
	}
	if ran {
		// A run that never got the Lease ran no cycle: no duration (its push still says it
		// failed: no new success time).
		m.ObserveCycle("once", time.Since(start), err == nil, time.Now())
	}
	if o.dryRun && (err == nil || errors.Is(err, engine.ErrMaintenanceNotRead)) {
		if perr := printPlan(o.stdout, res.Plan); perr != nil {
			err = perr
		}
	}
	if m != nil {
		// A failed push is logged, not fatal: the cycle itself did its job.
		if perr := m.Push(ctx, ro.pushgateway, w.cfg.Instance); perr != nil {
			w.log.Warn("pushing metrics failed", "pushgateway", ro.pushgateway, "error", perr)
		}
	}
	if err != nil && !ran {
		return fmt.Errorf("cycle not run: %w", err)
	}
	if err != nil {
		return fmt.Errorf("cycle failed: %w", err)
	}
	w.log.Info("cycle complete", summary(res, time.Since(start))...)
	return nil
}

func runWatch(ctx context.Context, o *globalOptions, ro *runOptions) error {
	if ro.pushgateway != "" {
		return &ConfigError{errors.New("--pushgateway: only with --once (the event-driven mode serves /metrics)")}
	}
	if err := validateListen(ro.listen); err != nil {
		return &ConfigError{err}
	}
	if ro.profiling && ro.listen == "" {
		return &ConfigError{errors.New("--profiling: needs --listen (it serves the profiles there), which is empty")}
	}
	if ro.resync <= 0 {
		return &ConfigError{fmt.Errorf("--resync: must be positive, got %s", ro.resync)}
	}
	m := metrics.New()
	w, err := o.wire(o.dryRun, m, true)
	if err != nil {
		return err
	}
	le, err := ro.leaderElection(o, w)
	if err != nil {
		return err
	}
	w.log.Info("starting event-driven mode", "version", version.String(), "instance", w.cfg.Instance,
		"leaderElect", le.Enabled, "lease", le.Namespace+"/"+le.Name, "identity", le.Identity,
		"resync", ro.resync.String(), "dryRun", o.dryRun)
	err = controller.Run(ctx, controller.RunOptions{
		Options: controller.Options{
			Config: w.cfg, Client: w.client, WatchClient: w.watches, Dynamic: w.watchDynamic, Engine: w.engine,
			Logger: w.log, Metrics: m, Resync: ro.resync,
		},
		LeaderElection: le,
		Listen:         ro.listen,
		Profiling:      ro.profiling,
	})
	if err != nil {
		return err
	}
	w.log.Info("stopped")
	return nil
}

// leaderElection is the Lease the flags and the configuration name, with a client of its own.
func (ro *runOptions) leaderElection(o *globalOptions, w *wiring) (controller.LeaderElection, error) {
	le := controller.LeaderElection{
		// A dry run writes nothing, the Lease included: one run from a laptop against a live
		// installation's Lease would take it, and the installation's replicas would stand by.
		Enabled: ro.leaderElect && !o.dryRun, Namespace: ro.leaseNS, Name: ro.leaseName, Identity: identity(),
		LeaseDuration: ro.leaseDur, RenewDeadline: ro.renew, RetryPeriod: ro.retry,
	}
	if le.Namespace == "" {
		le.Namespace = strings.TrimSpace(os.Getenv("POD_NAMESPACE"))
	}
	if le.Namespace == "" {
		le.Namespace = w.cfg.Warmer.Namespace
	}
	if le.Name == "" {
		le.Name = defaultLeaseName(w.cfg)
	}
	if !le.Enabled {
		return le, nil
	}
	// The Lease gets a client (and rate limiter) of its own: renewals never wait behind node writes.
	var err error
	if le.Client, err = kubernetes.NewForConfig(ownConnection(w.rest)); err != nil {
		return le, fmt.Errorf("creating leader-election client: %w", err)
	}
	return le, nil
}

// defaultLeaseName is the Lease both modes take without --leader-elect-name.
func defaultLeaseName(cfg *config.Config) string { return cfg.Warmer.DaemonSetName + "-orchestrator" }

// checkDefaultLeaseName refuses a configuration whose default Lease name the API server would not
// take (it would refuse to create the Lease, and the process would retry without leading).
func checkDefaultLeaseName(cfg *config.Config) error {
	name := defaultLeaseName(cfg)
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("the default Lease name %q (warmer.daemonSetName and -orchestrator) is not a valid Lease name: %s; set --leader-elect-name",
			name, strings.Join(msgs, "; "))
	}
	return nil
}

// validateLeaderElection checks the Lease flags before anything starts, naming the flag: the name
// a DNS-1123 subdomain and the namespace a DNS-1123 label, as the API server requires (it would
// refuse to create the Lease, and the process would retry forever without leading), and the
// timings as client-go would: lease duration > renew deadline > 1.2 x retry period (its jitter),
// all positive.
func (ro *runOptions) validateLeaderElection() error {
	if ro.leaseName != "" {
		if msgs := validation.IsDNS1123Subdomain(ro.leaseName); len(msgs) > 0 {
			return fmt.Errorf("--leader-elect-name %q: not a valid Lease name: %s", ro.leaseName, strings.Join(msgs, "; "))
		}
	}
	if ro.leaseNS != "" {
		if msgs := validation.IsDNS1123Label(ro.leaseNS); len(msgs) > 0 {
			return fmt.Errorf("--leader-elect-namespace %q: not a valid namespace name: %s", ro.leaseNS, strings.Join(msgs, "; "))
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"--leader-elect-lease-duration", ro.leaseDur}, {"--leader-elect-renew-deadline", ro.renew}, {"--leader-elect-retry-period", ro.retry}} {
		if f.d <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", f.name, f.d)
		}
	}
	if ro.leaseDur <= ro.renew {
		return fmt.Errorf("--leader-elect-lease-duration (%s) must be longer than --leader-elect-renew-deadline (%s)", ro.leaseDur, ro.renew)
	}
	if ro.renew <= time.Duration(leaderelection.JitterFactor*float64(ro.retry)) {
		return fmt.Errorf("--leader-elect-renew-deadline (%s) must be longer than %.1f x --leader-elect-retry-period (%s)", ro.renew, leaderelection.JitterFactor, ro.retry)
	}
	return nil
}

// identity names this leader-election candidate: the pod name, else host name plus a random suffix.
func identity() string {
	if v := strings.TrimSpace(os.Getenv("POD_NAME")); v != "" {
		return v
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "prewarm-orchestrator"
	}
	return host + "_" + uuid.NewString()[:8]
}

func newCleanupCommand(o *globalOptions) *cobra.Command {
	var (
		uninstall bool
		settle    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Release every node this installation manages (taint, status label, annotations)",
		Long: `cleanup releases every node this installation manages (reason cleanup). With --uninstall,
or when the installation adopts nothing any more (its warmer DaemonSet is gone or marked), it also
releases, once, the pool nodes that joined with the taint and were not adopted yet.

With --uninstall, as the chart's pre-delete hook runs it, it first marks the warmer DaemonSet
(annotation image-prewarmer.io/uninstalling), after which no orchestrator of the installation
taints or adopts another node, then releases the nodes and sweeps again until a sweep at least
--settle after the mark finds none of the installation's (nodes that keep joining with the
taint are released as they come, but do not keep it sweeping): an uninstall never leaves a
tainted node of the installation behind, even while the orchestrator is still running (a node
with a phase and no valid owner annotation is nobody's: a WARN note names it, and it keeps its
taint). If it fails
after the mark (or is stopped), it removes the mark again, so an installation that stays keeps
working. Without --uninstall the orchestrator keeps working: it leaves each released node alone
for the rest of its current maintenance and taints it again at its next one.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if settle < 0 {
				return &ConfigError{fmt.Errorf("invalid --settle %s: must not be negative", settle)}
			}
			if cmd.Flags().Changed("settle") && !uninstall {
				return &ConfigError{errors.New("--settle: only with --uninstall (cleanup alone releases the nodes once)")}
			}
			// Releasing needs no upgrade rule: one that broke must not keep nodes tainted.
			o.withoutRule = true
			e, log, err := o.newEngine(o.dryRun)
			if err != nil {
				return err
			}
			var res engine.Result
			if uninstall {
				res, err = e.Uninstall(cmd.Context(), settle)
			} else {
				res, err = e.Cleanup(cmd.Context())
			}
			if o.dryRun && err == nil {
				if perr := printPlan(o.stdout, res.Plan); perr != nil {
					err = perr
				}
			}
			if err != nil {
				return fmt.Errorf("cleanup failed: %w", err)
			}
			log.Info("cleanup complete", "released", res.Applied[plan.Release], "uninstall", uninstall, "dryRun", o.dryRun)
			return nil
		},
	}
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "mark the installation as being uninstalled first, so nothing is tainted again (the chart's pre-delete hook)")
	cmd.Flags().DurationVar(&settle, "settle", 10*time.Second, "with --uninstall: keep sweeping until a sweep this long after the mark finds no node of the installation's")
	return cmd
}

func summary(res engine.Result, took time.Duration) []any {
	return []any{
		"actions", len(res.Plan.Actions),
		"entered", res.Applied[plan.Enter],
		"adopted", res.Applied[plan.Adopt],
		"upgraded", res.Applied[plan.Upgraded],
		"released", res.Applied[plan.Release],
		"recorded", res.Applied[plan.Record],
		"duration", took.Round(time.Millisecond).String(),
		"observe", res.Took.Observe.Round(time.Millisecond).String(),
		"write", res.Took.Write.Round(time.Millisecond).String(),
		"events", res.Took.Events.Round(time.Millisecond).String(),
	}
}

// printPlan writes the plan as a table; it is what --dry-run shows.
func printPlan(w io.Writer, p plan.Plan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "# dry run: %d action(s), nothing written\n", len(p.Actions))
	if len(p.Actions) > 0 {
		fmt.Fprintln(tw, "NODE\tACTION\tREASON\tMESSAGE")
	}
	for _, a := range p.Actions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Node, a.Type, a.Reason, a.Message)
	}
	for _, n := range p.Notes {
		node := n.Node
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(tw, "%s\tnote\t\t%s\n", node, n.Message)
	}
	return tw.Flush()
}
