package chart_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	flowcontrolv1beta3 "k8s.io/api/flowcontrol/v1beta3"
)

// No FlowSchema unless asked for: it changes how the API server serves the ServiceAccount.
func TestNoFlowSchemaByDefault(t *testing.T) {
	r := mustRender(t, minimal(t))
	assert.Empty(t, all[*flowcontrolv1.FlowSchema](r))
	assert.Empty(t, all[*flowcontrolv1beta3.FlowSchema](r))
}

// The FlowSchema matches every request of the ServiceAccount the orchestrator's pods run as: the
// CronJob's or the Deployment's, and the uninstall hook's (a ServiceAccount the chart does not
// create included), at the configured priority level and precedence.
func TestFlowSchemaMatchesTheOrchestratorsServiceAccount(t *testing.T) {
	for _, tc := range []struct{ name, extra, sa, hook string }{
		{"cronjob", "", releaseName + "-image-prewarmer", releaseName + "-image-prewarmer-cleanup"},
		{"deployment", "orchestrator: {mode: deployment}", releaseName + "-image-prewarmer", releaseName + "-image-prewarmer-cleanup"},
		{"existing ServiceAccount", "serviceAccount: {create: false, name: platform-bot}", "platform-bot", "platform-bot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, minimal(t, tc.extra,
				"orchestrator: {flowSchema: {enabled: true, priorityLevel: global-default, matchingPrecedence: 500}}"))
			fs := find[*flowcontrolv1.FlowSchema](t, r, "")
			assert.Equal(t, "global-default", fs.Spec.PriorityLevelConfiguration.Name)
			assert.Equal(t, int32(500), fs.Spec.MatchingPrecedence)
			require.Len(t, fs.Spec.Rules, 1)
			rule := fs.Spec.Rules[0]
			var subjects []flowcontrolv1.ServiceAccountSubject
			for _, subject := range rule.Subjects {
				require.Equal(t, flowcontrolv1.SubjectKindServiceAccount, subject.Kind)
				subjects = append(subjects, *subject.ServiceAccount)
			}
			want := []flowcontrolv1.ServiceAccountSubject{{Namespace: releaseNS, Name: tc.sa}}
			if tc.hook != tc.sa {
				want = append(want, flowcontrolv1.ServiceAccountSubject{Namespace: releaseNS, Name: tc.hook})
			}
			assert.Equal(t, want, subjects, "the orchestrator's ServiceAccount and the uninstall hook's")
			require.Len(t, rule.ResourceRules, 1)
			assert.Equal(t, flowcontrolv1.ResourcePolicyRule{
				Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"},
				ClusterScope: true, Namespaces: []string{"*"},
			}, rule.ResourceRules[0], "every request: nodes, pods, the maintenance resource, Events, the Lease")

			var accounts []string
			for _, d := range all[*appsv1.Deployment](r) {
				accounts = append(accounts, d.Spec.Template.Spec.ServiceAccountName)
			}
			for _, c := range all[*batchv1.CronJob](r) {
				accounts = append(accounts, c.Spec.JobTemplate.Spec.Template.Spec.ServiceAccountName)
			}
			require.Len(t, accounts, 1, "the orchestrator")
			assert.Equal(t, tc.sa, accounts[0], "the FlowSchema names the ServiceAccount the orchestrator runs as")
			assert.Equal(t, tc.hook, find[*batchv1.Job](t, r, "-cleanup").Spec.Template.Spec.ServiceAccountName,
				"and the one the uninstall hook runs as")
		})
	}
}

// Kubernetes 1.27 and 1.28 serve FlowSchemas as flowcontrol.apiserver.k8s.io/v1beta3 only.
func TestFlowSchemaVersionFollowsTheCluster(t *testing.T) {
	vals := minimal(t, "orchestrator: {flowSchema: {enabled: true}}")
	old := mustRender(t, vals, renderOpts{kubeVersion: "v1.28.9"})
	assert.Empty(t, all[*flowcontrolv1.FlowSchema](old))
	fs := find[*flowcontrolv1beta3.FlowSchema](t, old, "")
	assert.Equal(t, "workload-high", fs.Spec.PriorityLevelConfiguration.Name)
	assert.Equal(t, int32(1000), fs.Spec.MatchingPrecedence)

	current := mustRender(t, vals, renderOpts{kubeVersion: "v1.29.0"})
	find[*flowcontrolv1.FlowSchema](t, current, "")
}
