package chart_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // kube-apiserver embeds the time zone database too

	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
)

// cronJobRefusesSchedule is the API server's check of a new CronJob's spec.schedule
// (k8s.io/kubernetes v1.36 pkg/apis/batch/validation: validateCronJobSpec, validateScheduleFormat):
// not empty, cron.ParseStandard accepts it (a panic counts as a refusal) and it contains no "TZ".
func cronJobRefusesSchedule(schedule string) (err error) {
	if schedule == "" {
		return errors.New("required")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid schedule format: %v", r)
		}
	}()
	if _, err := cron.ParseStandard(schedule); err != nil {
		return err
	}
	if strings.Contains(schedule, "TZ") {
		return errors.New("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
	}
	return nil
}

// checkSchedule renders the chart with schedule s and checks it against the API server: the chart
// never accepts a schedule the API server refuses, and refuses one it accepts only when strict (an
// odd form the chart's schema leaves out on purpose: see its $comment).
func checkSchedule(t *testing.T, s string, strict bool) {
	t.Helper()
	apiErr := cronJobRefusesSchedule(s)
	r, err := render(t, minimal(t, fmt.Sprintf("schedule: %q", s)))
	switch {
	case strict:
		require.NoError(t, apiErr, "not stricter than the API server, which refuses it too")
		require.Error(t, err, "the chart accepts it")
	case apiErr == nil:
		require.NoError(t, err, "the API server accepts it")
		assert.Equal(t, s, find[*batchv1.CronJob](t, r, "").Spec.Schedule, "rendered unchanged")
	default:
		require.Error(t, err, "the API server refuses it: %v", apiErr)
		assert.Contains(t, err.Error(), "schedule")
	}
}

// schedule: the chart (schema, plus the templates for ranges whose start is after their end) accepts
// only schedules the API server accepts, so a bad schedule fails `helm install` before any object is
// created instead of leaving a failed release behind; of those, it refuses only odd forms (strict).
func TestScheduleMatchesCronJobValidation(t *testing.T) {
	cases := []struct {
		s      string
		strict bool // an odd form the chart refuses and the API server accepts
	}{
		// The chart's examples and defaults.
		{s: "0 * * * *"}, {s: "* * * * *"}, {s: "*/15 2-4 * JAN-MAR MON-FRI"}, {s: "*/7 * * * *"},
		{s: "0,30 8-18/2 1,15 * 1-5"}, {s: "5 4 * * sun"}, {s: "0 0 1 jan,jul ?"}, {s: "0 0 ? * *"},
		{s: "30 2 * * 0"}, {s: "5/10 * * * *"},
		// Minute: 0-59.
		{s: "59 * * * *"}, {s: "60 * * * *"}, {s: "61 * * * *"}, {s: "0-59 * * * *"}, {s: "0-60 * * * *"},
		{s: "00 * * * *"}, {s: "059 * * * *", strict: true}, {s: "0000000000000000000000059 * * * *", strict: true}, {s: "+5 * * * *", strict: true},
		{s: "+ * * * *"}, {s: "++5 * * * *"}, {s: "-1 * * * *"}, {s: "-5 * * * *"}, {s: "5- * * * *"},
		{s: "100 * * * *"}, {s: "99999999999999999999 * * * *"}, {s: "1.5 * * * *"}, {s: "0x1 * * * *"},
		{s: "JAN * * * *"}, {s: "١ * * * *"},
		// Names in ASCII cases only: Unicode case folding takes the long s (ſ) for an s.
		{s: "0 0 * ſep *"}, {s: "0 0 * * ſun"}, {s: "0 0 * * ſat"}, {s: "0 0 * SEP *"}, {s: "0 0 * * Sat"},
		// Hour: 0-23.
		{s: "0 23 * * *"}, {s: "0 24 * * *"}, {s: "0 25 * * *"}, {s: "0 0-23 * * *"}, {s: "0 20-24 * * *"},
		{s: "0 19 * * *"}, {s: "0 023 * * *", strict: true}, {s: "0 +23 * * *", strict: true}, {s: "0 29 * * *"},
		// Day of month: 1-31.
		{s: "0 0 0 * *"}, {s: "0 0 1 * *"}, {s: "0 0 31 * *"}, {s: "0 0 32 * *"}, {s: "0 0 1-31 * *"},
		{s: "0 0 0-31 * *"}, {s: "0 0 1-32 * *"}, {s: "0 0 00 * *"}, {s: "0 0 01 * *"}, {s: "0 0 29 * *"},
		{s: "0 0 L * *"}, {s: "0 0 15W * *"}, {s: "0 0 LW * *"},
		// Month: 1-12 and names.
		{s: "0 0 1 0 *"}, {s: "0 0 1 1 *"}, {s: "0 0 1 12 *"}, {s: "0 0 1 13 *"}, {s: "0 0 1 012 *", strict: true},
		{s: "0 0 * FOO *"}, {s: "0 0 * jan *"}, {s: "0 0 * Jan *"}, {s: "0 0 * jAn *"}, {s: "0 0 * DEC *"},
		{s: "0 0 * feb,MAR,apr,May,jun,JUL,aug,SeP,oct,NOV *"}, {s: "0 0 * JANUARY *"}, {s: "0 0 * JA *"},
		{s: "0 0 * JAN-DEC *"}, {s: "0 0 * jan-Jun/2 *"}, {s: "0 0 * 1-JUN *"}, {s: "0 0 * MAR-12 *"},
		{s: "0 0 * MON *"}, {s: "0 0 * +JAN *"}, {s: "0 0 * JAN1 *"}, {s: "0 0 * JAN- *"},
		// Day of week: 0-6 (0 is Sunday) and names.
		{s: "0 0 * * 0"}, {s: "0 0 * * 6"}, {s: "0 0 * * 7"}, {s: "0 0 * * 8"}, {s: "0 0 * * 0-6"},
		{s: "0 0 * * 1-7"}, {s: "0 0 * * 06"}, {s: "0 0 * * 07"}, {s: "0 0 * * SUN-SAT"}, {s: "0 0 * * mon-fri"},
		{s: "0 0 * * Mon,Wed,Fri"}, {s: "0 0 * * tue,THU,sAt"}, {s: "0 0 * * MONDAY"}, {s: "0 0 * * #1"},
		{s: "0 0 * * 5L"}, {s: "0 0 * * 5#2"}, {s: "0 0 * * JAN"}, {s: "0 0 * * sun/2"}, {s: "0 0 * * MON-5"},
		{s: "0 0 * * FRİ", strict: true}, // U+0130: strings.ToLower makes it "fri"
		{s: "0 0 * * FRı"},               // U+0131 is not
		// Steps: /n with 1 <= n <= 9223372036854775807, read by strconv.Atoi.
		{s: "*/0 * * * *"}, {s: "*/1 * * * *"}, {s: "*/59 * * * *"}, {s: "*/60 * * * *"}, {s: "*/100 * * * *"},
		{s: "0/0 * * * *"}, {s: "1-10/0 * * * *"}, {s: "*/+2 * * * *", strict: true}, {s: "*/-1 * * * *"}, {s: "*/-0 * * * *"},
		{s: "*/00 * * * *"}, {s: "*/01 * * * *", strict: true}, {s: "*/ * * * *"}, {s: "*/2/3 * * * *"}, {s: "/5 * * * *"},
		{s: "5/ * * * *"}, {s: "*/a * * * *"}, {s: "*/1.5 * * * *"}, {s: "0 0 */0 * *"}, {s: "0 0 * */0 *"},
		{s: "0 0 * * */0"}, {s: "0 */0 * * *"}, {s: "0 0 * * */7"}, {s: "0 0 * JAN/3 *"},
		{s: "*/9223372036854775807 * * * *", strict: true}, {s: "*/9223372036854775808 * * * *"},
		{s: "*/9223372036854775806 * * * *", strict: true}, {s: "*/9223372036854775817 * * * *"},
		{s: "*/8999999999999999999 * * * *", strict: true}, {s: "*/9300000000000000000 * * * *"},
		{s: "*/10000000000000000000 * * * *"}, {s: "*/00000000000000000000009223372036854775807 * * * *", strict: true},
		{s: "0 0 * * 1/9223372036854775807,2/9223372036854775808"},
		// ? means * in every field, not only the day fields.
		{s: "? * * * *"}, {s: "0 ? * * *"}, {s: "? ? ? ? ?"}, {s: "?/5 * * * *"},
		// After "*-" or "?-", robfig/cron ignores the rest of the range.
		{s: "*-5 * * * *", strict: true}, {s: "*-x * * * *", strict: true}, {s: "?-* * * * *", strict: true}, {s: "*- * * * *", strict: true}, {s: "*-99-x/5 * * * *", strict: true},
		{s: "*-TZ * * * *"}, {s: "*5 * * * *"}, {s: "** * * * *"}, {s: "*-5/0 * * * *"},
		// Lists: items split on commas, empty items ignored.
		{s: "1,2,3 * * * *"}, {s: "1,,2 * * * *", strict: true}, {s: ",1 * * * *", strict: true}, {s: "1, * * * *", strict: true}, {s: ", * * * *", strict: true},
		{s: ",,, * * * *", strict: true}, {s: "0 * * * 1,", strict: true}, {s: "0 * * * ,1", strict: true}, {s: "1,60 * * * *"},
		{s: "1-5,10-15/2,*/20 * * * *"}, {s: "0 0 * JAN,FOO *"}, {s: "0 0 * * SUN,7"},
		// Ranges.
		{s: "0 0 * * MON-"}, {s: "0 0 * * -MON"}, {s: "1-2-3 * * * *"}, {s: "5-5 * * * *"}, {s: "0-0 * * * *"},
		{s: "30-10 * * * *"}, {s: "0 22-2 * * *"}, {s: "0 0 * * FRI-MON"}, {s: "0 0 * DEC-JAN *"},
		{s: "0 0 31-1 * *"}, {s: "0 0 * * 6-0"}, {s: "0 0 * * sat-SUN"}, {s: "1-0/5 * * * *"},
		{s: "0,10-9 * * * *"}, {s: "0 0 * * 1,fri-thu,3"}, {s: "010-9 * * * *"}, {s: "9-010 * * * *", strict: true},
		// Fields and whitespace (split as strings.Fields splits: unicode.IsSpace).
		{s: "* * * *"}, {s: "* * * * * *"}, {s: "0 0 * * * 2026"}, {s: "*"}, {s: "0"},
		{s: "  0 * * * *  ", strict: true}, {s: "0\t*\t*\t*\t*"}, {s: "0  *   * * *"}, {s: "0 * * * *\n", strict: true}, {s: "\n0 * * * *", strict: true},
		{s: "0 * * * *\n0 1 * * *"}, {s: "0\v*\f*\r* *", strict: true}, {s: "0\u00a0*\u00a0*\u00a0*\u00a0*", strict: true},
		{s: "0\u3000* * * *", strict: true}, {s: "0\u2028* * * *", strict: true}, {s: "0\u0085* * * *", strict: true}, {s: "0\u205f* * * *", strict: true},
		{s: "0\u200b* * * *"}, {s: "0\u180e* * * *"}, {s: "0\ufeff* * * *"}, {s: "0_* * * *"},
		{s: "0 * * * *;"}, {s: "0 * * * * #"}, {s: "0, * * * *", strict: true}, {s: "0 * * * */"}, {s: "0 * * * MON-"},
		// Descriptors.
		{s: "@yearly"}, {s: "@annually"}, {s: "@monthly"}, {s: "@weekly"}, {s: "@daily"}, {s: "@midnight"},
		{s: "@hourly"}, {s: "@Daily"}, {s: "@DAILY"}, {s: "@reboot"}, {s: "@daily "}, {s: " @daily"},
		{s: "@"}, {s: "@daily\n"}, {s: "@ daily"}, {s: "@minutely"},
		// @every and a Go duration.
		{s: "@every 1h"}, {s: "@every 90s"}, {s: "@every 1h30m"}, {s: "@every 1.5h"}, {s: "@every 0", strict: true},
		{s: "@every +0", strict: true}, {s: "@every -0", strict: true}, {s: "@every 0s", strict: true}, {s: "@every -1h", strict: true}, {s: "@every +1h", strict: true},
		{s: "@every .5h", strict: true}, {s: "@every 1.h", strict: true}, {s: "@every .h"}, {s: "@every ."}, {s: "@every 1"},
		{s: "@every 00"}, {s: "@every 1 hour"}, {s: "@every  1h"}, {s: "@every 1h "}, {s: "@every 1d"},
		{s: "@every 1H"}, {s: "@every 1µs"}, {s: "@every 1μs", strict: true}, {s: "@every 1us"}, {s: "@every 1ns"},
		{s: "@every 1ms"}, {s: "@every 1hm"}, {s: "@every 1h1h1h"}, {s: "@every 1.5.5h"}, {s: "@every"},
		{s: "@every "}, {s: "@every\t1h"}, {s: "@Every 1h"}, {s: "@every --1h"}, {s: "@every 2562047h", strict: true},
		{s: "@every 2562048h"}, {s: "@every 99999999999h"}, {s: "@every 9999999999999999999h"}, {s: "@every 1h9223372036854775807ns"},
		{s: "@every 1h-1m"}, {s: "@every 0.5s", strict: true}, {s: "@every 0h30m", strict: true}, {s: "@every 100000s", strict: true},
		// TZ: Kubernetes refuses the prefixes, and any "TZ" at all.
		{s: "TZ=UTC 0 * * * *"}, {s: "CRON_TZ=Europe/Paris 0 * * * *"}, {s: "TZ=UTC @daily"},
		{s: "TZ=Bad/Zone 0 * * * *"}, {s: "CRON_TZ=UTC"}, {s: "tz=UTC 0 * * * *"},
		// Words.
		{s: "every hour"}, {s: "hourly"}, {s: "* * * * MON-FRI at 5"},
	}
	require.Greater(t, len(cases), 250)
	accepted := 0
	for _, tc := range cases {
		if !tc.strict && cronJobRefusesSchedule(tc.s) == nil {
			accepted++
		}
	}
	require.Greater(t, accepted, 60, "valid schedules")
	require.Greater(t, len(cases)-accepted, 100, "schedules the chart refuses")
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.s), func(t *testing.T) { checkSchedule(t, tc.s, tc.strict) })
	}
}

// Schedules built at random (with a fixed seed) from the pieces of ordinary cron syntax, valid
// values and a few out of bounds or malformed: the chart and the API server agree on each.
func TestScheduleMatchesCronJobValidationAtRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 26))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	// Bounds of each field (as robfig/cron/v3 spec.go) and names.
	bounds := [][2]int{{0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 6}}
	names := [][]string{nil, nil, nil,
		{"", "jan", "FEB", "Mar", "apR", "mAy", "jun", "JUL", "aug", "sep", "oct", "nov", "dec"},
		{"sun", "mon", "tue", "wed", "thu", "FRI", "sat"}}
	value := func(f, v int) string {
		switch {
		case rng.IntN(30) == 0:
			return pick("-1", "7", "24", "32", "60", "13", "0", "janu", "monday", "L", "5L", "x", "")
		case names[f] != nil && rng.IntN(3) == 0:
			return names[f][v]
		case v < 10 && rng.IntN(4) == 0:
			return fmt.Sprintf("0%d", v)
		}
		return fmt.Sprint(v)
	}
	item := func(f int) string {
		var s string
		lo, hi := bounds[f][0], bounds[f][1]
		a, b := lo+rng.IntN(hi-lo+1), lo+rng.IntN(hi-lo+1)
		switch rng.IntN(6) {
		case 0:
			s = pick("*", "*", "*", "?")
		case 1, 2:
			s = value(f, a)
		default:
			if a > b && rng.IntN(10) != 0 {
				a, b = b, a
			}
			s = value(f, a) + "-" + value(f, b)
		}
		if rng.IntN(3) == 0 {
			s += "/" + pick("1", "2", "3", "7", "15", "60", "1", "2", "3", "7", "15", "60", "", "0", "-1", "x")
		}
		return s
	}
	field := func(f int) string {
		var items []string
		for range 1 + rng.IntN(3) {
			items = append(items, item(f))
		}
		return strings.Join(items, ",")
	}
	schedule := func() string {
		n := 5
		if rng.IntN(20) == 0 {
			n = 4 + rng.IntN(3)
		}
		var s string
		for i := range n {
			if i > 0 {
				s += pick(" ", " ", " ", " ", "  ", "\t")
			}
			s += field(i % 5)
		}
		return s
	}
	const n = 300
	accepted := 0
	for range n {
		s := schedule()
		if cronJobRefusesSchedule(s) == nil {
			accepted++
		}
		t.Run(fmt.Sprintf("%q", s), func(t *testing.T) { checkSchedule(t, s, false) })
	}
	t.Logf("%d of %d schedules valid", accepted, n)
	require.Greater(t, accepted, n/10)
}

// The API server's time zone check (validateTimeZone, k8s.io/kubernetes v1.36
// pkg/apis/batch/validation) of a non-empty orchestrator.cronJob.timeZone: formErr for a name of the
// wrong form, which the chart refuses too; loadErr for a zone that does not exist (time.LoadLocation),
// which only the API server refuses.
var validTimeZoneCharacters = regexp.MustCompile(`^[A-Za-z\.\-_0-9+]{1,14}$`)

func cronJobRefusesTimeZone(tz string) (formErr, loadErr error) {
	for _, part := range strings.Split(tz, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, "-") || !validTimeZoneCharacters.MatchString(part) {
			return fmt.Errorf("unknown time zone %s", tz), nil
		}
	}
	if strings.EqualFold(tz, "Local") {
		return errors.New("timeZone must be an explicit time zone"), nil
	}
	_, loadErr = time.LoadLocation(tz)
	return nil, loadErr
}

// orchestrator.cronJob.timeZone: the schema refuses the names the API server refuses for their form;
// a well-formed name of no zone (Mars/Olympus) passes the chart and fails at install (documented).
func TestTimeZone(t *testing.T) {
	for _, tz := range []string{
		"UTC", "Etc/UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "America/Port-au-Prince",
		"Etc/GMT+5", "Etc/GMT-14", "EST5EDT", "America/Indiana/Indianapolis", "Asia/Kolkata",
		"Mars/Olympus", "UTC+1", "ABCDEFGHIJKLMN", "Europe/Paris2", ".hidden", "a/...", "Europe/.x",
		"Local", "local", "LOCAL", "Europe/Paris ", " Europe/Paris", "Europe//Paris", "/Europe/Paris",
		"Europe/Paris/", "../etc/passwd", "./UTC", ".", "..", "-UTC", "Europe/-Paris", "ABCDEFGHIJKLMNO",
		"Europe/Zürich", "Europe/Paris\n", "UTC:00", "/", "Europe\\Paris", "Europe/Paris,UTC",
	} {
		t.Run(fmt.Sprintf("%q", tz), func(t *testing.T) {
			formErr, loadErr := cronJobRefusesTimeZone(tz)
			vals := minimal(t)
			vals["orchestrator"] = map[string]any{"cronJob": map[string]any{"timeZone": tz}}
			r, err := render(t, vals)
			if tz == "Mars/Olympus" {
				require.Error(t, loadErr, "the documented example of an unknown zone")
			}
			if formErr == nil { // the chart accepts it, and the API server too unless loadErr
				require.NoError(t, err, "well-formed (load: %v)", loadErr)
				assert.Equal(t, &tz, find[*batchv1.CronJob](t, r, "").Spec.TimeZone)
				return
			}
			require.Error(t, err, "the API server refuses it: %v", formErr)
			if strings.EqualFold(tz, "Local") {
				// Of a valid form: the templates refuse it, saying why.
				assert.Contains(t, err.Error(), "orchestrator.cronJob.timeZone")
				assert.Contains(t, err.Error(), "local zone")
				return
			}
			assert.Contains(t, err.Error(), "/orchestrator/cronJob/timeZone")
		})
	}
	t.Run("empty: the controller manager's", func(t *testing.T) {
		assert.Nil(t, find[*batchv1.CronJob](t, mustRender(t, minimal(t, `orchestrator: {cronJob: {timeZone: ""}}`)), "").Spec.TimeZone)
	})
}
