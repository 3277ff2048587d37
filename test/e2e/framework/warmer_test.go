package framework_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

func TestWarmerDaemonSetShape(t *testing.T) {
	t.Parallel()
	taint := corev1.Taint{Key: "maint", Value: "yes", Effect: corev1.TaintEffectNoExecute}
	pool := map[string]string{"pool": "nb", "zone": "a"}
	poolReqs := []corev1.NodeSelectorRequirement{
		{Key: "pool", Operator: corev1.NodeSelectorOpIn, Values: []string{"nb"}},
		{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}},
	}
	status := func(v string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: "st", Operator: corev1.NodeSelectorOpIn, Values: []string{v}}
	}
	tests := []struct {
		name  string
		opts  framework.WarmerOptions
		terms []corev1.NodeSelectorTerm
	}{
		{
			name:  "warming term only without kernel versions",
			opts:  framework.WarmerOptions{PoolSelector: pool, StatusLabelKey: "st", WarmingValue: "w"},
			terms: []corev1.NodeSelectorTerm{{MatchExpressions: append(poolReqs[:2:2], status("w"))}},
		},
		{
			name: "kernel term with kernel versions",
			opts: framework.WarmerOptions{PoolSelector: pool, StatusLabelKey: "st", StatusValue: "u", WarmingValue: "w",
				KernelLabel: "kv", KernelVersions: []string{"6.1", "6.2"}},
			terms: []corev1.NodeSelectorTerm{
				{MatchExpressions: append(poolReqs[:2:2], status("w"))},
				{MatchExpressions: append(poolReqs[:2:2], status("u"),
					corev1.NodeSelectorRequirement{Key: "kv", Operator: corev1.NodeSelectorOpIn, Values: []string{"6.1", "6.2"}})},
			},
		},
		{
			name: "released-node term with keepAfterRelease",
			opts: framework.WarmerOptions{PoolSelector: pool, StatusLabelKey: "st", WarmingValue: "w", KeepAfterRelease: true},
			terms: []corev1.NodeSelectorTerm{
				{MatchExpressions: append(poolReqs[:2:2], status("w"))},
				{MatchExpressions: append(poolReqs[:2:2], corev1.NodeSelectorRequirement{Key: "st", Operator: corev1.NodeSelectorOpDoesNotExist})},
			},
		},
		{
			name:  "pool selector alone with AnyPoolNode",
			opts:  framework.WarmerOptions{PoolSelector: pool, StatusLabelKey: "st", KernelVersions: []string{"6.1"}, AnyPoolNode: true},
			terms: []corev1.NodeSelectorTerm{{MatchExpressions: poolReqs}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Taint = taint
			tc.opts.Images = []string{"a:1", "b:2"}
			ds := framework.WarmerDaemonSet(tc.opts)
			spec := ds.Spec.Template.Spec
			require.NotNil(t, spec.Affinity)
			assert.Equal(t, tc.terms, spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms)
			assert.Equal(t, []corev1.Toleration{{Key: "maint", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}, spec.Tolerations)
			require.Len(t, spec.Containers, 2)
			assert.Equal(t, "a:1", spec.Containers[0].Image)
			assert.Equal(t, "b:2", spec.Containers[1].Image)
			assert.Equal(t, "100%", ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String())
			assert.Equal(t, ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
		})
	}
}

func TestWarmerDaemonSetDefaults(t *testing.T) {
	t.Parallel()
	ds := framework.WarmerDaemonSet(framework.WarmerOptions{Images: []string{"a:1"}})
	assert.Equal(t, "default", ds.Namespace)
	assert.Equal(t, []corev1.Toleration{{Key: "os-upgrade", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		ds.Spec.Template.Spec.Tolerations)
	terms := ds.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	assert.Equal(t, []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
		{Key: "os-upgrade/status", Operator: corev1.NodeSelectorOpIn, Values: []string{"warming"}},
	}}}, terms)
}

func TestPullImages(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, fail, slow string }{
		{"registry.example.com/notebook/base:1", "registry.example.com/fail-pull/notebook/base:1", "registry.example.com/slow-pull-1500ms/notebook/base:1"},
		{"localhost:5000/x@sha256:abc", "localhost:5000/fail-pull/x@sha256:abc", "localhost:5000/slow-pull-1500ms/x@sha256:abc"},
		{"library/busybox", "fail-pull/library/busybox", "slow-pull-1500ms/library/busybox"},
		{"busybox", "fail-pull/busybox", "slow-pull-1500ms/busybox"},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.fail, framework.FailPullImage(tc.in))
		assert.Equal(t, tc.fail, framework.FailPullImage(tc.fail), "idempotent")
		assert.Equal(t, tc.slow, framework.SlowPullImage(tc.in, 1500*time.Millisecond))
	}
	assert.Equal(t, "r.io/slow-pull-20s/a:1", framework.SlowPullImage("r.io/a:1", 20*time.Second))
	assert.Equal(t, "r.io/slow-pull-2m/a:1", framework.SlowPullImage("r.io/a:1", 2*time.Minute))
	assert.Equal(t, "r.io/slow-pull-1h/a:1", framework.SlowPullImage("r.io/a:1", time.Hour))
}
