package controller

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Reconciles are triggered by node changes the planner reads, and not by status heartbeats.
func TestNodeChanged(t *testing.T) {
	base := tu.Node("a", tu.WithLabels("pool", "notebooks"))
	// A pointer in nodeInfo: each copy below has its own, with the same value.
	base.Status.NodeInfo.Swap = &corev1.NodeSwapStatus{}
	cases := []struct {
		name   string
		mutate func(*corev1.Node)
		want   bool
	}{
		{"heartbeat only", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			for i := range n.Status.Conditions {
				n.Status.Conditions[i].LastHeartbeatTime = metav1.Now()
			}
		}, false},
		// Deleted and created again while the watch was down: another node, created later.
		{"new UID", func(n *corev1.Node) { n.UID = "second-machine" }, true},
		{"label", func(n *corev1.Node) { n.Labels["os-upgrade/status"] = "upgrading" }, true},
		{"annotation", func(n *corev1.Node) { n.Annotations = map[string]string{"image-prewarmer.io/phase": "tainted"} }, true},
		{"taint", func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule})
		}, true},
		{"cordon", func(n *corev1.Node) { n.Spec.Unschedulable = true }, true},
		{"kernel", func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = "6.8.0" }, true},
		{"boot ID", func(n *corev1.Node) { n.Status.NodeInfo.BootID = "new" }, true},
		// upgrade.when templates may read any of nodeInfo (the documented example: osImage).
		{"os image", func(n *corev1.Node) { n.Status.NodeInfo.OSImage = "Ubuntu 24.04" }, true},
		{"not ready", func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := base.DeepCopy()
			tc.mutate(n)
			assert.Equal(t, tc.want, nodeChanged(base, n))
		})
	}
}

// The sources' warnings are logged when they change, whatever order the maintenance informer
// lists their objects in.
func TestWarningsLoggedOncePerChange(t *testing.T) {
	var buf tu.LogBuffer
	c := &Controller{log: slog.New(slog.NewTextHandler(&buf, nil))}
	a := sources.Warning{Source: "nodeMaintenance", Object: "nm-a", Message: "spec.nodeName is missing"}
	b := sources.Warning{Source: "nodeMaintenance", Object: "nm-b", Message: "spec.nodeName is not a string"}
	ctx := context.Background()
	c.logWarnings(ctx, []sources.Warning{a, b})
	c.logWarnings(ctx, []sources.Warning{b, a})
	c.logWarnings(ctx, []sources.Warning{a, b})
	assert.Equal(t, 2, strings.Count(buf.String(), "\n"), "each warning once: %s", buf.String())
	c.logWarnings(ctx, []sources.Warning{a})
	assert.Equal(t, 3, strings.Count(buf.String(), "\n"), "a change is logged again")
}
