package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// process is one control-plane binary running as a child of the test process.
type process struct {
	name    Component
	path    string
	args    []string
	env     []string // added to the test process's environment
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // what Wait returned; read only after done is closed
}

// start starts the process with its output appended to logPath and, if output
// is set, copied there line by line with the component's name in front.
func (p *process) start(log logr.Logger, output io.Writer) error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the log file of %s: %w", p.name, err)
	}
	var w io.Writer = logFile
	if output != nil {
		w = io.MultiWriter(logFile, &linePrefixer{prefix: "[" + string(p.name) + "] ", w: output})
	}
	cmd := exec.Command(p.path, p.args...)
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = sysProcAttr()
	// With a non-file writer exec copies through a pipe; do not let a
	// grandchild that inherited it keep Wait from returning.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	log.Info("Started process", "component", p.name, "pid", cmd.Process.Pid, "log", p.logPath)
	return nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to timeout for the process
// to exit and then sends SIGKILL. It returns once the process is reaped.
func (p *process) stop(log logr.Logger, timeout time.Duration) {
	if p.cmd == nil || p.exited() {
		return
	}
	pid := p.cmd.Process.Pid
	log.Info("Stopping process", "component", p.name, "pid", pid)
	// The negative pid signals the whole group (Setpgid made the process its
	// leader). ESRCH only means it exited meanwhile.
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return
	case <-timer.C:
	}
	log.Info("Process did not stop in time, killing it", "component", p.name, "pid", pid, "timeout", timeout)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
}

// waitReady polls check every 100ms until it succeeds, the process exits or ctx
// ends. The errors carry the end of the process's log, which is usually where
// the reason is.
func (p *process) waitReady(ctx context.Context, check func(ctx context.Context) error) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	var lastErr error
	for {
		checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		lastErr = check(checkCtx)
		cancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-p.done:
			exit := p.err
			if exit == nil {
				exit = errors.New("exit status 0")
			}
			return fmt.Errorf("%s exited before it became ready (%w); end of %s:\n%s", p.name, exit, p.logPath, tail(p.logPath))
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to become ready: %w (last check: %w); end of %s:\n%s",
				p.name, ctx.Err(), lastErr, p.logPath, tail(p.logPath))
		case <-ticker.C:
		}
	}
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	const maxBytes, maxLines = 4096, 20
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading the log: %v)", err)
	}
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// linePrefixer writes whole lines to w with prefix in front, so that the output
// of several processes sharing one writer stays readable.
type linePrefixer struct {
	prefix string
	w      io.Writer

	mu  sync.Mutex
	buf []byte
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := append([]byte(l.prefix), l.buf[:i+1]...)
		l.buf = l.buf[i+1:]
		if _, err := l.w.Write(line); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners are
// held until all ports are chosen so that the kernel cannot hand out one port
// twice; between their closing and the processes binding the ports another
// program could take one, which on loopback is rare enough to accept.
func freePorts(n int) ([]int, error) {
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok {
			return nil, errors.New("finding a free port: listener has no TCP address")
		}
		ports = append(ports, addr.Port)
	}
	return ports, nil
}
