package upgrade

import (
	"fmt"
	"math"
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
		if err := bound("untilStep", span(start, stop, step)); err != nil {
			return nil, err
		}
		return untilStep(start, stop, step), nil
	}
	seq := f["seq"].(func(...int) string)
	f["seq"] = func(params ...int) (string, error) {
		var n float64
		switch len(params) {
		case 1:
			n = distance(1, params[0])
		case 2:
			n = distance(params[0], params[1])
		case 3:
			n = span(params[0], params[2], params[1])
		}
		if err := bound("seq", n); err != nil {
			return "", err
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

// span is about how many elements a range from start towards stop by step has (none when step
// leads away from stop or is 0), in floating point so that no extreme argument overflows.
func span(start, stop, step int) float64 {
	d := float64(stop) - float64(start)
	if step == 0 || d == 0 || (d > 0) != (step > 0) {
		return 0
	}
	return math.Ceil(d / float64(step))
}

// distance is how many elements a range from start towards stop by 1 or -1 has, about.
func distance(start, stop int) float64 { return math.Abs(float64(stop) - float64(start)) }

func bound(name string, n float64) error {
	if n > maxBuilt {
		return fmt.Errorf("%s: would build %.0f elements or bytes, more than the %d a rule may", name, n, maxBuilt)
	}
	return nil
}
