package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestListedSaysEachMessageOnce(t *testing.T) {
	key := field.Invalid(field.NewPath("taint", "key"), "bad key", "not a label key")
	effect := field.NotSupported(field.NewPath("taint", "effect"), "Sometimes", []string{"NoSchedule"})
	assert.NoError(t, listed(nil))
	assert.Equal(t, key.Error(), listed(field.ErrorList{key, key}).Error(), "one problem, given twice")
	errs := field.ErrorList{key, effect, key}
	assert.Equal(t, "2 problems:\n  - "+key.Error()+"\n  - "+effect.Error(), listed(errs).Error())
	assert.Len(t, errs, 3, "the caller's list is left as it was")
}
