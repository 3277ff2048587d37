package chart_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/image-prewarmer/image-prewarmer/pkg/cli"
	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/test/chart/valuesdoc"
)

// The warmer tolerates the installation's taint as the orchestrator knows it: by key and effect,
// whatever its value (a node that joins with the key and no value is adopted, and must get its
// warmer), and nothing else.
func TestWarmerToleratesTheTaint(t *testing.T) {
	cases := []struct {
		name  string
		extra string
		taint corev1.Taint
	}{
		{"default", "", corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}},
		{"custom", "taint: {key: example.com/prewarm, value: pending, effect: NoExecute}",
			corev1.Taint{Key: "example.com/prewarm", Value: "pending", Effect: corev1.TaintEffectNoExecute}},
		{"empty value", `taint: {key: upgrade, value: "", effect: PreferNoSchedule}`,
			corev1.Taint{Key: "upgrade", Value: "", Effect: corev1.TaintEffectPreferNoSchedule}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, minimal(t, tc.extra))
			cfg := parsedConfig(t, r)
			// One source of truth: the config's taint is the values' taint.
			require.Equal(t, tc.taint, corev1.Taint{Key: cfg.Taint.Key, Value: cfg.Taint.Value, Effect: cfg.Taint.Effect})

			want := corev1.Toleration{Key: tc.taint.Key, Operator: corev1.TolerationOpExists, Effect: tc.taint.Effect}
			tols := warmer(t, r).Spec.Template.Spec.Tolerations
			assert.Equal(t, []corev1.Toleration{want}, tols)
			tolerates := func(taint corev1.Taint) bool { return tols[0].ToleratesTaint(klog.Background(), &taint, false) }
			assert.True(t, tolerates(tc.taint))
			for _, v := range []string{"", "false", "other"} {
				assert.True(t, tolerates(corev1.Taint{Key: tc.taint.Key, Value: v, Effect: tc.taint.Effect}), "value %q", v)
			}
			otherEffect := corev1.TaintEffectNoExecute
			if tc.taint.Effect == otherEffect {
				otherEffect = corev1.TaintEffectNoSchedule
			}
			assert.False(t, tolerates(corev1.Taint{Key: tc.taint.Key, Value: tc.taint.Value, Effect: otherEffect}), "another effect")
			assert.False(t, tolerates(corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}), "another key")

			// The orchestrator's pods always tolerate it too, so the product never locks itself out.
			for name, pod := range orchestratorPods(t, r) {
				assert.Contains(t, pod.Tolerations, want, name)
			}
		})
	}

	t.Run("extra tolerations are added after the taint", func(t *testing.T) {
		r := mustRender(t, minimal(t, "prewarm: {extraTolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]}",
			"orchestrator: {tolerations: [{key: CriticalAddonsOnly, operator: Exists}]}"))
		tols := warmer(t, r).Spec.Template.Spec.Tolerations
		require.Len(t, tols, 2)
		assert.Equal(t, "os-upgrade", tols[0].Key)
		assert.Equal(t, "dedicated", tols[1].Key)
		for name, pod := range orchestratorPods(t, r) {
			require.Len(t, pod.Tolerations, 2, name)
			assert.Equal(t, "os-upgrade", pod.Tolerations[0].Key, name)
			assert.Equal(t, "CriticalAddonsOnly", pod.Tolerations[1].Key, name)
		}
	})
}

// node builds a node with the given labels.
func node(labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels}}
}

func TestWarmerAffinity(t *testing.T) {
	const kernelLabel = "feature.node.kubernetes.io/kernel-version.full"
	pool := map[string]string{"pool": "notebooks", "tier": "gpu"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{"kubernetes.io/hostname": "n"}
		for k, v := range pool {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	nodes := map[string]map[string]string{
		"pool, released":                    with(nil),
		"pool, upgrading, old kernel":       with(map[string]string{"os-upgrade/status": "upgrading", kernelLabel: "6.1.0"}),
		"pool, upgrading, target kernel":    with(map[string]string{"os-upgrade/status": "upgrading", kernelLabel: "6.8.0"}),
		"pool, upgrading, no kernel label":  with(map[string]string{"os-upgrade/status": "upgrading"}),
		"pool, warming":                     with(map[string]string{"os-upgrade/status": "warming"}),
		"pool, warming, old kernel":         with(map[string]string{"os-upgrade/status": "warming", kernelLabel: "6.1.0"}),
		"half pool, warming":                {"pool": "notebooks", "os-upgrade/status": "warming"},
		"other pool, warming":               {"pool": "batch", "tier": "gpu", "os-upgrade/status": "warming"},
		"other pool, upgrading, new kernel": {"pool": "batch", "tier": "gpu", "os-upgrade/status": "upgrading", kernelLabel: "6.8.0"},
		"other pool, released":              {"pool": "batch", "tier": "gpu"},
	}
	cases := []struct {
		name    string
		extra   string
		terms   int
		matches []string
	}{
		{
			name:    "warming term only",
			terms:   1,
			matches: []string{"pool, warming", "pool, warming, old kernel"},
		},
		{
			name:    "with target kernels",
			extra:   "upgrade: {kernelVersions: [6.8.0, 6.8.1], kernelVersionLabel: " + kernelLabel + "}",
			terms:   2,
			matches: []string{"pool, warming", "pool, warming, old kernel", "pool, upgrading, target kernel"},
		},
		{
			// With a template, the template alone says when a node is upgraded: a node already on
			// a target kernel may be waiting for its reboot, so no kernel term starts its warmer.
			name:    "target kernels and a template",
			extra:   "upgrade: {kernelVersions: [6.8.0, 6.8.1], kernelVersionLabel: " + kernelLabel + ", when: '{{ and (has .Kernel .KernelVersions) (ne .BootID .Baseline.BootID) }}'}",
			terms:   1,
			matches: []string{"pool, warming", "pool, warming, old kernel"},
		},
		{
			// A blank template is no template: the orchestrator uses the default rule.
			name:    "target kernels and a blank template",
			extra:   "upgrade: {kernelVersions: [6.8.0, 6.8.1], kernelVersionLabel: " + kernelLabel + ", when: ' '}",
			terms:   2,
			matches: []string{"pool, warming", "pool, warming, old kernel", "pool, upgrading, target kernel"},
		},
		{
			name:    "keepAfterRelease",
			extra:   "prewarm: {keepAfterRelease: true}",
			terms:   2,
			matches: []string{"pool, warming", "pool, warming, old kernel", "pool, released"},
		},
		{
			// No kernel label: node affinity cannot read status.nodeInfo.kernelVersion, so the kernel
			// term is left out and the warmer starts when the orchestrator sets warming.
			name:    "target kernels without kernel label",
			extra:   "upgrade: {kernelVersions: [6.8.0, 6.8.1]}",
			terms:   1,
			matches: []string{"pool, warming", "pool, warming, old kernel"},
		},
		{
			name:    "keepAfterRelease, target kernels without kernel label",
			extra:   "{prewarm: {keepAfterRelease: true}, upgrade: {kernelVersions: [6.8.0]}}",
			terms:   2,
			matches: []string{"pool, warming", "pool, warming, old kernel", "pool, released"},
		},
		{
			name:    "keepAfterRelease with target kernels",
			extra:   "{prewarm: {keepAfterRelease: true}, upgrade: {kernelVersions: [6.8.0], kernelVersionLabel: " + kernelLabel + "}}",
			terms:   3,
			matches: []string{"pool, warming", "pool, warming, old kernel", "pool, upgrading, target kernel", "pool, released"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vals := minimal(t, tc.extra)
			vals["pool"] = map[string]any{"nodeSelector": map[string]any{"pool": "notebooks", "tier": "gpu"}}
			r := mustRender(t, vals)
			spec := warmer(t, r).Spec.Template.Spec
			require.NotNil(t, spec.Affinity)
			require.NotNil(t, spec.Affinity.NodeAffinity)
			required := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
			require.NotNil(t, required)
			assert.Len(t, required.NodeSelectorTerms, tc.terms)
			assert.Empty(t, spec.NodeSelector)

			// Every term carries the whole pool selector.
			for i, term := range required.NodeSelectorTerms {
				for k, v := range pool {
					assert.Contains(t, term.MatchExpressions,
						corev1.NodeSelectorRequirement{Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{v}}, "term %d", i)
				}
			}

			// And, evaluated the way the scheduler and the DaemonSet controller do, it admits exactly
			// the expected nodes.
			pod := &corev1.Pod{Spec: spec}
			aff := nodeaffinity.GetRequiredNodeAffinity(pod)
			var got []string
			for name, labels := range nodes {
				ok, err := aff.Match(node(labels))
				require.NoError(t, err)
				if ok {
					got = append(got, name)
				}
			}
			assert.ElementsMatch(t, tc.matches, got)
		})
	}

	t.Run("custom status label values", func(t *testing.T) {
		r := mustRender(t, minimal(t, "statusLabel: {key: example.com/phase, value: pending, warmingValue: pulling}",
			"upgrade: {kernelVersions: [6.8.0], kernelVersionLabel: example.com/kernel}"))
		aff := nodeaffinity.GetRequiredNodeAffinity(&corev1.Pod{Spec: warmer(t, r).Spec.Template.Spec})
		for labels, want := range map[*map[string]string]bool{
			{"pool": "notebooks", "example.com/phase": "pulling"}:                                true,
			{"pool": "notebooks", "example.com/phase": "pending", "example.com/kernel": "6.8.0"}: true,
			{"pool": "notebooks", "example.com/phase": "pending", "example.com/kernel": "6.1.0"}: false,
			{"pool": "notebooks", "os-upgrade/status": "warming"}:                                false,
		} {
			ok, err := aff.Match(node(*labels))
			require.NoError(t, err)
			assert.Equal(t, want, ok, "%v", *labels)
		}
	})
}

func TestConfigMapMatchesValues(t *testing.T) {
	vals := minimal(t, `
pool: {nodeSelector: {pool: notebooks, example.com/tier: gpu}}
taint: {key: example.com/prewarm, value: "yes", effect: NoExecute}
statusLabel: {key: example.com/prewarm-status, value: waiting, warmingValue: pulling}
upgrade:
  kernelVersions: [6.8.0-1, 6.8.0-2]
  kernelVersionLabel: example.com/kernel
  when: '{{ ne .Node.Status.NodeInfo.BootID .Baseline.BootID }}'
maintenance:
  nodeMaintenance: {enabled: true, group: upgrades.example.com, version: v2, resource: drains, namespace: ops, nodeNameField: spec.target.node}
  nodeLabel: {enabled: true, selector: upgrade.example.com/pending=true}
  cordoned: {enabled: true}
maxConcurrent: "30%"
cancelAfter: 7m
maxWaitForUpgrade: 36h
maxWaitForWarm: 90m
onWarmTimeout: keep
events: {namespace: default, transitions: true}
orchestrator: {client: {qps: 7.5, burst: 15, timeout: 45s}}
`)
	r := mustRender(t, vals)
	cfg := parsedConfig(t, r)

	assert.Equal(t, config.APIVersion, cfg.APIVersion)
	assert.Equal(t, config.Kind, cfg.Kind)
	assert.Equal(t, releaseNS+"/"+releaseName, cfg.Instance)
	assert.Equal(t, map[string]string{"pool": "notebooks", "example.com/tier": "gpu"}, cfg.Pool.NodeSelector)
	assert.Equal(t, config.Taint{Key: "example.com/prewarm", Value: "yes", Effect: corev1.TaintEffectNoExecute}, cfg.Taint)
	assert.Equal(t, config.StatusLabel{Key: "example.com/prewarm-status", Value: "waiting", WarmingValue: "pulling"}, cfg.StatusLabel)
	assert.Equal(t, []string{"6.8.0-1", "6.8.0-2"}, cfg.Upgrade.KernelVersions)
	assert.Equal(t, "example.com/kernel", cfg.Upgrade.KernelVersionLabel)
	assert.Equal(t, "{{ ne .Node.Status.NodeInfo.BootID .Baseline.BootID }}", cfg.Upgrade.When)
	assert.Equal(t, config.NodeMaintenanceSource{Enabled: true, Group: "upgrades.example.com", Version: "v2", Resource: "drains",
		Namespace: "ops", NodeNameField: "spec.target.node"}, cfg.Maintenance.NodeMaintenance)
	assert.Equal(t, config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}, cfg.Maintenance.NodeLabel)
	assert.True(t, cfg.Maintenance.Cordoned.Enabled)
	assert.Equal(t, intstr.FromString("30%"), cfg.MaxConcurrent)
	assert.Equal(t, 7*time.Minute, cfg.CancelAfter.Duration)
	assert.Equal(t, 36*time.Hour, cfg.MaxWaitForUpgrade.Duration)
	assert.Equal(t, 90*time.Minute, cfg.MaxWaitForWarm.Duration)
	assert.Equal(t, config.OnWarmTimeoutKeep, cfg.OnWarmTimeout)
	assert.Equal(t, "default", cfg.Events.Namespace)
	assert.True(t, cfg.Events.Transitions)
	require.NotNil(t, cfg.Client.QPS)
	assert.InDelta(t, 7.5, *cfg.Client.QPS, 1e-9)
	assert.Equal(t, 15, cfg.Client.Burst)
	assert.Equal(t, 45*time.Second, cfg.Client.Timeout.Duration)

	// The warmer the orchestrator watches is the DaemonSet the chart renders.
	ds := warmer(t, r)
	assert.Equal(t, config.Warmer{Namespace: releaseNS, DaemonSetName: ds.Name}, cfg.Warmer)
	assert.Equal(t, releaseNS, ds.Namespace)
}

func TestConfigDefaultsMatchTheOrchestrator(t *testing.T) {
	// With only the required values, the chart's config equals the orchestrator's own defaults
	// (apart from what the chart must set), so values.yaml and pkg/config do not drift apart.
	r := mustRender(t, minimal(t))
	cfg := parsedConfig(t, r)
	def := config.Default()
	assert.Equal(t, def.Taint, cfg.Taint)
	assert.Equal(t, def.StatusLabel, cfg.StatusLabel)
	assert.Equal(t, def.Maintenance, cfg.Maintenance)
	assert.Equal(t, def.MaxConcurrent, cfg.MaxConcurrent)
	assert.Equal(t, def.CancelAfter.Duration, cfg.CancelAfter.Duration)
	assert.Equal(t, def.MaxWaitForUpgrade.Duration, cfg.MaxWaitForUpgrade.Duration)
	assert.Equal(t, def.MaxWaitForWarm.Duration, cfg.MaxWaitForWarm.Duration)
	assert.Equal(t, def.OnWarmTimeout, cfg.OnWarmTimeout)
	assert.Equal(t, def.Events, cfg.Events)
	assert.Equal(t, def.Client.QPS, cfg.Client.QPS)
	assert.Equal(t, def.Client.Burst, cfg.Client.Burst)
	assert.Equal(t, def.Client.Timeout.Duration, cfg.Client.Timeout.Duration)
	assert.Equal(t, def.Upgrade.KernelVersionLabel, cfg.Upgrade.KernelVersionLabel)
	assert.Empty(t, cfg.Upgrade.KernelVersions)
	assert.Empty(t, cfg.Upgrade.When)
}

func TestRBACIsLeastPrivilege(t *testing.T) {
	read := []string{"get", "list", "watch"}
	// What informers and lists need: nothing reads these objects one by one.
	watchOnly := []string{"list", "watch"}
	cases := []struct {
		name        string
		extra       string
		clusterRole []rbacv1.PolicyRule
		eventsNS    string
	}{
		{
			name: "defaults",
			clusterRole: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
				{APIGroups: []string{"nodemaintenance.medik8s.io"}, Resources: []string{"nodemaintenances"}, Verbs: watchOnly},
			},
			eventsNS: "default",
		},
		{
			name:  "custom maintenance resource",
			extra: "{maintenance: {nodeMaintenance: {group: upgrades.example.com, resource: drains}}}",
			clusterRole: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
				{APIGroups: []string{"upgrades.example.com"}, Resources: []string{"drains"}, Verbs: watchOnly},
			},
			eventsNS: "default",
		},
		{
			name:  "deployment mode",
			extra: "orchestrator: {mode: deployment}",
			clusterRole: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
				{APIGroups: []string{"nodemaintenance.medik8s.io"}, Resources: []string{"nodemaintenances"}, Verbs: watchOnly},
			},
			eventsNS: "default",
		},
		{
			name:  "no nodeMaintenance source",
			extra: "maintenance: {nodeMaintenance: {enabled: false}, cordoned: {enabled: true}}",
			clusterRole: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch"}},
			},
			eventsNS: "default",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, minimal(t, tc.extra))
			sa := find[*corev1.ServiceAccount](t, r, "-image-prewarmer")
			assert.Equal(t, releaseNS, sa.Namespace)
			hook := find[*corev1.ServiceAccount](t, r, "-cleanup")
			assert.Equal(t, releaseNS, hook.Namespace)
			assert.Equal(t, "cleanup", hook.Labels["app.kubernetes.io/component"])

			cr := find[*rbacv1.ClusterRole](t, r, "")
			assert.Equal(t, tc.clusterRole, cr.Rules)

			roles := all[*rbacv1.Role](r)
			require.Len(t, roles, 3)
			byNS := map[string]*rbacv1.Role{}
			for _, role := range roles {
				switch {
				case strings.HasSuffix(role.Name, "-events"):
					byNS["events"] = role
				case strings.HasSuffix(role.Name, "-uninstall"):
					byNS["uninstall"] = role
				default:
					byNS["release"] = role
				}
			}
			require.Contains(t, byNS, "release")
			require.Contains(t, byNS, "events")
			require.Contains(t, byNS, "uninstall")
			assert.Equal(t, releaseNS, byNS["release"].Namespace)
			releaseRules := []rbacv1.PolicyRule{
				// This release's own warmer DaemonSet and no other: read by name or with a
				// metadata.name field selector. Not patched: that could change its pod template.
				{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{find[*appsv1.DaemonSet](t, r, "").Name},
					Verbs: read},
				{APIGroups: []string{"apps"}, Resources: []string{"controllerrevisions"}, Verbs: watchOnly},
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: watchOnly},
			}
			// Both modes hold the Lease while they write. client-go's LeaseLock: get and update
			// the Lease --leader-elect-name names, and create it (a verb that cannot be limited
			// to a name); no list, watch or delete.
			releaseRules = append(releaseRules,
				rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
					ResourceNames: []string{releaseName + "-image-prewarmer"}, Verbs: []string{"get", "update"}},
				rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}})
			assert.Equal(t, releaseRules, byNS["release"].Rules)
			// The uninstall mark's patch: a pre-delete hook of its own, created before the
			// cleanup Job (weight 0) and deleted with it.
			uninstall := byNS["uninstall"]
			assert.Equal(t, releaseNS, uninstall.Namespace)
			assert.Equal(t, []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"},
				ResourceNames: []string{find[*appsv1.DaemonSet](t, r, "").Name}, Verbs: []string{"patch"}}}, uninstall.Rules)
			assert.Equal(t, []string{"pre-delete", "pre-delete"}, r.Hooks[uninstall.Name], "the Role and its RoleBinding")
			assert.Equal(t, "-5", uninstall.Annotations["helm.sh/hook-weight"])
			assert.Equal(t, "before-hook-creation,hook-succeeded", uninstall.Annotations["helm.sh/hook-delete-policy"])
			assert.Equal(t, tc.eventsNS, byNS["events"].Namespace)
			assert.Equal(t, []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
			}, byNS["events"].Rules)

			// Every binding grants its role to the orchestrator's ServiceAccount and the uninstall
			// hook's, and nothing else; the uninstall mark's patch to the hook's alone, so that no
			// orchestrator pod holds it, even when a failed uninstall leaves that Role behind.
			subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: releaseNS},
				{Kind: "ServiceAccount", Name: hook.Name, Namespace: releaseNS}}
			crb := find[*rbacv1.ClusterRoleBinding](t, r, "")
			assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}, crb.RoleRef)
			assert.Equal(t, subjects, crb.Subjects)
			bindings := all[*rbacv1.RoleBinding](r)
			require.Len(t, bindings, 3)
			for _, rb := range bindings {
				role := byNS["release"]
				switch {
				case rb.Namespace == tc.eventsNS && strings.HasSuffix(rb.Name, "-events"):
					role = byNS["events"]
				case strings.HasSuffix(rb.Name, "-uninstall"):
					role = byNS["uninstall"]
					assert.Equal(t, "-5", rb.Annotations["helm.sh/hook-weight"])
				}
				if role == byNS["uninstall"] {
					assert.Equal(t, subjects[1:], rb.Subjects, rb.Name)
				} else {
					assert.Equal(t, subjects, rb.Subjects, rb.Name)
				}
				assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}, rb.RoleRef)
				assert.Equal(t, role.Namespace, rb.Namespace)
			}

			// Every orchestrator pod runs as the orchestrator's ServiceAccount; the hook as its own.
			for name, pod := range orchestratorPods(t, r) {
				if name == "job/"+find[*batchv1.Job](t, r, "-cleanup").Name {
					assert.Equal(t, hook.Name, pod.ServiceAccountName, name)
					continue
				}
				assert.Equal(t, sa.Name, pod.ServiceAccountName, name)
			}
		})
	}

	t.Run("cluster-scoped names include the namespace", func(t *testing.T) {
		r := mustRender(t, minimal(t))
		assert.Equal(t, releaseNS+"."+releaseName+"-image-prewarmer", find[*rbacv1.ClusterRole](t, r, "").Name)
	})

	t.Run("cleanup ServiceAccount name cut at a dot", func(t *testing.T) {
		name := strings.Repeat("a", 54) + ".b"
		r := mustRender(t, minimal(t, "serviceAccount: {name: "+name+"}"))
		hook := find[*corev1.ServiceAccount](t, r, "-cleanup")
		assert.Equal(t, strings.Repeat("a", 54)+"-cleanup", hook.Name)
		assert.Empty(t, validation.IsDNS1123Subdomain(hook.Name))
	})

	t.Run("existing ServiceAccount", func(t *testing.T) {
		r := mustRender(t, minimal(t, "serviceAccount: {create: false, name: platform-sa}"))
		assert.Empty(t, all[*corev1.ServiceAccount](r))
		assert.Equal(t, "platform-sa", find[*rbacv1.ClusterRoleBinding](t, r, "").Subjects[0].Name)
		for name, pod := range orchestratorPods(t, r) {
			assert.Equal(t, "platform-sa", pod.ServiceAccountName, name)
		}
		_, err := render(t, minimal(t, "serviceAccount: {create: false}"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "serviceAccount.name")
	})
}

func TestPodsMeetRestrictedPodSecurity(t *testing.T) {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	require.NoError(t, err)
	restricted := api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}

	nonroot := ptrTo(int64(65532))
	for _, tc := range []struct {
		method, mode, extra string
		user, group         *int64
	}{
		{method: "hold", mode: "cronjob", user: nonroot, group: nonroot},
		{method: "imageVolume", mode: "cronjob", user: nonroot, group: nonroot},
		{method: "hold", mode: "deployment", user: nonroot, group: nonroot},
		// OpenShift's restricted-v2 assigns the user from the namespace's range.
		{method: "hold", mode: "cronjob", extra: "securityContext: {runAsUser: null, runAsGroup: null}"},
		{method: "hold", mode: "deployment", extra: "securityContext: {runAsUser: 1000650000, runAsGroup: 0}", user: ptrTo(int64(1000650000)), group: ptrTo(int64(0))},
	} {
		method := tc.method
		t.Run(method+"/"+tc.mode+"/"+tc.extra, func(t *testing.T) {
			r := mustRender(t, minimal(t, "prewarm: {method: "+method+"}", "orchestrator: {mode: "+tc.mode+"}", tc.extra))
			pods := orchestratorPods(t, r)
			ds := warmer(t, r)
			pods["daemonset/"+ds.Name] = ds.Spec.Template.Spec
			require.Len(t, pods, 4, "CronJob or Deployment, cleanup hook, test hook, warmer")

			for name, spec := range pods {
				// The admission plugin's own checks, at the restricted level.
				meta := &metav1.ObjectMeta{Name: name}
				for _, res := range evaluator.EvaluatePod(restricted, meta, &spec) {
					assert.True(t, res.Allowed, "%s: %s: %s", name, res.ForbiddenReason, res.ForbiddenDetail)
				}
				// And the chart's own bar, beyond the standard.
				require.NotNil(t, spec.SecurityContext, name)
				assert.Equal(t, ptrTo(true), spec.SecurityContext.RunAsNonRoot, name)
				assert.Equal(t, tc.user, spec.SecurityContext.RunAsUser, name)
				assert.Equal(t, tc.group, spec.SecurityContext.RunAsGroup, name)
				require.NotNil(t, spec.SecurityContext.SeccompProfile, name)
				assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, spec.SecurityContext.SeccompProfile.Type, name)
				containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
				require.NotEmpty(t, containers)
				for _, c := range containers {
					sc := c.SecurityContext
					require.NotNil(t, sc, "%s/%s", name, c.Name)
					assert.Equal(t, ptrTo(true), sc.RunAsNonRoot, "%s/%s", name, c.Name)
					assert.Equal(t, tc.user, sc.RunAsUser, "%s/%s", name, c.Name)
					assert.Equal(t, tc.group, sc.RunAsGroup, "%s/%s", name, c.Name)
					assert.Equal(t, ptrTo(false), sc.AllowPrivilegeEscalation, "%s/%s", name, c.Name)
					assert.Equal(t, ptrTo(true), sc.ReadOnlyRootFilesystem, "%s/%s", name, c.Name)
					require.NotNil(t, sc.Capabilities, "%s/%s", name, c.Name)
					assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "%s/%s", name, c.Name)
					assert.Empty(t, sc.Capabilities.Add, "%s/%s", name, c.Name)
					require.NotNil(t, sc.SeccompProfile, "%s/%s", name, c.Name)
					assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type, "%s/%s", name, c.Name)
					assert.Contains(t, c.Resources.Limits, corev1.ResourceMemory, "%s/%s has no memory limit", name, c.Name)
					assert.False(t, c.Resources.Requests.Memory().IsZero(), "%s/%s has no memory request", name, c.Name)
				}
			}

			// The warmer needs no API access: no token.
			assert.Equal(t, ptrTo(false), ds.Spec.Template.Spec.AutomountServiceAccountToken)
			assert.Empty(t, ds.Spec.Template.Spec.ServiceAccountName)
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestWarmerDaemonSet(t *testing.T) {
	r := mustRender(t, minimal(t, "prewarm: {priorityClassName: prewarm, imagePullSecrets: [{name: regcred}]}"))
	ds := warmer(t, r)
	require.NotNil(t, ds.Spec.UpdateStrategy.RollingUpdate)
	assert.Equal(t, appsv1.RollingUpdateDaemonSetStrategyType, ds.Spec.UpdateStrategy.Type)
	assert.Equal(t, intstr.FromString("100%"), *ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable)
	spec := ds.Spec.Template.Spec
	require.NotNil(t, spec.TerminationGracePeriodSeconds)
	assert.LessOrEqual(t, *spec.TerminationGracePeriodSeconds, int64(10))
	assert.Equal(t, "prewarm", spec.PriorityClassName)
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, spec.ImagePullSecrets)

	// Pod template labels are stable (no chart or app version) and select the pods.
	podLabels := ds.Spec.Template.Labels
	for k := range podLabels {
		assert.NotContains(t, []string{"helm.sh/chart", "app.kubernetes.io/version"}, k)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(labelSet(podLabels)))
	// The object's labels include the selector labels.
	for k, v := range ds.Spec.Selector.MatchLabels {
		assert.Equal(t, v, ds.Labels[k], k)
	}

	t.Run("chart version does not change the pod template", func(t *testing.T) {
		c := loadChart(t)
		c.Metadata.Version = "9.9.9"
		c.Metadata.AppVersion = "9.9.9"
		other := warmer(t, mustRender(t, minimal(t, "prewarm: {priorityClassName: prewarm, imagePullSecrets: [{name: regcred}]}",
			"orchestrator: {image: {tag: '0.1.0'}}"), renderOpts{chart: c}))
		assert.NotEqual(t, ds.Labels["helm.sh/chart"], other.Labels["helm.sh/chart"])
		assert.Equal(t, ds.Spec.Template, other.Spec.Template)
	})
}

// Every warmer pod runs the orchestrator image (the copy-hold init container, or the hold
// container): from a private mirror it needs orchestrator.imagePullSecrets as well as
// prewarm.imagePullSecrets, or every warmer pod sits in ImagePullBackOff. Each secret once.
func TestWarmerGetsTheOrchestratorPullSecrets(t *testing.T) {
	const mirror = "mirror.example.com/prewarm-orchestrator"
	cases := []struct {
		name                  string
		method                string
		images                []any
		prewarm, orchestrator string
		want                  []corev1.LocalObjectReference
	}{
		{name: "hold", method: "hold", prewarm: "[{name: registry}, {name: shared}]", orchestrator: "[{name: mirror}, {name: shared}]",
			want: []corev1.LocalObjectReference{{Name: "registry"}, {Name: "shared"}, {Name: "mirror"}}},
		{name: "hold, no images", method: "hold", images: []any{}, prewarm: "[]", orchestrator: "[{name: mirror}]",
			want: []corev1.LocalObjectReference{{Name: "mirror"}}},
		{name: "imageVolume", method: "imageVolume", prewarm: "[{name: registry}]", orchestrator: "[{name: mirror}, {name: mirror}]",
			want: []corev1.LocalObjectReference{{Name: "registry"}, {Name: "mirror"}}},
		{name: "no orchestrator secrets", method: "hold", prewarm: "[{name: registry}]", orchestrator: "[]",
			want: []corev1.LocalObjectReference{{Name: "registry"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vals := minimal(t, fmt.Sprintf("{prewarm: {method: %s, imagePullSecrets: %s}, orchestrator: {image: {repository: %s}, imagePullSecrets: %s}}",
				tc.method, tc.prewarm, mirror, tc.orchestrator))
			if tc.images != nil {
				vals["images"] = tc.images
			}
			r := mustRender(t, vals)
			spec := warmer(t, r).Spec.Template.Spec
			runsOrchestrator := false
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				runsOrchestrator = runsOrchestrator || strings.HasPrefix(c.Image, mirror+":")
			}
			require.True(t, runsOrchestrator, "the warmer runs the orchestrator image")
			assert.Equal(t, tc.want, spec.ImagePullSecrets)
		})
	}
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

func TestHoldMethod(t *testing.T) {
	images := []string{"registry.example.com/a:1", "registry.example.com/b@sha256:" + strings.Repeat("ab", 32), "scratch-only:2"}
	vals := minimal(t, "orchestrator: {image: {repository: example.com/orch, tag: v9}}")
	vals["images"] = []any{images[0], images[1], images[2]}
	spec := warmer(t, mustRender(t, vals)).Spec.Template.Spec

	require.Len(t, spec.InitContainers, 1)
	init := spec.InitContainers[0]
	assert.Equal(t, "example.com/orch:v9", init.Image)
	assert.Equal(t, []string{"/usr/local/bin/prewarm-orchestrator", "hold", "--copy-to", "/prewarm/prewarm-orchestrator"},
		append(append([]string{}, init.Command...), init.Args...))
	assert.Equal(t, []corev1.VolumeMount{{Name: "prewarm", MountPath: "/prewarm"}}, init.VolumeMounts)

	require.Len(t, spec.Volumes, 1)
	assert.Equal(t, "prewarm", spec.Volumes[0].Name)
	assert.NotNil(t, spec.Volumes[0].EmptyDir)

	require.Len(t, spec.Containers, len(images))
	names := map[string]bool{}
	for i, c := range spec.Containers {
		assert.Equal(t, images[i], c.Image)
		assert.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy)
		assert.Equal(t, []string{"/prewarm/prewarm-orchestrator", "hold"}, append(append([]string{}, c.Command...), c.Args...))
		assert.Equal(t, []corev1.VolumeMount{{Name: "prewarm", MountPath: "/prewarm", ReadOnly: true}}, c.VolumeMounts)
		// The image's environment reaches hold: a GOMEMLIMIT Go cannot parse (an image's "512M")
		// would stop the Go runtime before main, so the container sets its own.
		assert.Contains(t, c.Env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: "off"})
		names[c.Name] = true
	}
	assert.Len(t, names, len(images), "container names are unique")

	t.Run("no images: one hold container of the orchestrator image", func(t *testing.T) {
		vals := minimal(t)
		vals["images"] = []any{}
		r := mustRender(t, vals)
		spec := warmer(t, r).Spec.Template.Spec
		assert.Empty(t, spec.InitContainers)
		require.Len(t, spec.Containers, 1)
		assert.Equal(t, "ghcr.io/image-prewarmer/prewarm-orchestrator:0.1.0", spec.Containers[0].Image)
		assert.Equal(t, []string{"hold"}, spec.Containers[0].Args)
		assert.Contains(t, r.Notes, "WARNING: images is empty")
	})
}

// The chart names the oldest Kubernetes whose API has every field it renders: below it Helm refuses
// to install, saying why, rather than let the API server drop timeZone and the PDB's eviction
// policy without a word.
func TestKubeVersionFloor(t *testing.T) {
	for _, v := range []string{"v1.26.15", "v1.25.0"} {
		_, err := render(t, minimal(t), renderOpts{kubeVersion: v})
		require.Error(t, err, v)
		assert.Contains(t, err.Error(), ">=1.27.0-0", v)
	}
	for _, v := range []string{"v1.27.0", "v1.31.4", "v1.36.3"} {
		_, err := render(t, minimal(t), renderOpts{kubeVersion: v})
		assert.NoError(t, err, v)
	}
}

func TestImageVolumeMethod(t *testing.T) {
	vals := minimal(t, "prewarm: {method: imageVolume}")

	for _, v := range []string{"v1.34.2", "v1.30.0"} {
		t.Run("refused on "+v, func(t *testing.T) {
			_, err := render(t, vals, renderOpts{kubeVersion: v})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "prewarm.method")
			assert.Contains(t, err.Error(), "1.35")
		})
	}
	for _, v := range []string{"v1.35.0", "v1.36.3"} {
		t.Run("rendered on "+v, func(t *testing.T) {
			spec := warmer(t, mustRender(t, vals, renderOpts{kubeVersion: v})).Spec.Template.Spec
			assert.Empty(t, spec.InitContainers)
			require.Len(t, spec.Containers, 1)
			c := spec.Containers[0]
			assert.Equal(t, "ghcr.io/image-prewarmer/prewarm-orchestrator:0.1.0", c.Image)
			assert.Equal(t, []string{"/usr/local/bin/prewarm-orchestrator", "hold"}, append(append([]string{}, c.Command...), c.Args...))
			images := []string{"registry.example.com/a:1", "registry.example.com/b:2"}
			require.Len(t, spec.Volumes, len(images))
			require.Len(t, c.VolumeMounts, len(images))
			for i, vol := range spec.Volumes {
				require.NotNil(t, vol.Image, vol.Name)
				assert.Equal(t, images[i], vol.Image.Reference)
				assert.Equal(t, corev1.PullIfNotPresent, vol.Image.PullPolicy)
				assert.Equal(t, vol.Name, c.VolumeMounts[i].Name)
				assert.True(t, c.VolumeMounts[i].ReadOnly)
			}
		})
	}
}

func TestCronJob(t *testing.T) {
	r := mustRender(t, minimal(t, `{schedule: "*/7 * * * *", orchestrator: {cronJob: {suspend: true, timeZone: Etc/UTC}, podAnnotations: {team: platform}}}`))
	cj := find[*batchv1.CronJob](t, r, "")
	assert.Equal(t, "*/7 * * * *", cj.Spec.Schedule)
	assert.Equal(t, batchv1.ForbidConcurrent, cj.Spec.ConcurrencyPolicy)
	assert.Equal(t, ptrTo(true), cj.Spec.Suspend)
	assert.Equal(t, ptrTo("Etc/UTC"), cj.Spec.TimeZone)
	assert.Equal(t, ptrTo(int64(300)), cj.Spec.StartingDeadlineSeconds)
	assert.Equal(t, ptrTo(int32(3)), cj.Spec.SuccessfulJobsHistoryLimit)
	assert.Equal(t, ptrTo(int32(3)), cj.Spec.FailedJobsHistoryLimit)
	job := cj.Spec.JobTemplate.Spec
	assert.Equal(t, ptrTo(int32(2)), job.BackoffLimit)
	assert.Equal(t, ptrTo(int64(600)), job.ActiveDeadlineSeconds)
	pod := job.Template
	assert.Equal(t, "platform", pod.Annotations["team"])
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	assert.Equal(t, []string{"/usr/local/bin/prewarm-orchestrator"}, c.Command)
	// The Deployment mode's Lease: a cycle never writes next to its leader or another cycle.
	assert.Equal(t, []string{"run", "--once", "--leader-elect-name=prewarm-image-prewarmer", "--config=/etc/image-prewarmer/config.yaml", "--log-format=json", "-v=0"}, c.Args)
	deployment := find[*appsv1.Deployment](t, mustRender(t, minimal(t, "orchestrator: {mode: deployment}")), "").Spec.Template.Spec.Containers[0]
	assert.Contains(t, deployment.Args, "--leader-elect-name=prewarm-image-prewarmer", "the same Lease in both modes")
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "config", MountPath: "/etc/image-prewarmer", ReadOnly: true})
	assert.Contains(t, c.Args, "--config="+config.DefaultPath, "the binary's default path: a pod run without --config reads the same file")
	cm := find[*corev1.ConfigMap](t, r, "")
	require.Len(t, pod.Spec.Volumes, 1)
	assert.Equal(t, cm.Name, pod.Spec.Volumes[0].ConfigMap.Name)

	t.Run("checksum/config follows the config", func(t *testing.T) {
		sum := pod.Annotations["checksum/config"]
		require.Len(t, sum, 64)
		values := `{schedule: "*/7 * * * *", orchestrator: {cronJob: {suspend: true, timeZone: Etc/UTC}, podAnnotations: {team: platform}}}`
		same := find[*batchv1.CronJob](t, mustRender(t, minimal(t, values)), "")
		assert.Equal(t, sum, same.Spec.JobTemplate.Spec.Template.Annotations["checksum/config"])
		changed := find[*batchv1.CronJob](t, mustRender(t, minimal(t, values, "maxWaitForWarm: 3h")), "")
		assert.NotEqual(t, sum, changed.Spec.JobTemplate.Spec.Template.Annotations["checksum/config"], "the config alone changed")
	})

	t.Run("dryRun, log format, verbosity", func(t *testing.T) {
		r := mustRender(t, minimal(t, "orchestrator: {dryRun: true, logFormat: text, verbosity: 3}"))
		c := find[*batchv1.CronJob](t, r, "").Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		assert.Equal(t, []string{"run", "--once", "--leader-elect-name=prewarm-image-prewarmer", "--dry-run", "--config=/etc/image-prewarmer/config.yaml", "--log-format=text", "-v=3"}, c.Args)
		assert.Equal(t, []corev1.EnvVar{
			{Name: "PREWARM_MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		}, c.Env, "the Go runtime knows the container's memory limit; the Lease its holder and namespace")
		assert.Contains(t, r.Notes, "WARNING: orchestrator.dryRun is true")

		// A dry run takes no Lease: the NOTES do not point at one.
		deployment := mustRender(t, minimal(t, "orchestrator: {mode: deployment}"))
		assert.Contains(t, deployment.Notes, "kubectl get lease")
		dry := mustRender(t, minimal(t, "orchestrator: {mode: deployment, dryRun: true}"))
		assert.NotContains(t, dry.Notes, "kubectl get lease")
		assert.NotContains(t, dry.Notes, "one replica leads")
		assert.Contains(t, dry.Notes, "none takes the Lease")
		assert.Contains(t, deployment.Notes, "one replica leads")
		assert.Contains(t, deployment.Notes, "released\n  as soon as its warmer pod is Ready")
		assert.Contains(t, mustRender(t, minimal(t)).Notes, "released\n  by the first scheduled run after its warmer pod is Ready",
			"a CronJob releases a node at its next run")
	})

	t.Run("pushgateway", func(t *testing.T) {
		for _, u := range []string{"https://user:secret@pushgateway.example.com/prefix", "http://[fd00::1]:9091", "http://10.0.0.1:9091"} {
			mustRender(t, minimal(t, "orchestrator: {cronJob: {pushgateway: '"+u+"'}}"))
		}
		// The chart refuses what the orchestrator would refuse at every run; of what it takes, the
		// chart refuses only oddities (spaces, quotes, control characters) no Pushgateway URL has.
		for _, u := range []string{
			"HTTP://pg:9091", "http://user:p@ss@pg:9091", "http://pg/?q=%zz", "http://pgé.example:9091", "http://[fe80::1%25eth0]:9091",
			"http://pushgateway.monitoring:9091/%zz", "http://push%gw:9091", "http://pg:9091/a%2Fb", "http://pg/?q=%41#f%20",
			"http://u%3A:p%40@pg:9091", "http://u%zz@pg:9091", "http://[1:]:9091", "http://[::1]:9091", "http://[fd00::1]/x",
			"http://pg{x}:9091", "http://pg:9091/\x01", "http://pg:9091/\x7f", "http://pg|x:9091", "http://pg:9091/é",
			"https://pg.example.com:443/base?x=1&y=2#frag", "http://pg:x", "http://pg:", "http://pg:9091/?", "http://pg:9091/#",
		} {
			_, err := render(t, map[string]any{
				"pool": map[string]any{"nodeSelector": map[string]any{"pool": "notebooks"}}, "images": []any{"registry.example.com/a:1"},
				"orchestrator": map[string]any{"cronJob": map[string]any{"pushgateway": u}},
			})
			if want := cli.ValidatePushgateway(u); want == nil {
				assert.NoError(t, err, "%q: the orchestrator takes it", u)
			} else {
				assert.Error(t, err, "%q: the orchestrator refuses it (%v)", u, want)
			}
		}
		r := mustRender(t, minimal(t, "orchestrator: {cronJob: {pushgateway: 'http://pushgateway.monitoring:9091'}}"))
		c := find[*batchv1.CronJob](t, r, "").Spec.JobTemplate.Spec.Template.Spec.Containers[0]
		assert.Equal(t, []string{"run", "--once", "--leader-elect-name=prewarm-image-prewarmer", "--pushgateway=http://pushgateway.monitoring:9091", "--config=/etc/image-prewarmer/config.yaml", "--log-format=json", "-v=0"}, c.Args)
	})

	t.Run("no Deployment, Service or PDB in cronjob mode", func(t *testing.T) {
		assert.Empty(t, all[*appsv1.Deployment](r))
		assert.Empty(t, all[*corev1.Service](r))
		assert.Empty(t, all[*policyv1.PodDisruptionBudget](r))
		assert.Empty(t, all[*unstructured.Unstructured](r))
	})

	t.Run("orchestrator pods prefer nodes outside the pool unless affinity is set", func(t *testing.T) {
		spec := find[*batchv1.CronJob](t, r, "").Spec.JobTemplate.Spec.Template.Spec
		require.NotNil(t, spec.Affinity)
		pref := spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution
		require.Len(t, pref, 1)
		assert.Equal(t, []corev1.NodeSelectorRequirement{{Key: "pool", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"notebooks"}}},
			pref[0].Preference.MatchExpressions)
		assert.Nil(t, spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution)

		custom := mustRender(t, minimal(t, "orchestrator: {affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: role, operator: In, values: [system]}]}]}}}}"))
		cspec := find[*batchv1.CronJob](t, custom, "").Spec.JobTemplate.Spec.Template.Spec
		assert.Nil(t, cspec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
		assertRequiresRoleSystem(t, cspec.Affinity.NodeAffinity)
	})
}

func TestHooks(t *testing.T) {
	r := mustRender(t, minimal(t))
	cm := find[*corev1.ConfigMap](t, r, "")
	cases := []struct {
		suffix string
		events []string
		args   []string
		policy string
	}{
		{"-cleanup", []string{"pre-delete"}, []string{"cleanup", "--uninstall"}, "before-hook-creation,hook-succeeded"},
		{"-test", []string{"test"}, []string{"run", "--once", "--dry-run"}, "before-hook-creation,hook-succeeded"},
	}
	for _, tc := range cases {
		t.Run(tc.suffix, func(t *testing.T) {
			job := find[*batchv1.Job](t, r, tc.suffix)
			assert.Equal(t, tc.events, r.Hooks[job.Name])
			assert.Equal(t, tc.policy, job.Annotations["helm.sh/hook-delete-policy"])
			assert.Equal(t, releaseNS, job.Namespace)
			require.NotNil(t, job.Spec.BackoffLimit)
			require.NotNil(t, job.Spec.ActiveDeadlineSeconds)
			spec := job.Spec.Template.Spec
			assert.Equal(t, corev1.RestartPolicyNever, spec.RestartPolicy)
			require.Len(t, spec.Containers, 1)
			c := spec.Containers[0]
			assert.Equal(t, append(tc.args, "--config=/etc/image-prewarmer/config.yaml", "--log-format=json", "-v=0"), c.Args)
			assert.Equal(t, cm.Name, spec.Volumes[0].ConfigMap.Name)
		})
	}
	// Only these two Jobs and the uninstall mark's Role and RoleBinding are hooks: the
	// ServiceAccount, the rest of the RBAC and the ConfigMap the hooks use are ordinary release
	// objects, which Helm deletes only after the pre-delete hook has run.
	assert.Len(t, r.Hooks, 3)
	assert.Contains(t, r.Hooks, releaseName+"-image-prewarmer-uninstall")
}

// A pod of the orchestrator's Jobs evicted by a node drain does not count against backoffLimit:
// an uninstall during a rolling node upgrade must not fail because its hook's pod was drained.
// Exit codes count as usual (2, an invalid configuration, is also the Go runtime's crash code).
func TestJobsDoNotCountDrainsAsFailures(t *testing.T) {
	r := mustRender(t, minimal(t))
	want := &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
			{Type: corev1.DisruptionTarget}}},
	}}
	jobs := map[string]batchv1.JobSpec{
		"CronJob":      find[*batchv1.CronJob](t, r, "").Spec.JobTemplate.Spec,
		"cleanup hook": find[*batchv1.Job](t, r, "-cleanup").Spec,
		"helm test":    find[*batchv1.Job](t, r, "-test").Spec,
	}
	for name, spec := range jobs {
		assert.Equal(t, want, spec.PodFailurePolicy, name)
		assert.Equal(t, corev1.RestartPolicyNever, spec.Template.Spec.RestartPolicy, name+": a pod failure policy needs it")
	}
}

// Helm accepts release names of up to 53 characters; every object must still get a name the API
// server accepts for its kind: at most 52 characters for a CronJob (its Jobs' names add 11), a
// DNS-1035 label for a Service, at most 63 characters for a Job (its name is a pod label value). A
// name cut short must not end with a dot (release names may hold dots), nor must the Job name
// the NOTES suggest.
func TestLongReleaseNames(t *testing.T) {
	manualJob := regexp.MustCompile(`--from=cronjob/\S+ (\S+)-manual-\$\(date \+%s\)`)
	for _, name := range []string{
		"notebooks-westeurope-production-prewarm", strings.Repeat("r", 53),
		strings.Repeat("r", 51) + ".a", strings.Repeat("r", 39) + "." + strings.Repeat("b", 13),
	} {
		for _, mode := range []string{"cronjob", "deployment"} {
			t.Run(fmt.Sprintf("%d characters, %s", len(name), mode), func(t *testing.T) {
				r := mustRender(t, minimal(t, "orchestrator: {mode: "+mode+"}"), renderOpts{releaseName: name})
				for _, o := range r.Objects {
					n := objName(o)
					switch o.(type) {
					case *batchv1.CronJob:
						assert.LessOrEqual(t, len(n), 52, "CronJob %s", n)
						assert.Empty(t, validation.IsDNS1123Subdomain(n), "CronJob %s", n)
						assert.Contains(t, r.Notes, "cronjob/"+n+" ", "NOTES name the CronJob")
						m := manualJob.FindStringSubmatch(r.Notes)
						require.NotNil(t, m, "NOTES suggest a Job:\n%s", r.Notes)
						assert.Empty(t, validation.IsDNS1123Label(m[1]+"-manual-1764300000"), "the NOTES' Job name %s", m[1])
					case *corev1.Service:
						assert.Empty(t, validation.IsDNS1035Label(n), "Service %s", n)
						assert.Contains(t, r.Notes, "Service "+n+",", "NOTES name the metrics Service")
					case *batchv1.Job, *appsv1.DaemonSet, *appsv1.Deployment:
						// Its name is a label value of its pods: at most 63 characters.
						assert.LessOrEqual(t, len(n), 63, "%T %s", o, n)
						assert.Empty(t, validation.IsDNS1123Subdomain(n), "%T %s", o, n)
					default:
						assert.Empty(t, validation.IsDNS1123Subdomain(n), "%T %s", o, n)
					}
				}
			})
		}
	}
}

func TestNotes(t *testing.T) {
	r := mustRender(t, minimal(t))
	assert.Contains(t, r.Notes, "kubectl get nodes -l pool=notebooks -L os-upgrade/status")
	assert.Contains(t, r.Notes, "prewarm-orchestrator status")
	assert.Contains(t, r.Notes, "helm test "+releaseName+" -n "+releaseNS)
	assert.NotContains(t, r.Notes, "WARNING")
	assert.NotContains(t, r.Notes, "keepAfterRelease")

	r = mustRender(t, minimal(t, "onWarmTimeout: keep"))
	assert.Contains(t, r.Notes, `WARNING: onWarmTimeout is "keep"`)

	r = mustRender(t, minimal(t, "prewarm: {keepAfterRelease: true}"))
	assert.Contains(t, r.Notes, "the whole pool pulls the images")

	// Images whose tag moves: the NOTES name them, and not the pinned ones (a port is no tag).
	notes := mustRender(t, minimal(t, "images: [registry.example.com:5000/base, example.com/a:latest, example.com/b:1.2, "+
		"example.com/c@sha256:"+strings.Repeat("0", 64)+", example.com/d:latest@sha256:"+strings.Repeat("1", 64)+", e]")).Notes
	assert.Contains(t, notes, "WARNING: registry.example.com:5000/base, example.com/a:latest, e: no tag other than latest, nor digest")
	assert.NotContains(t, mustRender(t, minimal(t, "images: [example.com/b:1.2, registry.example.com:5000/x/y:2]")).Notes, "nor digest")

	// The medik8s source without the operator's drain taint tolerated: the NOTES say so, and
	// not once the warmer tolerates it (by key, or every taint).
	const drain = "The medik8s operator taints a node medik8s.io/drain:NoSchedule"
	assert.Contains(t, mustRender(t, minimal(t)).Notes, drain)
	for _, tolerated := range []string{
		"prewarm: {extraTolerations: [{key: medik8s.io/drain, operator: Exists, effect: NoSchedule}]}",
		"prewarm: {extraTolerations: [{key: medik8s.io/drain, operator: Exists}]}",
		"prewarm: {extraTolerations: [{operator: Exists}]}",
		"maintenance: {nodeMaintenance: {enabled: false}, cordoned: {enabled: true}}",
		"maintenance: {nodeMaintenance: {group: maintenance.example.com}}",
	} {
		assert.NotContains(t, mustRender(t, minimal(t, tolerated)).Notes, drain, tolerated)
	}
	assert.Contains(t, mustRender(t, minimal(t, "prewarm: {extraTolerations: [{key: medik8s.io/drain, operator: Exists, effect: NoExecute}]}")).Notes, drain)
}

func TestBadValuesAreRefused(t *testing.T) {
	cases := []struct {
		name  string
		extra string // YAML merged over minimal values; "pool: null" style removals are explicit below
		set   func(map[string]any)
		want  []string // substrings of the error: the value's path and the reason
	}{
		{name: "empty schedule", extra: `schedule: ""`, want: []string{"/schedule"}},
		{name: "warmer request above the default limit", extra: `prewarm: {resources: {requests: {cpu: 200m}}}`,
			want: []string{"prewarm.resources.requests.cpu (200m) is above prewarm.resources.limits.cpu (100m)", "raise the limit too"}},
		{name: "orchestrator request above its limit", extra: `orchestrator: {resources: {requests: {memory: 0.5Gi}, limits: {memory: 256Mi}}}`,
			want: []string{"orchestrator.resources.requests.memory (0.5Gi) is above orchestrator.resources.limits.memory (256Mi)"}},
		{name: "request in cores above a limit in millicores", extra: `prewarm: {resources: {requests: {cpu: 1}, limits: {cpu: 500m}}}`,
			want: []string{"prewarm.resources.requests.cpu (1) is above prewarm.resources.limits.cpu (500m)"}},
		// The API server lets neither hugepages nor extended resources be overcommitted.
		{name: "extended resource requested without a limit", extra: `prewarm: {resources: {requests: {example.com/fpga: 1}}}`,
			want: []string{"prewarm.resources.requests.example.com/fpga needs prewarm.resources.limits.example.com/fpga, equal to it"}},
		{name: "hugepages request below its limit", extra: `orchestrator: {resources: {requests: {hugepages-2Mi: 2Mi}, limits: {hugepages-2Mi: 4Mi}}}`,
			want: []string{"orchestrator.resources.requests.hugepages-2Mi (2Mi) must equal orchestrator.resources.limits.hugepages-2Mi (4Mi)"}},
		{name: "fraction of an extended resource", extra: `prewarm: {resources: {limits: {example.com/fpga: 500m}}}`,
			want: []string{"prewarm.resources.limits.example.com/fpga (500m) must be a whole number"}},
		{name: "fraction of an extended resource in micro-units", extra: `prewarm: {resources: {limits: {example.com/fpga: 1500u}}}`,
			want: []string{"prewarm.resources.limits.example.com/fpga (1500u) must be a whole number"}},
		{name: "hugepages one byte apart", extra: `prewarm: {resources: {requests: {hugepages-1Gi: 4Gi}, limits: {hugepages-1Gi: 4294967297}}}`,
			want: []string{"prewarm.resources.requests.hugepages-1Gi (4Gi) must equal"}},
		{name: "hugepages in exponent form", extra: `prewarm: {resources: {requests: {hugepages-2Mi: 2e6}, limits: {hugepages-2Mi: 4e6}}}`,
			want: []string{"prewarm.resources.requests.hugepages-2Mi", "must equal"}},
		// Integers the API server keeps in int32 or int64 fields: an overflow would be refused at
		// install, or, for the cleanup Job (a hook), only at helm uninstall.
		{name: "cleanup Job backoff limit above int32", extra: `orchestrator: {cleanupJob: {backoffLimit: 2147483648}}`,
			want: []string{"/orchestrator/cleanupJob/backoffLimit", "maximum"}},
		{name: "cleanup Job deadline out of range", extra: `orchestrator: {cleanupJob: {activeDeadlineSeconds: 1e19}}`,
			want: []string{"/orchestrator/cleanupJob/activeDeadlineSeconds", "maximum"}},
		{name: "client burst above int32", extra: `orchestrator: {client: {burst: 10000000000000000000}}`,
			want: []string{"/orchestrator/client/burst", "maximum"}},
		{name: "replicas above int32", extra: `orchestrator: {deployment: {replicas: 2147483648}}`,
			want: []string{"/orchestrator/deployment/replicas", "maximum"}},
		{name: "toleration seconds out of range", extra: `prewarm: {extraTolerations: [{key: a, operator: Exists, effect: NoExecute, tolerationSeconds: 1e19}]}`,
			want: []string{"/prewarm/extraTolerations/0/tolerationSeconds", "maximum"}},
		// The chart grants list and watch on the maintenance resource: never on secrets.
		{name: "maintenance resource in the core group", extra: `maintenance: {nodeMaintenance: {group: "", resource: secrets}}`,
			want: []string{"/maintenance/nodeMaintenance/group"}},
		{name: "maintenance resource in a group without a dot", extra: `maintenance: {nodeMaintenance: {group: apps, resource: daemonsets}}`,
			want: []string{"/maintenance/nodeMaintenance/group"}},
		{name: "exempt priority level", extra: `orchestrator: {flowSchema: {enabled: true, priorityLevel: exempt}}`,
			want: []string{"orchestrator.flowSchema.priorityLevel: exempt would take the orchestrator's requests out of API Priority and Fairness"}},
		{name: "pull secret with a misspelt key", extra: `prewarm: {imagePullSecrets: [{name: a, nmae: b}]}`,
			want: []string{"/prewarm/imagePullSecrets/0", "nmae"}},
		{name: "schedule not a string", extra: `schedule: 5`, want: []string{"/schedule", "want string"}},
		{name: "empty pool selector", set: func(v map[string]any) { v["pool"] = map[string]any{"nodeSelector": map[string]any{}} }, want: []string{"/pool/nodeSelector", "minProperties"}},
		{name: "no pool", set: func(v map[string]any) { delete(v, "pool") }, want: []string{"/pool/nodeSelector", "minProperties"}},
		{name: "pool label value not a string", extra: "pool: {nodeSelector: {pool: 3}}", want: []string{"/pool/nodeSelector/pool"}},
		{name: "bad pool label key", extra: "pool: {nodeSelector: {'bad key': x}}", want: []string{"/pool/nodeSelector"}},
		{name: "unknown top-level key", extra: "imagez: [a]", want: []string{"additional properties 'imagez' not allowed"}},
		{name: "unknown nested key", extra: "prewarm: {keepAfterReleas: true}", want: []string{"/prewarm", "keepAfterReleas"}},
		{name: "unknown orchestrator key", extra: "orchestrator: {cronjob: {suspend: true}}", want: []string{"/orchestrator", "cronjob"}},
		{name: "images not a list", extra: "images: registry.example.com/a:1", want: []string{"/images", "want array"}},
		{name: "image not a string", extra: "images: [3]", want: []string{"/images/0"}},
		{name: "empty image", extra: `images: [""]`, want: []string{"/images/0"}},
		{name: "negative cancelAfter", extra: "cancelAfter: -5m", want: []string{"/cancelAfter"}},
		{name: "malformed maxWaitForUpgrade", extra: "maxWaitForUpgrade: 1 day", want: []string{"/maxWaitForUpgrade"}},
		{name: "zero maxWaitForWarm", extra: "maxWaitForWarm: 0s", want: []string{"/maxWaitForWarm"}},
		{name: "duration as a number", extra: "maxWaitForWarm: 3600", want: []string{"/maxWaitForWarm"}},
		{name: "zero qps", extra: "orchestrator: {client: {qps: 0}}", want: []string{"/orchestrator/client/qps"}},
		{name: "negative qps other than -1", extra: "orchestrator: {client: {qps: -2}}", want: []string{"/orchestrator/client/qps"}},
		{name: "negative client timeout", extra: "orchestrator: {client: {timeout: -1s}}", want: []string{"/orchestrator/client/timeout"}},
		{name: "negative budget", extra: "maxConcurrent: -1", want: []string{"/maxConcurrent"}},
		{name: "budget over 100%", extra: "maxConcurrent: 101%", want: []string{"/maxConcurrent"}},
		{name: "budget 0%", extra: "maxConcurrent: 0%", want: []string{"/maxConcurrent"}},
		{name: "budget with a leading zero", extra: "maxConcurrent: 05%", want: []string{"/maxConcurrent"}},
		{name: "budget not a percentage", extra: "maxConcurrent: lots", want: []string{"/maxConcurrent"}},
		{name: "fractional budget", extra: "maxConcurrent: 1.5", want: []string{"/maxConcurrent"}},
		{name: "bad onWarmTimeout", extra: "onWarmTimeout: retry", want: []string{"/onWarmTimeout", "release", "keep"}},
		{name: "bad taint effect", extra: "taint: {effect: NoScheduleX}", want: []string{"/taint/effect", "NoSchedule"}},
		{name: "bad taint key", extra: "taint: {key: 'os upgrade'}", want: []string{"/taint/key"}},
		{name: "empty status value", extra: `statusLabel: {value: ""}`, want: []string{"/statusLabel/value"}},
		{name: "bad prewarm method", extra: "prewarm: {method: pull}", want: []string{"/prewarm/method", "hold", "imageVolume"}},
		{name: "bad mode", extra: "orchestrator: {mode: daemon}", want: []string{"/orchestrator/mode", "cronjob"}},
		{name: "bad log format", extra: "orchestrator: {logFormat: xml}", want: []string{"/orchestrator/logFormat"}},
		{name: "bad pull policy", extra: "orchestrator: {image: {pullPolicy: Sometimes}}", want: []string{"/orchestrator/image/pullPolicy"}},
		{name: "kernel version not a string", extra: "upgrade: {kernelVersions: [6.8], kernelVersionLabel: k}", want: []string{"/upgrade/kernelVersions/0", "want string"}},
		{name: "bool as string", extra: "prewarm: {keepAfterRelease: 'yes'}", want: []string{"/prewarm/keepAfterRelease", "want boolean"}},
		{name: "negative backoff", extra: "orchestrator: {cronJob: {backoffLimit: -1}}", want: []string{"/orchestrator/cronJob/backoffLimit"}},
		{name: "bad events namespace", extra: "events: {namespace: Events_NS}", want: []string{"/events/namespace"}},
		{name: "events in a namespace the API server refuses them in", extra: "events: {namespace: ops}", want: []string{"/events/namespace", "default"}},
		{name: "transitions as string", extra: "events: {transitions: 'on'}", want: []string{"/events/transitions", "want boolean"}},
		{name: "pull secrets as strings", extra: "prewarm: {imagePullSecrets: [regcred]}", want: []string{"/prewarm/imagePullSecrets/0"}},
		// Combinations the templates refuse with a message naming the values.
		{name: "serviceMonitor in cronjob mode", extra: "orchestrator: {metrics: {serviceMonitor: {enabled: true}}}", want: []string{"orchestrator.metrics.serviceMonitor.enabled", "deployment"}},
		{name: "zero replicas", extra: "orchestrator: {mode: deployment, deployment: {replicas: 0}}", want: []string{"/orchestrator/deployment/replicas"}},
		{name: "bad resync", extra: "orchestrator: {mode: deployment, deployment: {resync: soon}}", want: []string{"/orchestrator/deployment/resync"}},
		{name: "pushgateway not a URL", extra: "orchestrator: {cronJob: {pushgateway: pushgateway:9091}}", want: []string{"/orchestrator/cronJob/pushgateway"}},
		// The binary refuses a URL without a host name (every run would exit 2).
		{name: "pushgateway without a host", extra: "orchestrator: {cronJob: {pushgateway: 'http://:9091'}}", want: []string{"/orchestrator/cronJob/pushgateway"}},
		{name: "root user", extra: "securityContext: {runAsUser: 0}", want: []string{"/securityContext/runAsUser"}},
		{name: "pushgateway with a bad escape", extra: "orchestrator: {cronJob: {pushgateway: 'http://pushgateway:9091/%zz'}}", want: []string{"/orchestrator/cronJob/pushgateway"}},
		{name: "pushgateway with a percent in its host", extra: "orchestrator: {cronJob: {pushgateway: 'http://push%gw:9091'}}", want: []string{"/orchestrator/cronJob/pushgateway"}},
		{name: "pushgateway that is no IPv6 literal", extra: "orchestrator: {cronJob: {pushgateway: 'http://[1:]:9091'}}", want: []string{"unable to parse url", "[1:]"}},
		{name: "pushgateway with an empty host", extra: "orchestrator: {cronJob: {pushgateway: 'http:///metrics'}}", want: []string{"/orchestrator/cronJob/pushgateway"}},
		{name: "status label key in pool", extra: "statusLabel: {key: pool}", want: []string{"statusLabel.key", "pool.nodeSelector"}},
		{name: "status label key read by the nodeLabel source", extra: "maintenance: {nodeLabel: {enabled: true, selector: 'os-upgrade/status=pending'}}", want: []string{"statusLabel.key", "maintenance.nodeLabel.selector"}},
		{name: "status label key read by the nodeLabel source, negated", extra: "maintenance: {nodeLabel: {enabled: true, selector: 'a=b, !os-upgrade/status'}}", want: []string{"statusLabel.key", "maintenance.nodeLabel.selector"}},
		{name: "status label key read by the nodeLabel source, set-based", extra: "maintenance: {nodeLabel: {enabled: true, selector: 'a in (x,y),os-upgrade/status notin (done)'}}", want: []string{"statusLabel.key", "maintenance.nodeLabel.selector"}},
		{name: "status label key of Kubernetes' own", extra: "statusLabel: {key: node-role.kubernetes.io/upgrading}", want: []string{"statusLabel.key", "node-role.kubernetes.io/upgrading", "Kubernetes' own"}},
		{name: "status label key under k8s.io", extra: "statusLabel: {key: k8s.io/upgrading}", want: []string{"statusLabel.key", "Kubernetes' own"}},
		{name: "taint key kept by the node lifecycle controller", extra: "taint: {key: node.kubernetes.io/unschedulable}", want: []string{"taint.key", "node.kubernetes.io/unschedulable", "would remove this one"}},
		{name: "taint key kept by the cloud node controller", extra: "taint: {key: node.cloudprovider.kubernetes.io/uninitialized}", want: []string{"taint.key", "would remove this one"}},
		{name: "equal status values", extra: "statusLabel: {value: x, warmingValue: x}", want: []string{"statusLabel.warmingValue"}},
		{name: "node label source without selector", extra: "maintenance: {nodeLabel: {enabled: true}}", want: []string{"maintenance.nodeLabel.selector"}},
		{name: "no maintenance source", extra: "maintenance: {nodeMaintenance: {enabled: false}}", want: []string{"maintenance", "nodeMaintenance", "nodeLabel", "cordoned"}},
		{name: "blank node label selector", extra: "maintenance: {nodeLabel: {enabled: true, selector: '  '}}", want: []string{"maintenance.nodeLabel.selector"}},
		{name: "status label key is the kernel label", extra: "{statusLabel: {key: example.com/kernel}, upgrade: {kernelVersionLabel: example.com/kernel}}", want: []string{"statusLabel.key", "upgrade.kernelVersionLabel"}},
		// The warmer's node affinity matches target kernels against upgrade.kernelVersionLabel.
		{name: "kernel version not a label value", extra: "upgrade: {kernelVersions: [5.14.0-427.el9.x86_64+debug], kernelVersionLabel: k}", want: []string{"/upgrade/kernelVersions/0"}},
		{name: "kernel version with a space", extra: "upgrade: {kernelVersions: [' 6.8.0'], kernelVersionLabel: k}", want: []string{"/upgrade/kernelVersions/0"}},
		// Without the label they are compared with status.nodeInfo.kernelVersion: any string but empty or with spaces.
		{name: "kernel version with a space, no label", extra: "upgrade: {kernelVersions: ['6.8.0 ']}", want: []string{"/upgrade/kernelVersions/0"}},
		{name: "empty kernel version, no label", extra: "upgrade: {kernelVersions: ['']}", want: []string{"/upgrade/kernelVersions/0"}},
		{name: "leaseDuration not above renewDeadline", extra: "orchestrator: {mode: deployment, deployment: {leaderElection: {leaseDuration: 10s, renewDeadline: 10s}}}", want: []string{"orchestrator.deployment.leaderElection.leaseDuration", "orchestrator.deployment.leaderElection.renewDeadline"}},
		{name: "renewDeadline not above 1.2 x retryPeriod", extra: "orchestrator: {mode: deployment, deployment: {leaderElection: {retryPeriod: 9s}}}", want: []string{"orchestrator.deployment.leaderElection.renewDeadline", "orchestrator.deployment.leaderElection.retryPeriod"}},
		{name: "node label selector without parentheses", extra: "maintenance: {nodeLabel: {enabled: true, selector: 'a in b'}}", want: []string{"/maintenance/nodeLabel/selector"}},
		{name: "schedule in words", extra: "schedule: every hour", want: []string{`schedule "every hour": must be five fields`}},
		{name: "schedule with a time zone", extra: "schedule: 'CRON_TZ=UTC 0 * * * *'", want: []string{"no CRON_TZ= or TZ= prefix: set orchestrator.cronJob.timeZone"}},
		{name: "schedule with an hour out of range", extra: "schedule: '0 25 * * *'", want: []string{`the hour field "25" must be`, "a value 0-23"}},
		{name: "schedule with a bad month name", extra: "schedule: '0 0 1 JANUARY *'", want: []string{`the month field "JANUARY" must be`, "1-12 or JAN-DEC"}},
		// A key set to null is removed from the values: the keys the chart and the orchestrator need
		// are required, so Helm names the one missing.
		{name: "null duration", extra: "cancelAfter: null", want: []string{"missing property 'cancelAfter'"}},
		{name: "null section", extra: "upgrade: null", want: []string{"missing property 'upgrade'"}},
		{name: "null nested duration", extra: "orchestrator: {client: {timeout: null}}", want: []string{"/orchestrator/client", "missing property 'timeout'"}},
		{name: "null image repository", extra: "orchestrator: {image: {repository: null}}", want: []string{"/orchestrator/image", "missing property 'repository'"}},
		{name: "orchestrator repository with a tag", extra: "orchestrator: {image: {repository: ghcr.io/image-prewarmer/prewarm-orchestrator:0.1.0}}", want: []string{"/orchestrator/image/repository"}},
		{name: "orchestrator repository in upper case", extra: "orchestrator: {image: {repository: ghcr.io/Image-Prewarmer/po}}", want: []string{"/orchestrator/image/repository"}},
		{name: "orchestrator tag with a colon", extra: "orchestrator: {image: {tag: ':0.1.0'}}", want: []string{"/orchestrator/image/tag"}},
		{name: "maintenance API version with a space", extra: "maintenance: {nodeMaintenance: {version: 'v1beta1 '}}", want: []string{"/maintenance/nodeMaintenance/version"}},
		{name: "maintenance API version in upper case", extra: "maintenance: {nodeMaintenance: {version: V1Beta1}}", want: []string{"/maintenance/nodeMaintenance/version"}},
		{name: "quantity with a space", extra: "prewarm: {resources: {requests: {memory: 100 Mi}}}", want: []string{"/prewarm/resources/requests/memory"}},
		{name: "quantity in words", extra: "orchestrator: {resources: {requests: {cpu: half}}}", want: []string{"/orchestrator/resources/requests/cpu"}},
		{name: "negative quantity", extra: "prewarm: {resources: {requests: {memory: -64Mi}}}", want: []string{"/prewarm/resources/requests/memory"}},
		{name: "negative number quantity", extra: "orchestrator: {resources: {limits: {cpu: -1}}}", want: []string{"/orchestrator/resources/limits/cpu"}},
		{name: "flowSchema precedence of the exempt FlowSchema", extra: "orchestrator: {flowSchema: {enabled: true, matchingPrecedence: 1}}", want: []string{"/orchestrator/flowSchema/matchingPrecedence"}},
		{name: "privileged metrics port", extra: "orchestrator: {mode: deployment, deployment: {port: 80}}", want: []string{"/orchestrator/deployment/port"}},
		{name: "null CronJob deadline", extra: "orchestrator: {cronJob: {activeDeadlineSeconds: null}}", want: []string{"/orchestrator/cronJob", "missing property 'activeDeadlineSeconds'"}},
		{name: "null cleanup hook deadline", extra: "orchestrator: {cleanupJob: {activeDeadlineSeconds: null}}", want: []string{"/orchestrator/cleanupJob", "missing property 'activeDeadlineSeconds'"}},
		{name: "null priority level", extra: "orchestrator: {flowSchema: {enabled: true, priorityLevel: null}}", want: []string{"/orchestrator/flowSchema", "missing property 'priorityLevel'"}},
		{name: "resources typo", extra: "orchestrator: {resources: {request: {cpu: 50m}}}", want: []string{"/orchestrator/resources", "request"}},
		{name: "resource name typo", extra: "prewarm: {resources: {limits: {memroy: 64Mi}}}", want: []string{"/prewarm/resources/limits", "memroy"}},
		{name: "resource name without a domain", extra: "orchestrator: {resources: {requests: {gpu: 1}}}", want: []string{"/orchestrator/resources/requests", "gpu"}},
		{name: "toleration operator in lower case", extra: "orchestrator: {tolerations: [{operator: exists}]}", want: []string{"/orchestrator/tolerations/0/operator", "Exists"}},
		{name: "toleration effect misspelled", extra: "prewarm: {extraTolerations: [{key: a, effect: NoSchedul}]}", want: []string{"/prewarm/extraTolerations/0/effect", "NoSchedule"}},
		{name: "toleration field misspelled", extra: "prewarm: {extraTolerations: [{key: a, operater: Exists}]}", want: []string{"/prewarm/extraTolerations/0", "operater"}},
		{name: "toleration value not a string", extra: "orchestrator: {tolerations: [{key: a, value: true}]}", want: []string{"/orchestrator/tolerations/0/value", "want string"}},
		// What the API server refuses in a toleration, refused at install rather than on the pods.
		{name: "toleration Exists with a value", extra: "orchestrator: {tolerations: [{key: a, operator: Exists, value: b}]}", want: []string{"/orchestrator/tolerations/0"}},
		{name: "toleration without a key, Equal", extra: "prewarm: {extraTolerations: [{value: x}]}", want: []string{"/prewarm/extraTolerations/0"}},
		{name: "toleration seconds without NoExecute", extra: "prewarm: {extraTolerations: [{key: a, effect: NoSchedule, tolerationSeconds: 30}]}", want: []string{"/prewarm/extraTolerations/0"}},
		{name: "toleration key with a space", extra: "orchestrator: {tolerations: [{key: 'a b', operator: Exists}]}", want: []string{"/orchestrator/tolerations/0/key"}},
		{name: "toleration value with a space", extra: "orchestrator: {tolerations: [{key: a, value: 'b c'}]}", want: []string{"/orchestrator/tolerations/0/value"}},
		// The Prometheus Operator's duration, not Go's.
		{name: "ServiceMonitor interval with a fraction", extra: "orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 1.5m}}}", want: []string{"/orchestrator/metrics/serviceMonitor/interval"}},
		{name: "ServiceMonitor interval in microseconds", extra: "orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 500us}}}", want: []string{"/orchestrator/metrics/serviceMonitor/interval"}},
		{name: "ServiceMonitor interval units out of order", extra: "orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 30s1m}}}", want: []string{"/orchestrator/metrics/serviceMonitor/interval"}},
		{name: "ServiceMonitor interval 0", extra: "orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, interval: 0s}}}", want: []string{"/orchestrator/metrics/serviceMonitor/interval"}},
		{name: "resource claims the chart has no pod claim for", extra: "prewarm: {resources: {claims: [{name: gpu}]}}", want: []string{"/prewarm/resources", "claims"}},
		{name: "cleanup deadline shorter than its sweep", extra: "orchestrator: {cleanupJob: {activeDeadlineSeconds: 8}}", want: []string{"/orchestrator/cleanupJob/activeDeadlineSeconds"}},
		{name: "priority class with a space", extra: "prewarm: {priorityClassName: High Priority}", want: []string{"/prewarm/priorityClassName"}},
		{name: "service account name with upper case", extra: "serviceAccount: {name: My_SA}", want: []string{"/serviceAccount/name"}},
		{name: "fullnameOverride with upper case", extra: "fullnameOverride: My_Prewarmer", want: []string{"/fullnameOverride"}},
		{name: "nameOverride with a space", extra: "nameOverride: Pre Warmer", want: []string{"/nameOverride"}},
		{name: "annotation key with a space", extra: "orchestrator: {podAnnotations: {'bad key': x}}", want: []string{"/orchestrator/podAnnotations", "bad key"}},
		{name: "orchestrator node selector key with a space", extra: "orchestrator: {nodeSelector: {'bad key': x}}", want: []string{"/orchestrator/nodeSelector", "bad key"}},
		{name: "PDB over 100%", extra: "orchestrator: {mode: deployment, deployment: {podDisruptionBudget: {maxUnavailable: 150%}}}", want: []string{"/orchestrator/deployment/podDisruptionBudget/maxUnavailable"}},
		// A budget of 0 would block every drain of the nodes the orchestrator runs on.
		{name: "PDB 0", extra: "orchestrator: {mode: deployment, deployment: {podDisruptionBudget: {maxUnavailable: 0}}}", want: []string{"/orchestrator/deployment/podDisruptionBudget/maxUnavailable"}},
		{name: "PDB 0%", extra: "orchestrator: {mode: deployment, deployment: {podDisruptionBudget: {maxUnavailable: 0%}}}", want: []string{"/orchestrator/deployment/podDisruptionBudget/maxUnavailable"}},
		// The CronJob controller looks every 10 seconds: a shorter deadline can skip every run.
		{name: "starting deadline 0", extra: "orchestrator: {cronJob: {startingDeadlineSeconds: 0}}", want: []string{"/orchestrator/cronJob/startingDeadlineSeconds"}},
		{name: "starting deadline under 10", extra: "orchestrator: {cronJob: {startingDeadlineSeconds: 9}}", want: []string{"/orchestrator/cronJob/startingDeadlineSeconds"}},
		// Values the schema's form admits but the orchestrator refuses at start-up (and with it the
		// uninstall hook): the chart refuses them, naming the value.
		{name: "pool label key prefix over 253 characters", set: func(v map[string]any) {
			v["pool"] = map[string]any{"nodeSelector": map[string]any{"pool": "notebooks", dnsSubdomain(254) + "/tier": "gpu"}}
		}, want: []string{"pool.nodeSelector", "longer than 253 characters"}},
		{name: "taint key prefix over 253 characters", set: func(v map[string]any) { v["taint"] = map[string]any{"key": dnsSubdomain(254) + "/prewarm"} },
			want: []string{"taint.key", "longer than 253 characters"}},
		{name: "status label key prefix over 253 characters", set: func(v map[string]any) { v["statusLabel"] = map[string]any{"key": dnsSubdomain(254) + "/status"} },
			want: []string{"statusLabel.key", "longer than 253 characters"}},
		{name: "kernel label prefix over 253 characters", set: func(v map[string]any) {
			v["upgrade"] = map[string]any{"kernelVersionLabel": dnsSubdomain(300) + "/kernel"}
		}, want: []string{"upgrade.kernelVersionLabel", "longer than 253 characters"}},
		{name: "maintenance group over 253 characters", set: func(v map[string]any) {
			v["maintenance"] = map[string]any{"nodeMaintenance": map[string]any{"group": dnsSubdomain(254)}}
		}, want: []string{"/maintenance/nodeMaintenance/group"}},
		{name: "cancelAfter beyond Go's range", extra: "cancelAfter: 9999999h", want: []string{"cancelAfter", "out of range"}},
		{name: "maxWaitForUpgrade beyond Go's range by a nanosecond", extra: "maxWaitForUpgrade: 2562047h47m16.854775808s", want: []string{"maxWaitForUpgrade", "out of range"}},
		{name: "maxWaitForWarm below a nanosecond", extra: "maxWaitForWarm: 0.0000000001s", want: []string{"maxWaitForWarm", "at least 1ns"}},
		{name: "client timeout of two half nanoseconds", extra: "orchestrator: {client: {timeout: 0.5ns0.5ns}}", want: []string{"orchestrator.client.timeout", "at least 1ns"}},
		{name: "resync beyond Go's range", extra: "orchestrator: {mode: deployment, deployment: {resync: 9999999h}}", want: []string{"orchestrator.deployment.resync", "out of range"}},
		{name: "retryPeriod below a nanosecond", extra: "orchestrator: {mode: deployment, deployment: {leaderElection: {retryPeriod: 0.1ns}}}",
			want: []string{"orchestrator.deployment.leaderElection.retryPeriod", "at least 1ns"}},
		{name: "budget beyond int32", extra: "maxConcurrent: 3000000000", want: []string{"/maxConcurrent"}},
		{name: "qps beyond float32", extra: "orchestrator: {client: {qps: 1e40}}", want: []string{"/orchestrator/client/qps"}},
		{name: "qps that rounds to 0", extra: "orchestrator: {client: {qps: 1e-50}}", want: []string{"/orchestrator/client/qps"}},
		{name: "kernel version with a no-break space, no label", extra: `upgrade: {kernelVersions: ["6.8.0\u00a0"]}`, want: []string{"/upgrade/kernelVersions/0"}},
		{name: "kernel version with a line separator, no label", extra: `upgrade: {kernelVersions: ["6.8.0\u2028x"]}`, want: []string{"/upgrade/kernelVersions/0"}},
		{name: "status label key read by the nodeLabel source, before a newline", extra: "maintenance: {nodeLabel: {enabled: true, selector: \"a=b,os-upgrade/status\\n=pending\"}}",
			want: []string{"statusLabel.key", "maintenance.nodeLabel.selector"}},
		{name: "status label key read by the nodeLabel source, before a carriage return", extra: "maintenance: {nodeLabel: {enabled: true, selector: \"os-upgrade/status\\r\\nin (a)\"}}",
			want: []string{"statusLabel.key", "maintenance.nodeLabel.selector"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vals := minimal(t)
			if tc.extra != "" {
				vals = minimal(t, tc.extra)
			}
			if tc.set != nil {
				tc.set(vals)
			}
			_, err := render(t, vals)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// A duration written as a number (no unit) is refused once, as a number where a string is due: a
// positive duration's schema adds its "not zero" pattern without a second type check.
func TestDurationAsANumberIsRefusedOnce(t *testing.T) {
	for _, extra := range []string{"maxWaitForWarm: 30", "cancelAfter: 30"} {
		_, err := render(t, minimal(t, extra))
		require.Error(t, err, extra)
		assert.Equal(t, 1, strings.Count(err.Error(), "got number, want string"), "%s: %v", extra, err)
	}
}

func TestGoodValuesAreAccepted(t *testing.T) {
	// The other side of the refusals: edge values that are valid must render and validate.
	for _, extra := range []string{
		"maxConcurrent: 0", "maxConcurrent: 100%", "maxConcurrent: 1%", "maxConcurrent: 250",
		"cancelAfter: 0s", "cancelAfter: 1h30m", "maxWaitForWarm: 1.5h",
		"orchestrator: {cronJob: {startingDeadlineSeconds: null}}",
		"upgrade: {kernelVersions: [6.8.0-1075-azure], kernelVersionLabel: feature.node.kubernetes.io/kernel-version.full}",
		"upgrade: {kernelVersions: [6.8.0-1075-azure]}",
		// Not a label value, but a kernel as status.nodeInfo.kernelVersion reports it: fine without the label.
		"upgrade: {kernelVersions: [5.14.0-427.el9.x86_64+debug]}",
		"orchestrator: {mode: deployment, deployment: {leaderElection: {leaseDuration: 1m, renewDeadline: 45s, retryPeriod: 15s}}}",
		"maintenance: {nodeMaintenance: {enabled: false}, nodeLabel: {enabled: true, selector: 'a=b,c in (d)'}}",
		"global: {imageRegistry: example.com}",
		"fullnameOverride: prewarmer",
		"orchestrator: {client: {qps: -1}}", "orchestrator: {client: {qps: 0.5}}",
		"maxWaitForWarm: .5h", "cancelAfter: 1.5m",
		"orchestrator: {image: {repository: registry.example.com:5000/mirror/prewarm-orchestrator, tag: 0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}}",
		"prewarm: {resources: {requests: {cpu: 0.5, memory: 1e6}, limits: {cpu: '1', memory: 32Mi, ephemeral-storage: 1Gi}}}",
		"prewarm: {resources: {requests: {hugepages-2Mi: 4Mi, example.com/fpga: 1}, limits: {hugepages-2Mi: 4Mi, example.com/fpga: 1}}}",
		"prewarm: {resources: {limits: {example.com/fpga: 2, hugepages-1Gi: 1Gi}}}",
		// The group is read only with the source enabled.
		"maintenance: {nodeMaintenance: {enabled: false, group: ''}, cordoned: {enabled: true}}",
		// Equal quantities whose float products differ in the last bit.
		"prewarm: {resources: {requests: {hugepages-2Mi: 4.1G}, limits: {hugepages-2Mi: 4100M}}}",
		"prewarm: {resources: {requests: {hugepages-2Mi: '+4Mi'}, limits: {hugepages-2Mi: 4194304}}}",
		"orchestrator: {client: {burst: 2147483647}, cleanupJob: {backoffLimit: 2147483647, activeDeadlineSeconds: 2147483647}}",
		"orchestrator: {tolerations: [{operator: Exists}, {key: a, operator: Equal, value: b, effect: NoExecute, tolerationSeconds: 30}]}",
		"prewarm: {priorityClassName: system-node-critical}", "serviceAccount: {name: prewarm.orchestrator}",
		"orchestrator: {mode: deployment, deployment: {podDisruptionBudget: {maxUnavailable: 100%}}}",
		"orchestrator: {podAnnotations: {example.com/team: notebooks}, nodeSelector: {node-role.kubernetes.io/system: ''}}",
		"maintenance: {nodeMaintenance: {version: v2alpha1}}",
		"orchestrator: {mode: deployment, deployment: {podDisruptionBudget: {maxUnavailable: 1%}}}",
		"orchestrator: {cronJob: {startingDeadlineSeconds: 10}}",
		"prewarm: {resources: {requests: {cpu: '+100m', memory: 0}}}",
		"orchestrator: {flowSchema: {enabled: true, matchingPrecedence: 2}}",
		"orchestrator: {mode: deployment, deployment: {port: 1024}, metrics: {service: {port: 80}}}",
		// The edges of what the orchestrator accepts.
		"pool: {nodeSelector: {" + dnsSubdomain(253) + "/pool: notebooks}}",
		"taint: {key: " + dnsSubdomain(253) + "/prewarm}",
		"statusLabel: {key: " + dnsSubdomain(253) + "/status}",
		"upgrade: {kernelVersionLabel: " + dnsSubdomain(253) + "/kernel}",
		"maintenance: {nodeMaintenance: {group: " + dnsSubdomain(253) + "}}",
		"maxWaitForUpgrade: 2562047h47m16.854775807s", "maxWaitForWarm: 0.000000001s", "orchestrator: {client: {timeout: 1ns}}",
		// Not positive: 0 is allowed.
		"cancelAfter: 0.0000000001s",
		"orchestrator: {mode: deployment, deployment: {resync: 2562047h, leaderElection: {leaseDuration: 2562047h, renewDeadline: 2562046h, retryPeriod: 1ns}}}",
		"maxConcurrent: 2147483647",
		"orchestrator: {client: {qps: 0.001}}", "orchestrator: {client: {qps: 1000000}}",
		// Not whitespace to Go's unicode.IsSpace (zero-width space, Mongolian vowel separator).
		`upgrade: {kernelVersions: ["6.8.0\u200b", "6.8.0\u180e"]}`,
	} {
		t.Run(extra, func(t *testing.T) {
			parsedConfig(t, mustRender(t, minimal(t, extra)))
		})
	}
}

func TestExamplesRenderAndValidate(t *testing.T) {
	files := exampleFiles(t)
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for _, want := range []string{"dev.yaml", "staging.yaml", "prod.yaml", "medik8s-nodemaintenance.yaml",
		"startup-taint.yaml", "cordon-kured.yaml", "demo.yaml", "kube-prometheus-stack.yaml", "default-values.yaml", "keep-kernel-values.yaml"} {
		assert.Contains(t, names, want)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			vals := valuesFile(t, f)
			r := mustRender(t, vals)
			cfg := parsedConfig(t, r)
			ds := warmer(t, r)
			assert.Equal(t, ds.Name, cfg.Warmer.DaemonSetName)

			// An example for a cluster where the medik8s operator serves NodeMaintenance objects
			// (every one but the demo's stand-in and the chart's own ci files) tolerates the taint
			// the operator puts on the node with its cordon; otherwise the warmer pod waits,
			// Unschedulable, for the pipeline to delete the object.
			nm := cfg.Maintenance.NodeMaintenance
			if filepath.Dir(f) == examplesDir && filepath.Base(f) != "demo.yaml" && nm.Enabled && nm.Group == "nodemaintenance.medik8s.io" {
				assert.Contains(t, ds.Spec.Template.Spec.Tolerations,
					corev1.Toleration{Key: "medik8s.io/drain", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
			}

			// The values file's own settings reach the config.
			pool, _ := vals["pool"].(map[string]any)
			sel, _ := pool["nodeSelector"].(map[string]any)
			require.NotEmpty(t, sel)
			require.Len(t, cfg.Pool.NodeSelector, len(sel))
			for k, v := range sel {
				assert.Equal(t, v, cfg.Pool.NodeSelector[k])
			}
			if imgs, ok := vals["images"].([]any); ok && len(imgs) > 0 {
				got := map[string]bool{}
				for _, c := range ds.Spec.Template.Spec.Containers {
					got[c.Image] = true
				}
				for _, v := range ds.Spec.Template.Spec.Volumes {
					if v.Image != nil {
						got[v.Image.Reference] = true
					}
				}
				for _, img := range imgs {
					assert.True(t, got[img.(string)], "image %s not in the warmer", img)
				}
			}
		})
	}
}

func TestReadmeValuesTableInSync(t *testing.T) {
	vals, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	require.NoError(t, err)

	documented, err := valuesdoc.Parse(vals)
	require.NoError(t, err, "every value in values.yaml needs a # -- comment")
	updated, err := valuesdoc.Update(readme, vals)
	require.NoError(t, err)
	if string(updated) != string(readme) {
		t.Errorf("charts/image-prewarmer/README.md is stale: run make chart-docs\n%s", lineDiff(string(readme), string(updated)))
	}

	// Every documented key appears in the table, and is a key the schema knows.
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(raw, &schema))
	for _, v := range documented {
		assert.Contains(t, string(readme), "| `"+v.Key+"` |")
		assert.True(t, schemaHas(schema, strings.Split(v.Key, ".")), "%s: not a property of values.schema.json", v.Key)
	}
}

// schemaHas reports whether path names a property in schema, following each property's $ref into
// the schema's definitions.
func schemaHas(schema map[string]any, path []string) bool {
	node := schema
	for _, key := range path {
		if ref, ok := node["$ref"].(string); ok {
			defs, _ := schema["definitions"].(map[string]any)
			node, _ = defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
		}
		props, _ := node["properties"].(map[string]any)
		next, ok := props[key].(map[string]any)
		if !ok {
			return false
		}
		node = next
	}
	return true
}

// lineDiff lists the lines only in have (-) and only in want (+).
func lineDiff(have, want string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	h, w := count(have), count(want)
	var b strings.Builder
	for _, l := range strings.Split(have, "\n") {
		if h[l] > w[l] {
			b.WriteString("- " + l + "\n")
			h[l]--
		}
	}
	h = count(have)
	for _, l := range strings.Split(want, "\n") {
		if w[l] > h[l] {
			b.WriteString("+ " + l + "\n")
			w[l]--
		}
	}
	return b.String()
}

// Requests within their limits render, whatever the units: the check compares values, not text.
func TestResourceRequestsWithinLimitsRender(t *testing.T) {
	for _, extra := range []string{
		`prewarm: {resources: {requests: {cpu: 100m}}}`, // equal to the default limit
		`prewarm: {resources: {requests: {cpu: 0.1, memory: 16Mi}}}`,
		`orchestrator: {resources: {requests: {memory: 256Mi}}}`,
		`orchestrator: {resources: {requests: {cpu: "2", memory: 1Gi}, limits: {cpu: 2500m, memory: 1024Mi}}}`,
		`orchestrator: {resources: {requests: {ephemeral-storage: 1Gi}}}`, // no limit to compare with
		`prewarm: {resources: {requests: {cpu: 1}, limits: null}}`,
	} {
		_, err := render(t, minimal(t, extra))
		assert.NoError(t, err, extra)
	}
}
