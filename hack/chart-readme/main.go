// Command chart-readme regenerates the values table of charts/image-prewarmer/README.md from the
// "# --" comments of values.yaml (make chart-docs). With -check it only reports whether the README
// is stale (exit 1), which is what CI runs through the chart tests.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/image-prewarmer/image-prewarmer/test/chart/valuesdoc"
)

func main() {
	chart := flag.String("chart", "charts/image-prewarmer", "chart directory")
	check := flag.Bool("check", false, "fail when README.md is not up to date instead of writing it")
	flag.Parse()
	if err := run(*chart, *check); err != nil {
		fmt.Fprintln(os.Stderr, "chart-readme:", err)
		os.Exit(1)
	}
}

func run(chart string, check bool) error {
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return err
	}
	readmePath := filepath.Join(chart, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	updated, err := valuesdoc.Update(readme, values)
	if err != nil {
		return err
	}
	if bytes.Equal(updated, readme) {
		return nil
	}
	if check {
		return fmt.Errorf("%s is stale: run make chart-docs", readmePath)
	}
	return os.WriteFile(readmePath, updated, 0o644)
}
