package chart_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The chart is rendered (these tests) and linted (ct.yaml) for the Kubernetes version the local
// cluster runs, which hack/tools/versions.env pins: a bump there must reach both.
func TestRenderedForTheClusterVersion(t *testing.T) {
	env, err := os.ReadFile("../../hack/tools/versions.env")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^KUBE_VERSION=(v\S+)$`).FindSubmatch(env)
	require.NotNil(t, m, "KUBE_VERSION in versions.env")
	kube := string(m[1])
	assert.Equal(t, kube, defaultKube, "defaultKube in render_test.go")
	ct, err := os.ReadFile("../../ct.yaml")
	require.NoError(t, err)
	assert.Contains(t, string(ct), "--kube-version="+kube[1:]+"\n", "helm-lint-extra-args in ct.yaml")
}
