package controller_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	dto "github.com/prometheus/client_model/go"

	"github.com/image-prewarmer/image-prewarmer/pkg/controller"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The seed lifecycle in deployment mode with two replicas: one leads, the other stands by; the
// leader is stopped mid-run (between two nodes' upgrades) and the other finishes the job.
func TestSeedLifecycleTwoReplicas(t *testing.T) {
	e := newEnv(t)
	foreign := corev1.Taint{Key: "example.com/foreign", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}
	e.PoolNode("a", framework.WithTaints(foreign), framework.WithLabels(map[string]string{"team": "ml"}))
	e.PoolNode("b")
	e.PoolNode("c")
	e.Warmer()

	r1 := e.start("replica-1", fastElection)
	r2 := e.start("replica-2", fastElection)
	replicas := map[string]*runner{r1.id: r1, r2.id: r2}
	var leaderID string
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		leaderID = e.leader()
		return leaderID != "", nil
	}))
	for _, r := range replicas {
		require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
			code, _ := r.get(t, "/readyz")
			return code == http.StatusOK, nil
		}), "replica %s ready", r.id)
		code, _ := r.get(t, "/healthz")
		assert.Equal(t, http.StatusOK, code)
	}

	e.Maintenance("a")
	e.Maintenance("b")
	e.waitPhase("a", state.PhaseTainted)
	e.waitPhase("b", state.PhaseTainted)
	e.RequireUntouched("c")

	// The pipeline cordons and reboots a onto the target kernel: released once its warmer is Ready.
	_, err := cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.Reboot("a", newKernel)
	e.waitReleased("a")
	a := e.RequireReleased("a", state.ReasonWarm)
	assert.Contains(t, a.Spec.Taints, foreign, "foreign taints stay")
	assert.Equal(t, "ml", a.Labels["team"])
	assert.True(t, a.Spec.Unschedulable, "the pipeline's cordon is not ours to remove")

	// The leader goes away (SIGTERM: it releases the Lease); the standby takes over.
	leader := replicas[leaderID]
	require.NotNil(t, leader, "the Lease holder %q is one of the replicas", leaderID)
	leader.stop(t)
	var standby *runner
	for id, r := range replicas {
		if id != leaderID {
			standby = r
		}
	}
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == standby.id, nil
	}), "the standby takes the Lease")

	e.Reboot("b", newKernel)
	e.waitReleased("b")
	e.RequireReleased("b", state.ReasonWarm)
	e.RequireUntouched("c")
	// Released while its NodeMaintenance still exists: not tainted again, whoever leads. The new
	// leader has re-planned the whole pool (where a node is entered) since b's release: its
	// nodes-by-phase gauges, which only such a re-plan sets, count no node tainted or warming.
	// Then two more reconciles: a write that re-plan had started would have returned.
	e.waitGauges(standby, 0, 0, 3)
	e.waitReconciles(standby, reconcileCount(t, standby), 2, "the new leader re-plans after b's release")
	e.RequireReleased("a", state.ReasonWarm)
	e.RequireReleased("b", state.ReasonWarm)
	for _, n := range []string{"a", "b"} {
		assert.Len(t, e.Events(n, "PrewarmTainted"), 1, "one Tainted event on %s: no replica wrote twice", n)
		assert.Len(t, e.Events(n, "PrewarmReleased"), 1, "one Released event on %s", n)
	}
	mf := standby.scrape(t)
	v, ok := sample(mf, "image_prewarmer_leader", nil)
	assert.True(t, ok && v == 1, "the new leader reports leader=1")
}

// A NodeMaintenance created while the controller runs is acted upon at once, not at the next
// resync or cron tick: the replica's resync is 10 minutes, and the wait for the taint (60s) ends
// long before it.
func TestMaintenanceWhileRunning(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	r := e.start("only", fastElection, withResync(10*time.Minute))
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == r.id, nil
	}))
	// The replica has planned the pool as it leads (and then gone quiet): a, with no
	// maintenance, is left alone.
	before := e.waitQuiet(r)
	e.RequireUntouched("a")

	start := time.Now()
	e.Maintenance("a")
	e.waitPhase("a", state.PhaseTainted)
	t.Logf("tainted %s after the NodeMaintenance was created (informational; the wait allows 60s, the resync is 10m)",
		time.Since(start).Round(time.Millisecond))
	// The Event follows the patch (it is sent after the write, on a client of its own).
	require.NoError(t, framework.Eventually(e.Ctx, 10*time.Second, func(context.Context) (bool, error) {
		return len(e.Events("a", "PrewarmTainted")) > 0, nil
	}))
	// After the write: its batch, a's re-plan, and the whole pool's a second later (the only kind
	// of re-plan that enters a node) have run, and then the replica went quiet (with no resync
	// due, nothing else re-plans); none of them wrote again.
	// The three first (a follow-up late on a loaded machine would otherwise end the quiet early).
	e.waitReconciles(r, before, 3, "the write's batch, a's re-plan, the follow-up")
	after := e.waitQuiet(r)
	require.GreaterOrEqual(t, after, before+3, "reconciles after the maintenance: the write's batch, a's re-plan, the follow-up")
	enters, ok := sample(r.scrape(t), "image_prewarmer_transitions_total", map[string]string{"type": "enter", "reason": "nodeMaintenance"})
	require.True(t, ok, "transitions_total{type=enter} exists")
	assert.Equal(t, 1.0, enters, "one entry: no double write")
	require.Len(t, e.Events("a", "PrewarmTainted"), 1)
}

// The built binary gives the Go runtime 90% of the container's memory limit the chart passes it
// (the Go collector's go_gc_gomemlimit_bytes reads the runtime's own setting).
func TestBinaryMemoryLimit(t *testing.T) {
	e := newEnv(t)
	p := e.startProcess("memlimit")
	code, body := p.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	limit, ok := sample(parseMetrics(t, body), "go_gc_gomemlimit_bytes", nil)
	require.True(t, ok, "go_gc_gomemlimit_bytes is exported")
	assert.Equal(t, float64(268435456-268435456/10), limit)
}

// /metrics exposes nodes by phase, transitions, both latency histograms, reconcile durations,
// the leader gauge and build info, with the values of the scenario.
func TestMetrics(t *testing.T) {
	start := time.Now()
	e := newEnv(t)
	ourTaint := corev1.Taint{Key: e.Config.Taint.Key, Value: e.Config.Taint.Value, Effect: e.Config.Taint.Effect}
	e.PoolNode("joined", framework.WithTaints(ourTaint)) // joins tainted: adopted
	e.PoolNode("upgraded")
	e.PoolNode("waiting")
	e.Warmer()
	r := e.start("only", fastElection)

	e.waitReleased("joined")
	e.Maintenance("upgraded")
	e.Maintenance("waiting")
	e.waitPhase("upgraded", state.PhaseTainted)
	e.waitPhase("waiting", state.PhaseTainted)
	e.Reboot("upgraded", newKernel)
	e.waitReleased("upgraded")
	e.RequireReleased("joined", state.ReasonWarm)
	e.RequireReleased("upgraded", state.ReasonWarm)

	var mf map[string]*dto.MetricFamily
	// The gauges follow the caches: wait until the last release is reflected.
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		mf = r.scrape(t)
		v, _ := sample(mf, "image_prewarmer_nodes", map[string]string{"phase": "tainted"})
		w, _ := sample(mf, "image_prewarmer_nodes", map[string]string{"phase": "warming"})
		return v == 1 && w == 0, nil
	}))
	expect := func(name string, labels map[string]string, want float64) {
		t.Helper()
		got, ok := sample(mf, name, labels)
		require.True(t, ok, "series %s%v exists", name, labels)
		assert.Equal(t, want, got, "%s%v", name, labels)
	}
	expect("image_prewarmer_pool_nodes", nil, 3)
	expect("image_prewarmer_transitions_total", map[string]string{"type": "adopt", "reason": "joined-tainted"}, 1)
	expect("image_prewarmer_transitions_total", map[string]string{"type": "enter", "reason": "nodeMaintenance"}, 2)
	expect("image_prewarmer_transitions_total", map[string]string{"type": "release", "reason": "warm"}, 2)
	expect("image_prewarmer_warmer_ready_to_release_seconds", nil, 2)
	expect("image_prewarmer_upgrade_to_release_seconds", map[string]string{"reason": "warm"}, 2)
	expect("image_prewarmer_leader", nil, 1)
	expect("image_prewarmer_build_info", nil, 1)
	// With nothing left to do the leader still completes a whole-pool reconcile every resync
	// (2s here): the last success keeps moving, as the chart's ImagePrewarmerReconcileFailing
	// alert expects.
	last, ok := sample(mf, "image_prewarmer_last_success_timestamp_seconds", nil)
	require.True(t, ok)
	assert.Positive(t, last)
	require.NoError(t, framework.Eventually(e.Ctx, 15*time.Second, func(context.Context) (bool, error) {
		now, _ := sample(r.scrape(t), "image_prewarmer_last_success_timestamp_seconds", nil)
		return now > last, nil
	}), "last_success_timestamp_seconds advances with the resync")
	d, ok := sample(mf, "image_prewarmer_reconcile_duration_seconds", map[string]string{"mode": "watch"})
	require.True(t, ok)
	assert.Positive(t, d)
	// The unit, not a latency target: each observation is the span from a warmer pod's Ready
	// time to its node's release, both within this test, and the two spans do not overlap
	// (joined was released before upgraded had a maintenance, let alone a warmer pod). Their sum
	// is positive and less than the test's duration so far, give or take a second per
	// observation (a pod's Ready time is recorded to the second). Milliseconds or nanoseconds
	// recorded as seconds would not fit.
	elapsed := time.Since(start)
	h := mf["image_prewarmer_warmer_ready_to_release_seconds"].GetMetric()[0].GetHistogram()
	limit := elapsed.Seconds() + float64(h.GetSampleCount())
	assert.Positive(t, h.GetSampleSum(), "sum of ready-to-release seconds")
	assert.Less(t, h.GetSampleSum(), limit, "sum of ready-to-release seconds, within the %s of the scenario (+1s per observation)",
		elapsed.Round(time.Millisecond))
}

// The API server restarts while the controller runs: the informers re-list and re-watch, the
// leader keeps its Lease (the outage is shorter than the renew deadline), and changes made after
// the restart are acted upon, with no restart of the controller.
func TestAPIServerRestart(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	le := controller.LeaderElection{Enabled: true, Name: leaseName,
		LeaseDuration: 60 * time.Second, RenewDeadline: 45 * time.Second, RetryPeriod: 2 * time.Second}
	r := e.start("only", le)
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == r.id, nil
	}))
	e.Maintenance("a")
	e.waitPhase("a", state.PhaseTainted)

	require.NoError(t, cluster.RestartAPIServer(e.Ctx, time.Second))

	select {
	case err := <-r.done:
		t.Fatalf("the controller stopped during the API server restart: %v", err)
	default:
	}
	e.Maintenance("b")
	e.waitPhase("b", state.PhaseTainted)
	e.Reboot("a", newKernel)
	e.waitReleased("a")
	e.RequireReleased("a", state.ReasonWarm)
	assert.Equal(t, r.id, e.leader())

	mf := r.scrape(t)
	var failed float64
	for _, m := range mf["image_prewarmer_api_errors_total"].GetMetric() {
		failed += m.GetCounter().GetValue()
	}
	assert.Positive(t, failed, "requests during the outage are counted as API errors")
}

// Two processes of the built binary; the leader is killed (SIGKILL: no Lease release) while it
// is tainting a burst of nodes. The other takes over once the Lease expires and finishes; every
// node ends tainted exactly once. SIGTERM then stops the new leader cleanly, releasing the Lease.
func TestBinaryLeaderKilledMidBurst(t *testing.T) {
	e := newEnv(t)
	const n = 12
	// Taints of others, which each node keeps: one with the key of ours and another effect.
	theirs := []corev1.Taint{
		{Key: e.Config.Taint.Key, Value: "manual", Effect: corev1.TaintEffectPreferNoSchedule},
		{Key: "team.example.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); e.PoolNode(fmt.Sprintf("n%02d", i), framework.WithTaints(theirs...)) }()
	}
	wg.Wait()
	e.Warmer()
	procs := map[string]*process{}
	for _, name := range []string{"orchestrator-0", "orchestrator-1"} {
		procs[name] = e.startProcess(name)
	}
	var leaderID string
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		leaderID = e.leader()
		return leaderID != "", nil
	}))
	for _, p := range procs {
		require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
			code, _ := p.get(t, "/readyz")
			return code == http.StatusOK, nil
		}))
	}

	entered := map[string]map[string]string{}
	for i := range n {
		e.Maintenance(fmt.Sprintf("n%02d", i))
		if i == n/2 {
			// The leader is at work (one of the nodes in maintenance so far is tainted) when it
			// dies; the rest of the burst is the standby's.
			require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
				for j := range i + 1 {
					if state.PhaseOf(e.Node(fmt.Sprintf("n%02d", j))) == state.PhaseTainted {
						return true, nil
					}
				}
				return false, nil
			}), "the leader taints the first nodes")
			require.NoError(t, procs[leaderID].cmd.Process.Kill())
			<-procs[leaderID].exited
			// What the dead leader recorded when it entered each node (the standby cannot write
			// before the Lease expires): tainted-at and the baseline stay as they are, or the
			// node was entered again, Event or not (the leader's Event may have died with it).
			for j := range n {
				short := fmt.Sprintf("n%02d", j)
				if node := e.Node(short); state.PhaseOf(node) != "" {
					entered[short] = ourAnnotations(node)
				}
			}
			require.NotEmpty(t, entered)
		}
	}
	var next *process
	for name, p := range procs {
		if name != leaderID {
			next = p
		}
	}
	require.NoError(t, framework.Eventually(e.Ctx, 60*time.Second, func(context.Context) (bool, error) {
		return e.leader() == next.name, nil
	}), "the standby takes over the expired Lease")
	for i := range n {
		short := fmt.Sprintf("n%02d", i)
		e.waitPhase(short, state.PhaseTainted)
		node := e.Node(short)
		e.RequireTaints(short, append(theirs, e.OurTaint())...)
		assert.Equal(t, "upgrading", node.Labels[e.Config.StatusLabel.Key])
		assert.Equal(t, e.Config.Instance, node.Annotations[state.Owner])
		assert.LessOrEqual(t, len(e.Events(short, "PrewarmTainted")), 1, "no double write on %s", short)
		if before, ok := entered[short]; ok {
			assert.Equal(t, before, ourAnnotations(node), "%s, entered by the killed leader, is not entered again", short)
			assert.NotEmpty(t, before[state.TaintedAt], short)
		}
	}

	require.NoError(t, next.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-next.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the leader did not stop on SIGTERM")
	}
	require.NoError(t, next.err, "exit 0 on SIGTERM\n%s", next.log())
	assert.Empty(t, e.leader(), "the Lease is released on SIGTERM")
}

// ourAnnotations returns the node's annotations under state.Prefix.
func ourAnnotations(n *corev1.Node) map[string]string {
	out := map[string]string{}
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, state.Prefix) {
			out[k] = v
		}
	}
	return out
}

// The chart's pre-delete hook (cleanup --uninstall) while the controller runs: the node it manages
// is released and stays released, and a maintenance that arrives afterwards is not tainted: the
// controller sees the mark on the DaemonSet.
func TestUninstallWhileRunning(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	r := e.start("only", fastElection)
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == r.id, nil
	}))
	e.Maintenance("a")
	e.waitPhase("a", state.PhaseTainted)

	hook, err := engine.New(engine.Options{Config: e.Config, Client: e.client, Dynamic: e.dyn, Logger: testLogger(t, "hook"), Reporter: "hook"})
	require.NoError(t, err)
	res, err := hook.Uninstall(e.Ctx, time.Second)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release])
	e.RequireReleased("a", state.ReasonCleanup)

	// The maintenance makes the controller re-plan the pool; two re-plans after its creation,
	// in case one was under way then (and a 2s resync may be among them).
	before := reconcileCount(t, r)
	e.Maintenance("b")
	e.waitReconciles(r, before, 2, "the re-plans after b's maintenance")
	e.RequireUntouched("b")
	e.RequireReleased("a", state.ReasonCleanup)
}
