package chart_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// orchestrator.mode: deployment renders a Deployment (event-driven `run`) instead of the CronJob,
// with leader election, probes, a metrics Service and a PodDisruptionBudget.
func TestDeployment(t *testing.T) {
	const deploymentValues = "orchestrator: {mode: deployment, podAnnotations: {team: platform}}"
	r := mustRender(t, minimal(t, deploymentValues))
	assert.Empty(t, all[*batchv1.CronJob](r), "no CronJob in deployment mode")
	d := find[*appsv1.Deployment](t, r, "")
	fullname := releaseName + "-image-prewarmer"
	assert.Equal(t, fullname, d.Name)
	assert.Equal(t, releaseNS, d.Namespace)
	assert.Equal(t, ptrTo(int32(2)), d.Spec.Replicas)
	selector := map[string]string{
		"app.kubernetes.io/name": "image-prewarmer", "app.kubernetes.io/instance": releaseName,
		"app.kubernetes.io/component": "orchestrator",
	}
	assert.Equal(t, selector, d.Spec.Selector.MatchLabels)
	pod := d.Spec.Template
	assert.Equal(t, selector, pod.Labels, "pod labels are the stable selector labels only")
	assert.Equal(t, "platform", pod.Annotations["team"])
	assert.Len(t, pod.Annotations["checksum/config"], 64)
	changed := find[*appsv1.Deployment](t, mustRender(t, minimal(t, deploymentValues, "maxWaitForWarm: 3h")), "").Spec.Template
	assert.NotEqual(t, pod.Annotations["checksum/config"], changed.Annotations["checksum/config"],
		"a change of the config alone rolls the orchestrator's pods")
	spec := pod.Spec
	assert.Equal(t, corev1.RestartPolicyAlways, spec.RestartPolicy)

	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	assert.Equal(t, []string{
		"run", "--resync=30s", "--listen=:8080", "--leader-elect=true", "--leader-elect-name=" + fullname,
		"--leader-elect-lease-duration=15s", "--leader-elect-renew-deadline=10s", "--leader-elect-retry-period=2s",
		"--config=/etc/image-prewarmer/config.yaml", "--log-format=json", "-v=0",
	}, c.Args)
	assert.Equal(t, []corev1.EnvVar{
		{Name: "PREWARM_MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
	}, c.Env, "memory limit for the Go runtime; leader-election identity and Lease namespace")
	assert.Equal(t, []corev1.ContainerPort{{Name: "http-metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}, c.Ports)
	require.NotNil(t, c.LivenessProbe)
	require.NotNil(t, c.ReadinessProbe)
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, intstr.FromString("http-metrics"), c.LivenessProbe.HTTPGet.Port)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, intstr.FromString("http-metrics"), c.ReadinessProbe.HTTPGet.Port)

	// Tolerates the installation's taint (it must never lock itself out), and nothing broader.
	assert.Equal(t, []corev1.Toleration{{Key: "os-upgrade", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}, spec.Tolerations)

	// Replicas spread over nodes; still prefers nodes outside the pool.
	require.NotNil(t, spec.Affinity)
	require.NotNil(t, spec.Affinity.PodAntiAffinity)
	anti := spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	require.Len(t, anti, 1)
	assert.Equal(t, "kubernetes.io/hostname", anti[0].PodAffinityTerm.TopologyKey)
	assert.Equal(t, selector, anti[0].PodAffinityTerm.LabelSelector.MatchLabels)
	require.NotNil(t, spec.Affinity.NodeAffinity)
	assert.Len(t, spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)

	t.Run("metrics Service", func(t *testing.T) {
		svc := find[*corev1.Service](t, r, "-metrics")
		assert.Equal(t, releaseNS, svc.Namespace)
		assert.Equal(t, selector, svc.Spec.Selector)
		require.Len(t, svc.Spec.Ports, 1)
		assert.Equal(t, "http-metrics", svc.Spec.Ports[0].Name)
		assert.Equal(t, int32(8080), svc.Spec.Ports[0].Port)
		assert.Equal(t, intstr.FromString("http-metrics"), svc.Spec.Ports[0].TargetPort)
	})

	t.Run("PodDisruptionBudget", func(t *testing.T) {
		pdb := find[*policyv1.PodDisruptionBudget](t, r, "")
		assert.Equal(t, selector, pdb.Spec.Selector.MatchLabels)
		assert.Equal(t, ptrTo(intstr.FromInt32(1)), pdb.Spec.MaxUnavailable)
		one := mustRender(t, minimal(t, "orchestrator: {mode: deployment, deployment: {replicas: 1}}"))
		assert.Empty(t, all[*policyv1.PodDisruptionBudget](one), "no PDB for a single replica: it would block node drains")
	})

	t.Run("ServiceMonitor off by default", func(t *testing.T) {
		assert.Empty(t, all[*unstructured.Unstructured](r))
		on := mustRender(t, minimal(t, "orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 15s, labels: {release: kube-prometheus}}}}"))
		sm := find[*unstructured.Unstructured](t, on, "")
		assert.Equal(t, "monitoring.coreos.com/v1", sm.GetAPIVersion())
		assert.Equal(t, "ServiceMonitor", sm.GetKind())
		assert.Equal(t, releaseNS, sm.GetNamespace())
		assert.Equal(t, "kube-prometheus", sm.GetLabels()["release"])
		match, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		assert.Equal(t, selector, match, "selects the metrics Service")
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		require.Len(t, endpoints, 1)
		assert.Equal(t, map[string]any{"port": "http-metrics", "path": "/metrics", "interval": "15s"}, endpoints[0])
	})

	t.Run("values", func(t *testing.T) {
		r := mustRender(t, minimal(t, `orchestrator: {mode: deployment, dryRun: true, deployment: {replicas: 3, resync: 1m, port: 9090,
  leaderElection: {leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 5s}, podDisruptionBudget: {maxUnavailable: "50%"}}}`))
		d := find[*appsv1.Deployment](t, r, "")
		assert.Equal(t, ptrTo(int32(3)), d.Spec.Replicas)
		c := d.Spec.Template.Spec.Containers[0]
		assert.Equal(t, []string{
			"run", "--resync=1m", "--listen=:9090", "--leader-elect=true", "--leader-elect-name=" + fullname,
			"--leader-elect-lease-duration=30s", "--leader-elect-renew-deadline=20s", "--leader-elect-retry-period=5s", "--dry-run",
			"--config=/etc/image-prewarmer/config.yaml", "--log-format=json", "-v=0",
		}, c.Args)
		assert.Equal(t, int32(9090), c.Ports[0].ContainerPort)
		assert.Equal(t, ptrTo(intstr.FromString("50%")), find[*policyv1.PodDisruptionBudget](t, r, "").Spec.MaxUnavailable)
	})

	t.Run("notes", func(t *testing.T) {
		assert.Contains(t, r.Notes, "Deployment "+fullname)
		assert.Contains(t, r.Notes, "kubectl get lease -n "+releaseNS+" "+fullname)
		assert.NotContains(t, r.Notes, "cronjob")
	})
}

// The values the stricter schema rules still take.
func TestTolerationsAndIntervalsTheAPIAccepts(t *testing.T) {
	for _, extra := range []string{
		"orchestrator: {tolerations: [{operator: Exists}]}", // every taint
		"orchestrator: {tolerations: [{key: '', operator: Exists, effect: NoSchedule}]}",
		"prewarm: {extraTolerations: [{key: example.com/gpu, operator: Exists, effect: NoExecute, tolerationSeconds: 30}]}",
		"prewarm: {extraTolerations: [{key: dedicated, operator: Equal, value: notebooks, effect: NoSchedule}]}",
		"prewarm: {extraTolerations: [{key: dedicated, value: ''}]}",
		"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 1m30s}}}",
		"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 500ms}}}",
		"orchestrator: {cleanupJob: {activeDeadlineSeconds: 30}}",
	} {
		t.Run(extra, func(t *testing.T) {
			mustRender(t, minimal(t, extra))
		})
	}
}

// The orchestrator's image is built for Linux only: its pods (CronJob, Deployment, the cleanup
// hook, helm test) never land on a Windows node, which the default preference for nodes outside
// the pool would otherwise favour as much as a system node. A value for the key replaces it.
func TestOrchestratorPodsRunOnLinux(t *testing.T) {
	for _, mode := range []string{"cronjob", "deployment"} {
		r := mustRender(t, minimal(t, "orchestrator: {mode: "+mode+"}"))
		pods := orchestratorPods(t, r)
		require.NotEmpty(t, pods)
		for name, pod := range pods {
			assert.Equal(t, map[string]string{"kubernetes.io/os": "linux"}, pod.NodeSelector, name)
		}
	}
	r := mustRender(t, minimal(t, "orchestrator: {nodeSelector: {kubernetes.io/os: linux-custom, role: system}}"))
	for name, pod := range orchestratorPods(t, r) {
		assert.Equal(t, map[string]string{"kubernetes.io/os": "linux-custom", "role": "system"}, pod.NodeSelector, name)
	}
}
