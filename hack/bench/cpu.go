package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The processes whose CPU time a latency scenario reports, in the report's order.
var cpuComponents = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok", "orchestrator", "benchmark"}

// cpuSample is the CPU time (user + system) each component had used at one moment.
type cpuSample map[string]time.Duration

// ticksPerSecond is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux platform Go
// supports (the kernel fixes what it exports to user space, whatever its internal HZ).
const ticksPerSecond = 100

// cpuNow reads the CPU time of the cluster's components (the processes whose command line names
// clusterDir, as kwokctl starts every one of them with a path in it), of the orchestrator process
// orchestratorPID (0: none) and of this process. A process that cannot be read is left out.
func cpuNow(clusterDir string, orchestratorPID int) cpuSample {
	s := cpuSample{}
	if t, ok := procCPU("self"); ok {
		s["benchmark"] = t
	}
	if orchestratorPID > 0 {
		if t, ok := procCPU(strconv.Itoa(orchestratorPID)); ok {
			s["orchestrator"] = t
		}
	}
	if clusterDir == "" {
		return s
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(clusterDir)) {
			continue
		}
		name := component(string(cmdline[:max(bytes.IndexByte(cmdline, 0), 0)]))
		if name == "" {
			continue
		}
		if t, ok := procCPU(pid); ok {
			s[name] += t
		}
	}
	return s
}

// kwokLeaseDuration is the node Lease duration the cluster's kwok controller was started with
// (--node-lease-duration-seconds), 0 when unknown.
func kwokLeaseDuration(clusterDir string) time.Duration {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(clusterDir)) {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if component(args[0]) != "kwok" {
			continue
		}
		for _, a := range args[1:] {
			if v, ok := strings.CutPrefix(a, "--node-lease-duration-seconds="); ok {
				if secs, err := strconv.Atoi(v); err == nil {
					return time.Duration(secs) * time.Second
				}
			}
		}
	}
	return 0
}

// component names a cluster process by its executable, or "" for one that is not reported.
func component(exe string) string {
	base := filepath.Base(exe)
	for _, c := range cpuComponents {
		if base == c || strings.HasPrefix(base, c+"-") {
			return c
		}
	}
	return ""
}

// procCPU is utime + stime of /proc/<pid>/stat.
func procCPU(pid string) (time.Duration, bool) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0, false
	}
	return parseStatCPU(data)
}

// parseStatCPU reads fields 14 and 15 (utime, stime) of a /proc/<pid>/stat line. The second
// field, the command name in parentheses, may itself contain spaces and parentheses, so the
// fields are counted from its last ')'.
func parseStatCPU(stat []byte) (time.Duration, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * time.Second / ticksPerSecond, true
}

// since is the CPU time each component used between s and later; a component missing from
// either sample is left out.
func (s cpuSample) since(earlier cpuSample) cpuSample {
	out := cpuSample{}
	for c, t := range s {
		if e, ok := earlier[c]; ok && t >= e {
			out[c] = t - e
		}
	}
	return out
}
