package chart_test

// The Deployment mode's availability objects.

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// The PodDisruptionBudget lets replicas that are not Ready be evicted (AlwaysAllow): with the
// default policy, two unready replicas (a crash loop on a bad config, caches that never sync) would
// block every eviction, and `kubectl drain` of their nodes would hang the OS-upgrade pipeline.
func TestPDBLetsUnhealthyPodsBeEvicted(t *testing.T) {
	r := mustRender(t, minimal(t, "orchestrator: {mode: deployment}"))
	pdb := find[*policyv1.PodDisruptionBudget](t, r, "")
	require.NotNil(t, pdb.Spec.UnhealthyPodEvictionPolicy, "unhealthyPodEvictionPolicy is not set (IfHealthyBudget)")
	assert.Equal(t, policyv1.AlwaysAllow, *pdb.Spec.UnhealthyPodEvictionPolicy)
}

// orchestrator.affinity that sets only node affinity keeps the Deployment's pod anti-affinity, so
// that the leader and its standby still run on different nodes.
func TestCustomNodeAffinityKeepsReplicaAntiAffinity(t *testing.T) {
	r := mustRender(t, minimal(t, "orchestrator: {mode: deployment, affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: role, operator: In, values: [system]}]}]}}}}"))
	spec := find[*appsv1.Deployment](t, r, "").Spec.Template.Spec
	require.NotNil(t, spec.Affinity)
	require.NotNil(t, spec.Affinity.NodeAffinity, "the user's node affinity is used")
	assertRequiresRoleSystem(t, spec.Affinity.NodeAffinity)
	assert.Nil(t, spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution, "the user's instead of the chart's")
	require.NotNil(t, spec.Affinity.PodAntiAffinity, "replicas are no longer spread over nodes")
	anti := spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	require.Len(t, anti, 1, "replicas are no longer spread over nodes")
	assert.Equal(t, "kubernetes.io/hostname", anti[0].PodAffinityTerm.TopologyKey)
	assert.Equal(t, map[string]string{"app.kubernetes.io/name": "image-prewarmer", "app.kubernetes.io/instance": releaseName,
		"app.kubernetes.io/component": "orchestrator"}, anti[0].PodAffinityTerm.LabelSelector.MatchLabels)
}

// assertRequiresRoleSystem asserts that na is the node affinity the tests set: nodes labelled
// role=system, required.
func assertRequiresRoleSystem(t *testing.T, na *corev1.NodeAffinity) {
	t.Helper()
	require.NotNil(t, na.RequiredDuringSchedulingIgnoredDuringExecution)
	terms := na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	require.Len(t, terms, 1)
	assert.Equal(t, []corev1.NodeSelectorRequirement{{Key: "role", Operator: corev1.NodeSelectorOpIn, Values: []string{"system"}}},
		terms[0].MatchExpressions)
}
