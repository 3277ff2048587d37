package framework

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// Pool is one test's slice of a shared cluster: nodes labelled with its own pool value, and one
// installation (Config) whose warmer lives in the test's namespace. Its helpers create and read
// the pool's nodes by short name and fail the test on error.
type Pool struct {
	T       *testing.T
	Ctx     context.Context
	Cluster *Cluster
	// Name is the pool label value, the namespace and the node name prefix.
	Name   string
	Config *config.Config
	// Images are the warmer's images.
	Images []string
}

// PoolLabel is the label that selects a test's pool.
const PoolLabel = "e2e.image-prewarmer.io/pool"

// InitialKernel is the kernel of pool nodes before their upgrade.
const InitialKernel = "5.15.0-100"

// NodeName is the full name of the pool's node short.
func (p *Pool) NodeName(short string) string { return p.Name + "-" + short }

// PoolNode creates a pool node on InitialKernel (label kernel-version too).
func (p *Pool) PoolNode(short string, opts ...NodeOption) *corev1.Node {
	p.T.Helper()
	all := append([]NodeOption{
		WithLabels(map[string]string{PoolLabel: p.Name, "kernel-version": InitialKernel}),
		WithKernel(InitialKernel),
	}, opts...)
	n, err := p.Cluster.CreateNode(p.Ctx, p.NodeName(short), all...)
	require.NoError(p.T, err)
	return n
}

// Warmer creates the installation's warmer DaemonSet as the chart renders it.
func (p *Pool) Warmer(mutate ...func(*WarmerOptions)) *appsv1.DaemonSet {
	p.T.Helper()
	o := WarmerOptionsFor(p.Config, p.Images)
	for _, m := range mutate {
		m(&o)
	}
	ds, err := p.Cluster.Client.AppsV1().DaemonSets(o.Namespace).Create(p.Ctx, WarmerDaemonSet(o), metav1.CreateOptions{})
	require.NoError(p.T, err)
	return ds
}

// Node reads the pool's node short.
func (p *Pool) Node(short string) *corev1.Node {
	p.T.Helper()
	n, err := p.Cluster.Client.CoreV1().Nodes().Get(p.Ctx, p.NodeName(short), metav1.GetOptions{})
	require.NoError(p.T, err)
	return n
}

// Maintenance creates a NodeMaintenance for the node (named after it).
func (p *Pool) Maintenance(short string) {
	p.T.Helper()
	_, err := p.Cluster.CreateNodeMaintenance(p.Ctx, p.NodeName(short), p.NodeName(short))
	require.NoError(p.T, err)
}

// EndMaintenance deletes the node's NodeMaintenance.
func (p *Pool) EndMaintenance(short string) {
	p.T.Helper()
	require.NoError(p.T, p.Cluster.DeleteNodeMaintenance(p.Ctx, p.NodeName(short)))
}

// Reboot simulates the OS upgrade: new kernel (nodeInfo and label) and boot ID.
func (p *Pool) Reboot(short, kernel string) {
	p.T.Helper()
	_, err := p.Cluster.Reboot(p.Ctx, p.NodeName(short), kernel, map[string]string{"kernel-version": kernel})
	require.NoError(p.T, err)
}

// Events returns the Events this installation wrote about the node with the given reason ("": all
// of them). Installations share the Events' namespace; each Event names its own.
func (p *Pool) Events(short, reason string) []corev1.Event {
	p.T.Helper()
	list, err := p.Cluster.Client.CoreV1().Events(p.Config.Events.Namespace).List(p.Ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + p.NodeName(short),
	})
	require.NoError(p.T, err)
	var out []corev1.Event
	for _, ev := range list.Items {
		if ev.Annotations[state.Owner] != p.Config.Instance {
			continue
		}
		if reason == "" || ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// RequireReleased checks a released node completely: no taint, status label, phase or owner;
// the release reason and time kept.
func (p *Pool) RequireReleased(short, reason string) *corev1.Node {
	p.T.Helper()
	n := p.Node(short)
	cfg := p.Config
	require.False(p.T, state.HasTaint(n, cfg.Taint.Key, cfg.Taint.Effect), "node %s should not carry the taint", short)
	require.NotContains(p.T, n.Labels, cfg.StatusLabel.Key)
	require.NotContains(p.T, n.Annotations, state.Phase)
	require.NotContains(p.T, n.Annotations, state.Owner)
	require.Equal(p.T, reason, n.Annotations[state.ReleaseReason], "release reason of %s", short)
	require.Contains(p.T, n.Annotations, state.ReleasedAt)
	return n
}

// RequireUntouched checks that the node carries nothing of ours.
func (p *Pool) RequireUntouched(short string) {
	p.T.Helper()
	n := p.Node(short)
	require.False(p.T, state.HasTaint(n, p.Config.Taint.Key, p.Config.Taint.Effect), "node %s should not be tainted", short)
	require.NotContains(p.T, n.Labels, p.Config.StatusLabel.Key)
	for k := range n.Annotations {
		require.False(p.T, strings.HasPrefix(k, state.Prefix), "node %s should carry none of our annotations, has %s", short, k)
	}
}

// RequireTaints checks that the node's taints, apart from the node lifecycle's own
// (node.kubernetes.io/...), are exactly want: each once, by key, value and effect.
func (p *Pool) RequireTaints(short string, want ...corev1.Taint) {
	p.T.Helper()
	var got []string
	for _, t := range p.Node(short).Spec.Taints {
		if !strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			got = append(got, t.ToString())
		}
	}
	wanted := make([]string, len(want))
	for i, t := range want {
		wanted[i] = t.ToString()
	}
	require.ElementsMatch(p.T, wanted, got, "taints of %s", short)
}

// OurTaint is the installation's taint.
func (p *Pool) OurTaint() corev1.Taint {
	return corev1.Taint{Key: p.Config.Taint.Key, Value: p.Config.Taint.Value, Effect: p.Config.Taint.Effect}
}

// poolNames counts the pools NewPool made under each name in this process.
var poolNames = struct {
	sync.Mutex
	used map[string]int
}{used: map[string]int{}}

// NewPool creates the test's slice of the cluster: a namespace and an installation named after
// the test, with the NodeMaintenance CRD installed; mutate adjusts the installation's config.
func NewPool(t *testing.T, c *Cluster, mutate ...func(*config.Config)) *Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	name := strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = strings.Trim(name[:40], "-")
	}
	// A test run again in the same process (go test -count=2) gets a slice of its own: the first
	// run's namespace and nodes are still there.
	poolNames.Lock()
	poolNames.used[name]++
	if n := poolNames.used[name]; n > 1 {
		name = fmt.Sprintf("%s-%d", name, n)
	}
	poolNames.Unlock()
	require.NoError(t, c.InstallNodeMaintenanceCRD(ctx), "installing the NodeMaintenance CRD")
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := config.Default()
	cfg.Instance = name + "/prewarm"
	cfg.Pool.NodeSelector = map[string]string{PoolLabel: name}
	cfg.Warmer = config.Warmer{Namespace: name, DaemonSetName: "warmer"}
	for _, m := range mutate {
		m(cfg)
	}
	require.NoError(t, cfg.Validate())
	return &Pool{T: t, Ctx: ctx, Cluster: c, Name: name, Config: cfg,
		Images: []string{"registry.example.com/notebook/base:2026.11"}}
}
