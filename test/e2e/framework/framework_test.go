package framework_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// cluster is shared by the tests of this package; TestMain starts and deletes it.
var cluster *framework.Cluster

func TestMain(m *testing.M) {
	framework.Main(m, "e2e-framework", func(c *framework.Cluster) { cluster = c })
}

const wait = time.Minute

var upgradeTaint = corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}

func TestCreateNodeKeepsNodeInfo(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	other := corev1.Taint{Key: "dedicated", Value: "notebooks", Effect: corev1.TaintEffectNoExecute}
	created, err := cluster.CreateNode(ctx, "nodeinfo-1",
		framework.WithLabels(map[string]string{"pool": "nodeinfo"}),
		framework.WithKernel("5.15.173.1-1.cm2"),
		framework.WithBootID("boot-1"),
		framework.WithTaints(upgradeTaint, other))
	require.NoError(t, err)

	node, err := cluster.Client.CoreV1().Nodes().Get(ctx, created.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "5.15.173.1-1.cm2", node.Status.NodeInfo.KernelVersion)
	assert.Equal(t, "boot-1", node.Status.NodeInfo.BootID)
	assert.Equal(t, "nodeinfo", node.Labels["pool"])
	assert.Equal(t, "fake", node.Annotations[framework.KwokNodeAnnotation])
	assert.ElementsMatch(t, []corev1.Taint{upgradeTaint, other}, stripTimes(node.Spec.Taints))
	assert.True(t, state.NodeReady(node), "kwok marks the node Ready")
}

func TestRebootChangesKernelBootIDAndLabels(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	before, err := cluster.CreateNode(ctx, "reboot-1", framework.WithKernel("5.15.1"),
		framework.WithLabels(map[string]string{"kernel": "5.15.1", "keep": "me"}))
	require.NoError(t, err)

	after, err := cluster.Reboot(ctx, "reboot-1", "6.6.2", map[string]string{"kernel": "6.6.2"})
	require.NoError(t, err)
	assert.Equal(t, "6.6.2", after.Status.NodeInfo.KernelVersion)
	assert.NotEqual(t, before.Status.NodeInfo.BootID, after.Status.NodeInfo.BootID)
	assert.NotEmpty(t, after.Status.NodeInfo.BootID)
	assert.Equal(t, "6.6.2", after.Labels["kernel"])
	assert.Equal(t, "me", after.Labels["keep"])

	got, err := cluster.Client.CoreV1().Nodes().Get(ctx, "reboot-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, after.Status.NodeInfo.BootID, got.Status.NodeInfo.BootID, "kwok keeps the new nodeInfo")
	assert.Equal(t, "6.6.2", got.Status.NodeInfo.KernelVersion)
	assert.True(t, state.NodeReady(got))
}

func TestCordonUncordon(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, err := cluster.CreateNode(ctx, "cordon-1", framework.WithTaints(upgradeTaint))
	require.NoError(t, err)

	node, err := cluster.Cordon(ctx, "cordon-1")
	require.NoError(t, err)
	assert.True(t, node.Spec.Unschedulable)
	assert.ElementsMatch(t, []string{upgradeTaint.Key, corev1.TaintNodeUnschedulable}, taintKeys(node))

	node, err = cluster.Uncordon(ctx, "cordon-1")
	require.NoError(t, err)
	assert.False(t, node.Spec.Unschedulable)
	assert.ElementsMatch(t, []corev1.Taint{upgradeTaint}, stripTimes(node.Spec.Taints))

	node, err = cluster.CreateNode(ctx, "cordon-2", framework.Unschedulable())
	require.NoError(t, err)
	assert.Equal(t, []string{corev1.TaintNodeUnschedulable}, taintKeys(node))
}

func TestNodeMaintenance(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	require.NoError(t, cluster.InstallNodeMaintenanceCRD(ctx))
	require.NoError(t, cluster.InstallNodeMaintenanceCRD(ctx), "installing twice is fine")

	nm, err := cluster.CreateNodeMaintenance(ctx, "nm-1", "worker-1")
	require.NoError(t, err)
	assert.NotEmpty(t, nm.GetUID())

	got, err := cluster.Dynamic.Resource(framework.NodeMaintenanceGVR()).Get(ctx, "nm-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "worker-1", got.Object["spec"].(map[string]any)["nodeName"])

	require.NoError(t, cluster.DeleteNodeMaintenance(ctx, "nm-1"))
	_, err = cluster.Dynamic.Resource(framework.NodeMaintenanceGVR()).Get(ctx, "nm-1", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "deleted: %v", err)
	require.NoError(t, cluster.DeleteNodeMaintenance(ctx, "nm-1"), "deleting twice is fine")
}

// The DaemonSet controller and the scheduler place warmer pods on exactly the nodes the affinity
// admits, and kwok makes them Ready.
func TestWarmerPlacement(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := map[string]string{"pool": "placement"}
	status := "os-upgrade/status"
	nodes := []struct {
		name   string
		labels map[string]string
	}{
		{"place-warming", map[string]string{"pool": "placement", status: "warming"}},
		{"place-upgraded", map[string]string{"pool": "placement", status: "upgrading", "kernel": "6.6.2"}},
		{"place-not-upgraded", map[string]string{"pool": "placement", status: "upgrading", "kernel": "5.15.1"}},
		{"place-unmanaged", map[string]string{"pool": "placement"}},
		{"place-other-pool", map[string]string{"pool": "elsewhere", status: "warming"}},
	}
	for _, n := range nodes {
		_, err := cluster.CreateNode(ctx, n.name, framework.WithLabels(n.labels), framework.WithTaints(upgradeTaint))
		require.NoError(t, err)
	}

	ds := createWarmer(t, framework.WarmerOptions{
		Name: "warmer-placement", PoolSelector: pool, StatusLabelKey: status,
		KernelLabel: "kernel", KernelVersions: []string{"6.6.2", "6.6.3"},
		Images: []string{"registry.example/notebook:1", "registry.example/spark:2"},
	})
	assert.ElementsMatch(t, []string{"place-warming", "place-upgraded"}, readyPodNodes(t, ds, 2))

	// The orchestrator's "upgrade seen" step: the status label turns to warming.
	_, err := cluster.Client.CoreV1().Nodes().Patch(ctx, "place-not-upgraded", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"os-upgrade/status":"warming"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"place-warming", "place-upgraded", "place-not-upgraded"}, readyPodNodes(t, ds, 3))
}

func TestWarmerKeepAfterRelease(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for name, pool := range map[string]string{"keep-1": "keep", "keep-2": "keep", "keep-3": "other"} {
		_, err := cluster.CreateNode(ctx, name, framework.WithLabels(map[string]string{"pool": pool}))
		require.NoError(t, err)
	}
	ds := createWarmer(t, framework.WarmerOptions{
		Name: "warmer-keep", PoolSelector: map[string]string{"pool": "keep"}, KeepAfterRelease: true,
		Images: []string{"registry.example/notebook:1"},
	})
	assert.ElementsMatch(t, []string{"keep-1", "keep-2"}, readyPodNodes(t, ds, 2))
}

// A warmer pod with a "fail-pull" image waits in ErrImagePull, then ImagePullBackOff, and is never Ready.
func TestWarmerPullFailure(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, err := cluster.CreateNode(ctx, "pullfail-1",
		framework.WithLabels(map[string]string{"pool": "pullfail", "os-upgrade/status": "warming"}))
	require.NoError(t, err)
	ds := createWarmer(t, framework.WarmerOptions{
		Name: "warmer-pullfail", PoolSelector: map[string]string{"pool": "pullfail"},
		Images: []string{"registry.example/notebook:1", framework.FailPullImage("registry.example/spark:2")},
	})

	var pod corev1.Pod
	require.NoError(t, framework.Eventually(ctx, wait, func(ctx context.Context) (bool, error) {
		pods, err := cluster.DaemonSetPods(ctx, ds)
		if err != nil || len(pods) != 1 {
			return false, err
		}
		pod = pods[0]
		return slices.Contains(framework.WaitingReasons(&pod), "ImagePullBackOff"), nil
	}))
	assert.Equal(t, []string{"ImagePullBackOff"}, framework.WaitingReasons(&pod), "only the fail-pull container waits")
	assert.False(t, state.PodReady(&pod))
	assert.Equal(t, corev1.PodPending, pod.Status.Phase)

	events, err := cluster.Events(ctx, "Pod", pod.Namespace, pod.Name)
	require.NoError(t, err)
	assert.Contains(t, eventReasons(events), "Warning/Failed", "the ErrImagePull stage ran before the back-off")

	got, err := cluster.Client.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Zero(t, got.Status.NumberReady)
}

// A pod with a "slow-pull-<d>" image, or the pull-delay annotation, becomes Ready only after d.
func TestSlowPull(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const delay = 3 * time.Second
	_, err := cluster.CreateNode(ctx, "slowpull-1",
		framework.WithLabels(map[string]string{"pool": "slowpull", "os-upgrade/status": "warming"}))
	require.NoError(t, err)

	ds := createWarmer(t, framework.WarmerOptions{
		Name: "warmer-slowpull", PoolSelector: map[string]string{"pool": "slowpull"},
		Images: []string{framework.SlowPullImage("registry.example/notebook:1", delay)},
	})
	annotated := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "slowpull-annotated", Namespace: "default",
			Annotations: map[string]string{framework.PullDelayAnnotation: delay.String()}},
		Spec: corev1.PodSpec{NodeName: "slowpull-1", Containers: []corev1.Container{{Name: "c", Image: "registry.example/notebook:1"}}},
	}
	_, err = cluster.Client.CoreV1().Pods("default").Create(ctx, annotated, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().Pods("default").Delete(context.WithoutCancel(ctx), annotated.Name, metav1.DeleteOptions{})
	})

	var pods []corev1.Pod
	require.NoError(t, framework.Eventually(ctx, wait, func(ctx context.Context) (bool, error) {
		dsPods, err := cluster.DaemonSetPods(ctx, ds)
		if err != nil {
			return false, err
		}
		p, err := cluster.Client.CoreV1().Pods("default").Get(ctx, annotated.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pods = append(dsPods, *p)
		return len(pods) == 2 && state.PodReady(&pods[0]) && state.PodReady(&pods[1]), nil
	}))
	for _, p := range pods {
		// Both times are whole seconds and Ready >= creation + delay (a whole number of seconds),
		// so the difference of the truncated times is at least delay too.
		readyAt := readySince(&p)
		assert.GreaterOrEqual(t, readyAt.Sub(p.CreationTimestamp.Time), delay,
			"pod %s: created %s, Ready %s", p.Name, p.CreationTimestamp, readyAt)
	}
}

func TestNodeEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	node, err := cluster.CreateNode(ctx, "events-1")
	require.NoError(t, err)
	ref := corev1.ObjectReference{Kind: "Node", Name: node.Name, UID: node.UID, APIVersion: "v1"}
	now := metav1.Now()
	_, err = cluster.Client.CoreV1().Events("default").Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "events-1-"},
		InvolvedObject: ref, Type: corev1.EventTypeWarning, Reason: "CoreEvent", Message: "m",
		FirstTimestamp: now, LastTimestamp: now, Count: 1, Source: corev1.EventSource{Component: "test"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.EventsV1().Events("default").Create(ctx, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "events-1-"},
		Regarding:  ref, Type: corev1.EventTypeNormal, Reason: "EventsV1Event", Note: "n", Action: "Test",
		EventTime: metav1.NowMicro(), ReportingController: "image-prewarmer.io/test", ReportingInstance: "test",
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.CreateNode(ctx, "events-2")
	require.NoError(t, err)

	events, err := cluster.NodeEvents(ctx, "events-1")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"Warning/CoreEvent", "Normal/EventsV1Event"}, eventReasons(events))
	none, err := cluster.NodeEvents(ctx, "events-2")
	require.NoError(t, err)
	assert.Empty(t, none)
}

func TestEventuallyReportsTimeoutAndLastError(t *testing.T) {
	t.Parallel()
	calls := 0
	// Long enough for a second call on a loaded machine: the error of the first is still the
	// one reported.
	err := framework.Eventually(t.Context(), 2*time.Second, func(context.Context) (bool, error) {
		calls++
		if calls == 1 {
			return false, apierrors.NewNotFound(corev1.Resource("nodes"), "x")
		}
		return false, nil
	})
	require.Error(t, err)
	assert.True(t, apierrors.IsNotFound(err), "last error is wrapped: %v", err)
	assert.Greater(t, calls, 1)

	calls = 0
	require.NoError(t, framework.Eventually(t.Context(), wait, func(context.Context) (bool, error) {
		calls++
		return calls == 3, nil
	}))
}

func createWarmer(t *testing.T, opts framework.WarmerOptions) *appsv1.DaemonSet {
	t.Helper()
	ds, err := cluster.Client.AppsV1().DaemonSets("default").Create(t.Context(), framework.WarmerDaemonSet(opts), metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cluster.Client.AppsV1().DaemonSets(ds.Namespace).Delete(context.Background(), ds.Name, metav1.DeleteOptions{})
	})
	return ds
}

// readyPodNodes waits until the DaemonSet wants and has exactly n Ready pods, then returns their nodes.
func readyPodNodes(t *testing.T, ds *appsv1.DaemonSet, n int) []string {
	t.Helper()
	var nodes []string
	require.NoError(t, framework.Eventually(t.Context(), wait, func(ctx context.Context) (bool, error) {
		got, err := cluster.Client.AppsV1().DaemonSets(ds.Namespace).Get(ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if got.Status.ObservedGeneration != got.Generation || got.Status.DesiredNumberScheduled != int32(n) {
			return false, nil
		}
		pods, err := cluster.DaemonSetPods(ctx, ds)
		if err != nil {
			return false, err
		}
		nodes = nodes[:0]
		for _, p := range pods {
			if !state.PodReady(&p) {
				return false, nil
			}
			nodes = append(nodes, p.Spec.NodeName)
		}
		return len(nodes) == n, nil
	}), "DaemonSet %s: waiting for %d Ready pods", ds.Name, n)
	return nodes
}

func readySince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func stripTimes(taints []corev1.Taint) []corev1.Taint {
	out := make([]corev1.Taint, 0, len(taints))
	for _, t := range taints {
		t.TimeAdded = nil
		out = append(out, t)
	}
	return out
}

func taintKeys(n *corev1.Node) []string {
	var keys []string
	for _, t := range n.Spec.Taints {
		keys = append(keys, t.Key)
	}
	return keys
}

func eventReasons(events []corev1.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Type+"/"+e.Reason)
	}
	return out
}
