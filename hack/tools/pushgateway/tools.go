//go:build tools

// Package tools pins the pushgateway command this module builds.
package tools

import (
	_ "github.com/prometheus/pushgateway"
)
