package chart_test

// Object names for release names Helm accepts.

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Helm accepts release names that start with a digit or hold dots (a DNS-1123 subdomain of at most
// 53 characters); the metrics Service's name is still a DNS-1035 label, as a Service name must be.
func TestMetricsServiceNameIsDNS1035ForEveryReleaseName(t *testing.T) {
	for _, name := range []string{"2024-prewarm", "prewarm.v2"} {
		t.Run(name, func(t *testing.T) {
			r, err := render(t, minimal(t, "orchestrator: {mode: deployment}"), renderOpts{releaseName: name})
			require.NoError(t, err)
			require.NotEmpty(t, all[*corev1.Service](r), "the metrics Service")
			for _, svc := range all[*corev1.Service](r) {
				assert.Empty(t, validation.IsDNS1035Label(svc.Name), "Service %s", svc.Name)
			}
		})
	}
}
