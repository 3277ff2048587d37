package config

import (
	"encoding/json"
	"regexp"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Duration is a time.Duration written as a string such as "30m" or "2h". Decoding never fails:
// a value that does not parse is kept and reported by Validate with its field path, so the
// error names the field instead of only the bad string.
type Duration struct {
	time.Duration
	raw     string
	invalid bool
	null    bool // written as null (or left empty in YAML): a missing value, not a malformed one
}

// NewDuration returns a valid Duration of d.
func NewDuration(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	*d = Duration{}
	if string(b) == "null" {
		d.invalid, d.null = true, true
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		d.raw, d.invalid = string(b), true
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.raw, d.invalid = s, true
		return nil
	}
	d.Duration, d.raw = v, s
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	if d.invalid {
		return json.Marshal(d.raw)
	}
	return json.Marshal(d.Duration.String())
}

func (d Duration) validate(p *field.Path, positive bool) field.ErrorList {
	switch {
	case d.null:
		return field.ErrorList{field.Required(p, "a duration such as 90s, 30m or 2h")}
	case d.invalid && durationSyntax.MatchString(d.raw):
		return field.ErrorList{field.Invalid(p, d.raw, "out of range: at most 2562047h (about 292 years)")}
	case d.invalid:
		return field.ErrorList{field.Invalid(p, d.raw, "must be a duration such as 90s, 30m or 2h")}
	case d.Duration < 0:
		return field.ErrorList{field.Invalid(p, d.Duration.String(), "must not be negative")}
	case positive && d.Duration == 0:
		return field.ErrorList{field.Invalid(p, d.Duration.String(), "must be greater than 0")}
	}
	return nil
}

// durationSyntax is what time.ParseDuration reads; a string of this form that it refuses is out of
// the range of a time.Duration.
var durationSyntax = regexp.MustCompile(`^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$`)
