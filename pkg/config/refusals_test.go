package config_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
)

// The status label key may not be one the nodeLabel maintenance source reads: with a pipeline
// that labels nodes os-upgrade/status=pending and the default statusLabel.key os-upgrade/status,
// Enter would overwrite the pipeline's label, end the node's maintenance with it, and the release
// (cancelled, before the upgrade) would delete the pipeline's label.
func TestStatusLabelKeyReadByNodeLabelSourceIsRefused(t *testing.T) {
	extra := "maintenance:\n  nodeMaintenance: {enabled: false}\n  nodeLabel: {enabled: true, selector: 'os-upgrade/status=pending'}\n"
	cfg, err := config.Parse([]byte(minimal + extra))
	if err == nil {
		// Show the consequence: the node the source put in maintenance leaves it as soon as
		// Enter sets the status label.
		c := sources.NewCollector(cfg, nil)
		before := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"pool": "notebooks", "os-upgrade/status": "pending"}}}
		after := before.DeepCopy()
		after.Labels[cfg.StatusLabel.Key] = cfg.StatusLabel.Value // what Enter writes
		assert.Len(t, c.CollectFrom([]*corev1.Node{before}, nil, true).Maintenance["a"], 1, "in maintenance before Enter")
		assert.Len(t, c.CollectFrom([]*corev1.Node{after}, nil, true).Maintenance["a"], 0, "Enter itself took the node out of its maintenance")
	}
	require.Error(t, err, "statusLabel.key os-upgrade/status is read by maintenance.nodeLabel.selector: Enter would overwrite the pipeline's label")
	assert.Contains(t, err.Error(), "statusLabel.key")
}

// A target kernel with whitespace could never equal status.nodeInfo.kernelVersion (uname -r):
// every node would wait maxWaitForUpgrade and open cold. It is refused, as the chart refuses it.
func TestKernelVersionWithWhitespaceIsRefused(t *testing.T) {
	for _, v := range []string{"'6.8.0-45-generic '", "' 6.8.0-45-generic'", "'6.8.0-45 generic'", "\"6.8.0-45-generic\\t\""} {
		t.Run(v, func(t *testing.T) {
			_, err := config.Parse([]byte(minimal + "upgrade:\n  kernelVersions: [" + v + "]\n"))
			require.Error(t, err, "kernel version %s can never equal status.nodeInfo.kernelVersion", v)
			assert.Contains(t, err.Error(), "upgrade.kernelVersions[0]")
		})
	}
}

// A taint key the node lifecycle controller keeps in step with the node (here with
// spec.unschedulable) is refused: the controller would remove our taint seconds after Enter, and
// the node would be released as by an operator (external), never waiting for its warmer pod.
func TestTaintKeyOwnedByNodeLifecycleControllerIsRefused(t *testing.T) {
	_, err := config.Parse([]byte(minimal + "taint: {key: node.kubernetes.io/unschedulable, effect: NoSchedule}\n"))
	require.Error(t, err, "a taint key the node lifecycle controller removes cannot hold a node")
	assert.Contains(t, err.Error(), "taint.key")
}

// A status label key in a namespace Kubernetes keeps for itself is refused: the product would
// write, swap and remove labels there (node-role, topology, the kubelet's own).
func TestStatusLabelKeyOfKubernetesIsRefused(t *testing.T) {
	for _, key := range []string{"kubernetes.io/upgrading", "node-role.kubernetes.io/upgrading", "example.k8s.io/status"} {
		_, err := config.Parse([]byte(minimal + "statusLabel: {key: " + key + "}\n"))
		require.Error(t, err, key)
		assert.Contains(t, err.Error(), "statusLabel.key")
	}
	_, err := config.Parse([]byte(minimal + "statusLabel: {key: example.com/kubernetes.io-status}\n"))
	require.NoError(t, err, "kubernetes.io elsewhere than the prefix's domain is fine")
}
