package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RestartAPIServer stops the cluster's kube-apiserver, waits down, and starts it again with
// the same command line, then waits until it answers. etcd and the other components keep
// running, so no state is lost: it is what a control-plane upgrade or an API server crash looks
// like to clients.
//
// kwokctl v0.8.0 has no per-component stop/start (only `kwokctl stop|start cluster`, which
// stops etcd too), so this does what its binary runtime does: the process is found through
// <cluster dir>/pids/kube-apiserver.pid, its command line and working directory are read from
// /proc, and the new process is started detached (its own session) with the same arguments,
// appending to logs/kube-apiserver.log, and its pid written back. Linux only.
func (c *Cluster) RestartAPIServer(ctx context.Context, down time.Duration) error {
	dir := filepath.Dir(c.Kubeconfig)
	// While it is down its port looks free: a cluster another test package creates meanwhile
	// (kwokctl picks free ports) could take it. hack/cluster.sh creates clusters under this lock
	// (<KWOK_WORKDIR>/cluster-create.lock; the cluster is <KWOK_WORKDIR>/clusters/<name>).
	unlock, err := lockFile(ctx, filepath.Join(filepath.Dir(filepath.Dir(dir)), "cluster-create.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	pidFile := filepath.Join(dir, "pids", "kube-apiserver.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("reading the kube-apiserver pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("parsing the kube-apiserver pid %q: %w", b, err)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("reading the command line of kube-apiserver (pid %d): %w", pid, err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if len(args) == 0 || !strings.HasSuffix(args[0], "kube-apiserver") {
		return fmt.Errorf("pid %d is not kube-apiserver: %q", pid, args)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("finding kube-apiserver (pid %d): %w", pid, err)
	}
	// SIGTERM first, as a real restart would; kube-apiserver stops listening at once but its
	// process can linger for a minute, so SIGKILL it once it no longer answers (or after 15s).
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping kube-apiserver (pid %d): %w", pid, err)
	}
	_ = Eventually(ctx, 15*time.Second, func(ctx context.Context) (bool, error) {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err != nil || gone(pid), nil
	})
	_ = proc.Signal(syscall.SIGKILL)
	if err := Eventually(ctx, time.Minute, func(context.Context) (bool, error) { return gone(pid), nil }); err != nil {
		return fmt.Errorf("waiting for kube-apiserver (pid %d) to stop: %w", pid, err)
	}
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "logs", "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the kube-apiserver log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver again: %w", err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return fmt.Errorf("writing the kube-apiserver pid: %w", err)
	}
	// Reap it if it exits while this process lives; the cluster's deletion stops it by pid.
	go func() { _ = cmd.Wait() }()
	err = Eventually(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok", err
	})
	if err != nil {
		return fmt.Errorf("waiting for the restarted kube-apiserver: %w", err)
	}
	return nil
}

// lockFile takes an exclusive flock on path (created if missing), as hack/cluster.sh's flock(1)
// does, waiting for it until ctx ends. The file is opened close-on-exec, so that the processes
// started while it is held do not hold the lock too.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// gone reports whether the process no longer runs: absent, or a zombie (it is not our child, and
// the init process of some sandboxes does not reap orphans).
func gone(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	return bytes.Contains(st, []byte(") Z ")) || bytes.Contains(st, []byte(") X "))
}
