// Package testkine runs kine (github.com/k3s-io/kine, k3s' storage layer:
// the etcd API over a SQL table) on loopback for tests and the local cluster,
// so that kube-apiserver can keep its objects in PostgreSQL instead of etcd.
// `make k8s-bins` builds the binary into bin/k8s.
package testkine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Options configure Start.
type Options struct {
	// Binary is the path of the kine binary. Required.
	Binary string
	// Database is the URL of the PostgreSQL database kine stores the
	// objects in, such as postgres://postgres@127.0.0.1:5432/kine. kine
	// creates the database if it is missing and the user may. Required.
	Database string
	// LogPath receives kine's output. Required.
	LogPath string
	// StartTimeout bounds the wait until kine listens. Default 60s.
	StartTimeout time.Duration
}

// Server is a running kine.
type Server struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	err    error // valid once exited is closed
}

// Start runs kine and returns once it accepts connections; it opens its port
// only once its database and table exist.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Binary == "" || opts.Database == "" || opts.LogPath == "" {
		return nil, errors.New("testkine: Options.Binary, Database and LogPath are required")
	}
	if _, err := os.Stat(opts.Binary); err != nil {
		return nil, fmt.Errorf("kine not found (run `make k8s-bins`): %w", err)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	log, err := os.Create(opts.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(opts.Binary,
		"--endpoint="+opts.Database,
		"--listen-address="+addr,
		// Its default is :8080 on every interface, and a taken port kills it.
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		// The API server compacts every 5 minutes, as it does etcd; kine's own
		// compaction stays off (its default) so that the two do not race.
		// Larger batches than the default 1,000 revisions catch up after a
		// burst of writes in fewer transactions.
		"--compact-batch-size=10000",
	)
	cmd.Stdout, cmd.Stderr = log, log
	// kine dies with the process that started it, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, fmt.Errorf("starting kine: %w", err)
	}
	s := &Server{cmd: cmd, url: "http://" + addr, exited: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		_ = log.Close()
		close(s.exited)
	}()

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	for {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("kine exited before it listened (%w); see %s", s.err, opts.LogPath)
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("kine did not listen on %s within %s; see %s", addr, opts.StartTimeout, opts.LogPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// URL is where kine serves the etcd API, for kube-apiserver's --etcd-servers.
func (s *Server) URL() string { return s.url }

// Stop ends kine: SIGTERM, then SIGKILL after 10 s.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
