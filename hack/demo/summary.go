package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// outcome is one pool node's story in the demo: when the pipeline and the orchestrator acted on it.
type outcome struct {
	Node string
	// Maintenance and Rebooted come from the pipeline; the rest from the node's annotations.
	Maintenance, Tainted, Rebooted, Released time.Time
	Phase, Reason, LastError                 string
}

// finished reports whether the node's story is over: it was upgraded, and released since.
func (o outcome) finished() bool {
	return !o.Rebooted.IsZero() && o.Phase == "" && o.Reason != "" && !o.Released.IsZero() &&
		!o.Released.Before(o.Tainted)
}

// unfinished names the nodes whose story is not over.
func unfinished(outcomes []outcome) []string {
	var names []string
	for _, o := range outcomes {
		if !o.finished() {
			names = append(names, o.Node)
		}
	}
	return names
}

// summaryRow is one node of the summary table.
type summaryRow struct {
	Node string
	// Closing is the time from taint to upgrade (the node was closed while the pipeline worked);
	// Warming from upgrade to release (closed while its images were pulled). Each is known only
	// once both ends happened.
	Closing, Warming           time.Duration
	ClosingKnown, WarmingKnown bool
	Reason, Note               string
}

// summary is the end of the demo in numbers.
type summary struct {
	Rows []summaryRow
	// Warm counts the nodes released warm: each is a user-pod cold start avoided.
	Warm int
	// Cold names the nodes released otherwise (timeout, cancelled, ...).
	Cold []string
	// WarmingMean and WarmingMax are over the nodes released warm.
	WarmingMean, WarmingMax time.Duration
}

// summarize turns the outcomes into the summary. Node annotations are recorded to the second, so
// the pipeline's times are truncated to the second too before durations are taken.
func summarize(outcomes []outcome) summary {
	var s summary
	var total time.Duration
	for _, o := range outcomes {
		row := summaryRow{Node: o.Node, Reason: o.Reason}
		rebooted := o.Rebooted.Truncate(time.Second)
		if !o.Tainted.IsZero() && !o.Rebooted.IsZero() {
			row.Closing, row.ClosingKnown = max(0, rebooted.Sub(o.Tainted)), true
			if rebooted.Before(o.Tainted) {
				row.Note = "upgraded before it was tainted"
			}
		}
		if !o.Rebooted.IsZero() && !o.Released.IsZero() && !o.Released.Before(o.Tainted) {
			row.Warming, row.WarmingKnown = max(0, o.Released.Sub(rebooted)), true
		}
		switch {
		case !o.finished():
			row.Reason = "-"
			row.Note = "not released (phase " + orDash(o.Phase) + ")"
		case o.Reason == state.ReasonWarm:
			s.Warm++
			total += row.Warming
			s.WarmingMax = max(s.WarmingMax, row.Warming)
		default:
			s.Cold = append(s.Cold, o.Node)
			if o.LastError != "" {
				row.Note = o.LastError
			}
		}
		s.Rows = append(s.Rows, row)
	}
	if s.Warm > 0 {
		s.WarmingMean = (total / time.Duration(s.Warm)).Round(time.Second)
	}
	return s
}

// write renders the summary for a terminal or a log.
func (s summary) write(w io.Writer, kernel string, maxWaitForWarm, took time.Duration, eventsNamespace string) {
	released := s.Warm + len(s.Cold)
	if released == len(s.Rows) {
		fmt.Fprintf(w, "\nSummary: %d pool nodes upgraded onto kernel %s and released in %s\n\n", len(s.Rows), kernel, took.Round(time.Second))
	} else {
		fmt.Fprintf(w, "\nSummary after %s: %d of %d pool nodes upgraded onto kernel %s and released\n\n", took.Round(time.Second), released, len(s.Rows), kernel)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTAINTED -> UPGRADED\tUPGRADED -> RELEASED\tRELEASE\tNOTE")
	for _, r := range s.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Node, durationOrDash(r.Closing, r.ClosingKnown),
			durationOrDash(r.Warming, r.WarmingKnown), r.Reason, oneLine(r.Note, 70))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nReleased warm: %d of %d nodes, so %d user-pod cold starts avoided: the first notebook scheduled on each\n",
		s.Warm, len(s.Rows), s.Warm)
	fmt.Fprintf(w, "of them will find its images already on disk. Closed while warming: mean %s, max %s.\n", s.WarmingMean, s.WarmingMax)
	if len(s.Cold) > 0 {
		fmt.Fprintf(w, "Released cold: %s, after maxWaitForWarm (%s) with a Warning Event:\n", strings.Join(s.Cold, ", "), maxWaitForWarm)
		fmt.Fprintf(w, "  kubectl get events -n %s --field-selector involvedObject.name=%s\n", eventsNamespace, s.Cold[0])
	}
}

// outcomes joins the pipeline's timeline and the recorded nodes, in the pool's order.
func outcomes(pool []string, tl *timeline, rec *recorder) []outcome {
	out := make([]outcome, 0, len(pool))
	for _, node := range slices.Clone(pool) {
		r := rec.Get(node)
		o := outcome{Node: node, Tainted: r.TaintedAt, Released: r.ReleasedAt, Phase: r.Phase, Reason: r.Reason, LastError: r.LastError}
		o.Maintenance, _ = tl.Maintenance(node)
		o.Rebooted, _ = tl.Rebooted(node)
		out = append(out, o)
	}
	return out
}

func durationOrDash(d time.Duration, known bool) string {
	if !known {
		return "-"
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine flattens s and cuts it to n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-3]) + "..."
	}
	return s
}
