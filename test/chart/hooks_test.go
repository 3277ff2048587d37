package chart_test

// The helm test hook's pod is an orchestrator pod like the others.

import (
	"testing"

	"github.com/stretchr/testify/assert"
	batchv1 "k8s.io/api/batch/v1"
)

// orchestrator.podAnnotations reach the helm test Job's pod too (sidecar.istio.io/inject: "false"
// keeps a mesh sidecar from holding the Job open, as it does for the other orchestrator pods).
func TestTestHookGetsPodAnnotations(t *testing.T) {
	r := mustRender(t, minimal(t, `orchestrator: {podAnnotations: {sidecar.istio.io/inject: "false"}}`))
	for _, suffix := range []string{"-cleanup", "-test"} {
		job := find[*batchv1.Job](t, r, suffix)
		assert.Equal(t, "false", job.Spec.Template.Annotations["sidecar.istio.io/inject"], "Job %s", job.Name)
	}
}
