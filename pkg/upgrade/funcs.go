package upgrade

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

// maxBuilt bounds the lists and strings that the sprig functions sized by an argument build
// (until, untilStep, seq, repeat, indent, nindent, the rand* family): elements or bytes. A
// comparison needs nothing near it, and without it one call (`until 100000000`, a count read
// from a node's label) could allocate gigabytes and have the process killed for its memory
// before it says which rule was at fault.
const maxBuilt = 1 << 16

// removedFuncs are sprig functions a rule cannot use. A rule reads the node: env and expandenv
// would read the orchestrator's environment (its credentials included) into error messages,
// which go to annotations and Events; getHostByName would resolve names in every cycle.
var removedFuncs = []string{"env", "expandenv", "getHostByName"}

// funcMap is sprig's text functions without removedFuncs and with the sized ones bounded by
// maxBuilt (an error beyond it, which fails the template as any function error does).
func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	for _, name := range removedFuncs {
		delete(f, name)
	}
	until := f["until"].(func(int) []int)
	f["until"] = func(count int) ([]int, error) {
		if err := bound("until", distance(0, count)); err != nil {
			return nil, err
		}
		return until(count), nil
	}
	untilStep := f["untilStep"].(func(int, int, int) []int)
	f["untilStep"] = func(start, stop, step int) ([]int, error) {
		if err := steps("untilStep", start, stop, step); err != nil {
			return nil, err
		}
		return untilStep(start, stop, step), nil
	}
	seq := f["seq"].(func(...int) string)
	f["seq"] = func(params ...int) (string, error) {
		if start, stop, step, ok := seqSteps(params); ok {
			if err := steps("seq", start, stop, step); err != nil {
				return "", err
			}
		}
		return seq(params...), nil
	}
	repeat := f["repeat"].(func(int, string) string)
	f["repeat"] = func(count int, s string) (string, error) {
		if err := bound("repeat", float64(count)*float64(len(s))); err != nil {
			return "", err
		}
		return repeat(count, s), nil
	}
	for _, name := range []string{"indent", "nindent"} {
		indent := f[name].(func(int, string) string)
		f[name] = func(spaces int, s string) (string, error) {
			if err := bound(name, float64(spaces)*float64(strings.Count(s, "\n")+1)+float64(len(s))); err != nil {
				return "", err
			}
			return indent(spaces, s), nil
		}
	}
	for _, name := range []string{"randAlphaNum", "randAlpha", "randAscii", "randNumeric"} {
		random := f[name].(func(int) string)
		f[name] = func(count int) (string, error) {
			if err := bound(name, float64(count)); err != nil {
				return "", err
			}
			return random(count), nil
		}
	}
	randBytes := f["randBytes"].(func(int) (string, error))
	f["randBytes"] = func(count int) (string, error) {
		if err := bound("randBytes", float64(count)); err != nil {
			return "", err
		}
		return randBytes(count)
	}
	return f
}

// steps refuses the range untilStep builds from start towards stop by step when it has more than
// maxBuilt elements, or when its loop (i += step while i < stop, or > stop going down) would step
// from its last element past the largest (smallest) int and wrap around: an endless loop. Exact
// in integers, whatever the arguments.
func steps(name string, start, stop, step int) error {
	switch {
	case step > 0 && stop > start:
		n := (uint64(stop)-uint64(start)-1)/uint64(step) + 1
		if err := bound(name, float64(n)); err != nil {
			return err
		}
		if last := int(uint64(start) + (n-1)*uint64(step)); last > math.MaxInt-step {
			return fmt.Errorf("%s: a range up to %d by %d overflows", name, stop, step)
		}
	case step < 0 && stop < start:
		down := uint64(-(step + 1)) + 1 // -step, also for math.MinInt
		n := (uint64(start)-uint64(stop)-1)/down + 1
		if err := bound(name, float64(n)); err != nil {
			return err
		}
		if last := int(uint64(start) - (n-1)*down); last < math.MinInt-step {
			return fmt.Errorf("%s: a range down to %d by %d overflows", name, stop, step)
		}
	}
	return nil // within the bound, or empty
}

// seqSteps returns the range sprig's seq hands to untilStep for params (the same arithmetic,
// overflow included); ok is false when it builds none.
func seqSteps(params []int) (start, stop, step int, ok bool) {
	switch len(params) {
	case 1:
		start, stop, step = 1, params[0], 1
		if stop < start {
			step = -1
		}
		return start, stop + step, step, true
	case 2:
		start, stop, step = params[0], params[1], 1
		if stop < start {
			step = -1
		}
		return start, stop + step, step, true
	case 3:
		start, step, stop = params[0], params[1], params[2]
		increment := 1
		if stop < start {
			increment = -1
			if step > 0 {
				return 0, 0, 0, false
			}
		}
		return start, stop + increment, step, true
	}
	return 0, 0, 0, false
}

// distance is how many elements a range from start towards stop by 1 or -1 has, about.
func distance(start, stop int) float64 { return math.Abs(float64(stop) - float64(start)) }

func bound(name string, n float64) error {
	if n > maxBuilt {
		return fmt.Errorf("%s: would build %.0f elements or bytes, more than the %d a rule may", name, n, maxBuilt)
	}
	return nil
}

// FuncNames returns the names of the functions an upgrade.when template may call besides the
// template language's own (and, or, len, index, printf, ...), sorted.
func FuncNames() []string {
	names := slices.Sorted(maps.Keys(funcMap()))
	return names
}
