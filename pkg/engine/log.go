package engine

import (
	"context"
	"log/slog"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
)

// attrs returns the key-value pairs kv without those whose value is an empty string: a line
// about no node in particular has no node key, rather than node="".
func attrs(kv ...any) []any {
	out := make([]any, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		if s, ok := kv[i+1].(string); ok && s == "" {
			continue
		}
		out = append(out, kv[i], kv[i+1])
	}
	return out
}

// LogNotes logs the planner's notes: at WARN those that need an operator (plan.Note.Warning,
// such as a missing warmer DaemonSet), at INFO the others (nodes waiting for the budget,
// skipped nodes). A note about the whole pool has no node key.
func LogNotes(ctx context.Context, log *slog.Logger, notes []plan.Note) {
	for _, n := range notes {
		level := slog.LevelInfo
		if n.Warning {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, n.Message, attrs("node", n.Node)...)
	}
}

// LogWarnings logs what the maintenance sources skipped, at WARN.
func LogWarnings(ctx context.Context, log *slog.Logger, ws []sources.Warning) {
	for _, w := range ws {
		log.Log(ctx, slog.LevelWarn, "maintenance source: "+w.Message, attrs("source", w.Source, "object", w.Object)...)
	}
}

// actionLevel is the level an action is logged at: WARN for one that reports a problem (a warmer
// pod that cannot pull, a timeout: plan.Action.Warning), INFO for the routine transitions.
func actionLevel(a plan.Action) slog.Level {
	if a.Warning() {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// logAction logs an action written (or, with prefix "dry run: would ", one a dry run would write).
func (e *Engine) logAction(ctx context.Context, prefix string, a plan.Action) {
	e.log.Log(ctx, actionLevel(a), prefix+string(a.Type), attrs("node", a.Node, "reason", a.Reason, "message", a.Message)...)
}
