package chart_test

// Label values rendered from values.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/validation"
)

// A digest-pinned orchestrator.image.tag (0.1.0@sha256:...) renders valid labels: the
// app.kubernetes.io/version label gets the tag without the digest.
func TestDigestPinnedTagRendersValidLabels(t *testing.T) {
	tag := "0.1.0@sha256:" + strings.Repeat("ab", 32)
	r, err := render(t, minimal(t, "orchestrator: {image: {tag: '"+tag+"'}}"))
	require.NoError(t, err)
	assert.Equal(t, "0.1.0", find[*appsv1.DaemonSet](t, r, "").Labels["app.kubernetes.io/version"])
	var bad []string
	for _, o := range r.Objects {
		m, err := meta.Accessor(o)
		if !assert.NoError(t, err) {
			continue
		}
		for k, v := range m.GetLabels() {
			if len(validation.IsValidLabelValue(v)) > 0 {
				bad = append(bad, fmt.Sprintf("%T %s: %s=%q", o, m.GetName(), k, v))
			}
		}
	}
	assert.Empty(t, bad, "label values the API server refuses")
}
