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
	raw       string // as written; for a value that is not a string, its JSON form
	invalid   bool
	null      bool // written as null (or left empty in YAML): a missing value, not a malformed one
	notString bool // written as a number, a list or a map
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
		d.raw, d.invalid, d.notString = string(b), true, true
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
	case d.notString:
		// The decoder's JSON form of the value, which is near enough to how it was written, shown
		// unquoted: field.Error would quote it as a string, the point being that it is not one.
		return field.ErrorList{field.Invalid(p, field.OmitValueType{}, d.raw+": must be a duration with its unit, such as 90s, 30m or 2h")}
	case d.invalid && durationSyntax.MatchString(d.raw):
		return field.ErrorList{field.Invalid(p, d.raw, "out of range: at most 2562047h (about 292 years)")}
	case d.invalid:
		return field.ErrorList{field.Invalid(p, d.raw, "must be a duration such as 90s, 30m or 2h")}
	case d.Duration < 0:
		return field.ErrorList{field.Invalid(p, d.written(), "must not be negative")}
	case positive && d.Duration == 0:
		return field.ErrorList{field.Invalid(p, d.written(), "must be greater than 0")}
	}
	return nil
}

// written is the duration as the file writes it, or in Go's form when it was not read from a file.
func (d Duration) written() string {
	if d.raw != "" {
		return d.raw
	}
	return d.Duration.String()
}

// durationSyntax is what time.ParseDuration reads; a string of this form that it refuses is out of
// the range of a time.Duration.
var durationSyntax = regexp.MustCompile(`^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$`)
