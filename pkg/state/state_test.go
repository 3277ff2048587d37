package state

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRecordedTaint(t *testing.T) {
	for _, taint := range []corev1.Taint{
		{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "example.com/prewarm", Effect: corev1.TaintEffectNoExecute},
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Taint: FormatTaint(taint)}}}
		got, ok := RecordedTaint(n)
		assert.True(t, ok, FormatTaint(taint))
		assert.Equal(t, taint, got, "round trip of %s", FormatTaint(taint))
	}
	assert.Equal(t, "example.com/prewarm:NoExecute", FormatTaint(corev1.Taint{Key: "example.com/prewarm", Effect: corev1.TaintEffectNoExecute}))

	// A value no taint can have (edited by hand) is malformed: read as a taint, it would not be
	// found on the node, which would then be released as if someone else had removed our taint,
	// with the real one left on it.
	for _, v := range []string{"", "os-upgrade", "os-upgrade=true", ":NoSchedule", "=true:NoSchedule", "os-upgrade=true:",
		"os-upgrade=true:Bogus", "os-upgrade=true:noschedule", "os upgrade=true:NoSchedule", "os-upgrade=a b:NoSchedule"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Taint: v}}}
		_, ok := RecordedTaint(n)
		assert.False(t, ok, "malformed %q", v)
	}
	_, ok := RecordedTaint(&corev1.Node{})
	assert.False(t, ok, "no annotation")
}

func TestRecordedStatusLabel(t *testing.T) {
	for _, key := range []string{"os-upgrade/status", "example.com/prewarm-status", "status"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{StatusLabel: key}}}
		got, ok := RecordedStatusLabel(n)
		assert.True(t, ok, key)
		assert.Equal(t, key, got)
	}

	// A value no label key can have (edited by hand) is malformed: the configured key is used.
	for _, v := range []string{"", "os upgrade/status", "/status", "example.com/", "a/b/c", "-status"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{StatusLabel: v}}}
		_, ok := RecordedStatusLabel(n)
		assert.False(t, ok, "malformed %q", v)
	}
	_, ok := RecordedStatusLabel(&corev1.Node{})
	assert.False(t, ok, "no annotation")
}

func TestRecordedStatusValues(t *testing.T) {
	for v, want := range map[string][]string{
		"upgrading,warming": {"upgrading", "warming"},
		"a.b-c_d,x":         {"a.b-c_d", "x"},
		"upgrading":         nil,
		",warming":          nil,
		"upgrading,":        nil,
		"a,b,c":             nil,
		"not a value,x":     nil,
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{StatusValues: v}}}
		value, warming, ok := RecordedStatusValues(n)
		if want == nil {
			assert.False(t, ok, v)
			continue
		}
		assert.True(t, ok, v)
		assert.Equal(t, want, []string{value, warming}, v)
	}
	_, _, ok := RecordedStatusValues(&corev1.Node{})
	assert.False(t, ok, "absent")
	assert.Equal(t, "upgrading,warming", FormatStatusValues("upgrading", "warming"))
}
