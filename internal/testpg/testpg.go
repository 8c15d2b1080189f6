package testpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled means PostgreSQL's server binaries were not found.
var ErrNotInstalled = errors.New("PostgreSQL server binaries (initdb, postgres) not found: " +
	"install them (Debian: apt-get install -y postgresql) or set TESTPG_BIN_DIR to their folder")

// Options configure a test server.
type Options struct {
	// BinDir is the folder of initdb and postgres. Default: $TESTPG_BIN_DIR,
	// else the newest /usr/lib/postgresql/<version>/bin (Debian and Ubuntu
	// packages), else the folder of the initdb found on PATH.
	BinDir string
	// Database is the database Start creates. Default: "test".
	Database string
	// OSUser is the operating-system user the server runs as when the test
	// runs as root, because postgres refuses to run as root. Ignored when
	// the test does not run as root. Default: "postgres", the user of the
	// Debian package.
	OSUser string
	// StartTimeout bounds the wait for the server to accept connections.
	// Default: 30 seconds.
	StartTimeout time.Duration
}

func (o *Options) applyDefaults() error {
	if o.BinDir == "" {
		dir, err := findBinDir()
		if err != nil {
			return err
		}
		o.BinDir = dir
	}
	if o.Database == "" {
		o.Database = "test"
	}
	if o.OSUser == "" {
		o.OSUser = "postgres"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	return nil
}

func findBinDir() (string, error) {
	if dir := os.Getenv("TESTPG_BIN_DIR"); dir != "" {
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest version first; versions are numbers, so compare them as such.
	version := func(dir string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, dir := range dirs {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil {
		// Follow a symbolic link such as /usr/local/bin/initdb to the folder
		// that has postgres next to it.
		if real, err := filepath.EvalSymlinks(initdb); err == nil {
			initdb = real
		}
		if dir := filepath.Dir(initdb); isExecutable(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", ErrNotInstalled
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Server is a PostgreSQL server of its own for a test: a fresh cluster in a
// temporary folder, listening on a free loopback port with trust
// authentication for the superuser "postgres", and its Unix socket in the
// same folder.
type Server struct {
	opts    Options
	dir     string // the temporary folder: data, socket and log
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential // nil: run as the test's user

	mu     sync.Mutex // guards cmd and exited
	cmd    *exec.Cmd  // nil while the server is down
	exited chan struct{}
	// waitErr is how the last server exited; written before exited closes.
	waitErr error
}

// Start creates a cluster with initdb, starts postgres on it and creates
// opts.Database. Call Stop when done, also when a test fails; if the test
// process dies without calling it, the kernel stops the server
// (PR_SET_PDEATHSIG), so no server outlives its test.
//
// It fails with ErrNotInstalled when the binaries are missing.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	for _, bin := range []string{"initdb", "postgres"} {
		if !isExecutable(filepath.Join(opts.BinDir, bin)) {
			return nil, fmt.Errorf("%w (looked in %s)", ErrNotInstalled, opts.BinDir)
		}
	}
	s := &Server{opts: opts}
	cred, err := credential(opts.OSUser)
	if err != nil {
		return nil, err
	}
	s.cred = cred

	if s.dir, err = os.MkdirTemp("", "testpg-"); err != nil {
		return nil, fmt.Errorf("creating the server's folder: %w", err)
	}
	s.dataDir = filepath.Join(s.dir, "data")
	s.logPath = filepath.Join(s.dir, "postgres.log")
	if err := s.setup(ctx); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

func (s *Server) setup(ctx context.Context) error {
	if s.cred != nil {
		// The server's user must own its folder; /tmp lets it through.
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("handing the server's folder to %s: %w", s.opts.OSUser, err)
		}
	}
	initdb := s.command(filepath.Join(s.opts.BinDir, "initdb"),
		"--pgdata", s.dataDir, "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("running %s: %w\n%s", strings.Join(initdb.Args, " "), err, out)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	if err := s.Restart(ctx); err != nil {
		return err
	}

	conn, err := pgx.Connect(ctx, s.url("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to the test server: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{s.opts.Database}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %s: %w", s.opts.Database, err)
	}
	return nil
}

// command runs bin as the server's user, in the server's folder (initdb
// complains when it cannot read the working directory).
func (s *Server) command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		// Stop the server, at once, when the test process dies. Go sets it
		// after the credentials, which would otherwise clear it.
		Pdeathsig: syscall.SIGQUIT,
	}
	return cmd
}

// credential returns the credential of osUser when the process runs as
// root, nil otherwise.
func credential(osUser string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		return nil, fmt.Errorf("postgres refuses to run as root and user %q, to run it as, is missing "+
			"(the Debian package creates it; set Options.OSUser to another): %w", osUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s has uid %q: %w", osUser, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s has gid %q: %w", osUser, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL is the connection string of the test database.
func (s *Server) URL() string { return s.url(s.opts.Database) }

func (s *Server) url(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), Path: "/" + db}
	u.RawQuery = "sslmode=disable"
	return u.String()
}

// Restart starts the server after Shutdown, on the same port and data, and
// waits until it accepts connections; it is a no-op while the server runs.
// Start calls it the first time.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the server log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := s.command(filepath.Join(s.opts.BinDir, "postgres"),
		"-D", s.dataDir, "-p", strconv.Itoa(s.port), "-h", "127.0.0.1", "-k", s.dir,
		// Durability is not what a test server is for.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		s.waitErr = cmd.Wait()
		close(exited)
	}(s.exited)

	deadline := time.Now().Add(s.opts.StartTimeout)
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(attempt, s.url("postgres"))
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-s.exited:
			s.cmd = nil
			return fmt.Errorf("the test server exited at start (%w); its log:\n%s", s.waitErr, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the test server accepts no connections after %s (%w); its log:\n%s", s.opts.StartTimeout, err, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Shutdown stops the server and keeps its data, to test what clients do
// while the database is down; Restart starts it again. Open connections
// fail. It is a no-op when the server is not running.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown: abort transactions, disconnect
	// clients, write a checkpoint. SIGQUIT and SIGKILL are for a server that
	// does not stop.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		_ = cmd.Process.Signal(sig)
		select {
		case <-exited:
			return nil
		case <-time.After(10 * time.Second):
		}
	}
	<-exited
	return fmt.Errorf("the test server (pid %d) ignored SIGINT and SIGQUIT", cmd.Process.Pid)
}

// Stop stops the server and removes its folder.
func (s *Server) Stop() error {
	err := s.Shutdown()
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("removing the test server's folder: %w", rmErr))
	}
	return err
}
