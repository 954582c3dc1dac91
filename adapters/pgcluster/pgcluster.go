// Package pgcluster starts a throwaway PostgreSQL cluster from the binaries installed on the
// machine (initdb and postgres, PostgreSQL 15 by default). Tests use it through the pgtest
// subpackage; the `waqueue bench` command uses it directly when it is given no database URL.
//
// A cluster lives in a private temporary directory holding its data directory, its unix socket
// directory and its server log. It listens on that socket and on a free port of 127.0.0.1, trusts
// local connections, and runs with durable settings (fsync and synchronous_commit on) unless the
// caller overrides them in Options.Settings. When the calling process runs as root, initdb and
// postgres run as the system user "postgres" (PostgreSQL refuses to run as root) and the
// temporary directory is handed to that user.
//
// Fault tests stop, kill and restart a cluster: Stop shuts it down cleanly and Kill crashes it
// (SIGKILL to every server process), both keeping the data; Restart starts it again on the same
// data, socket and port, so URLs stay valid. Close stops it and removes the directory.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultBinDir is where Debian installs the PostgreSQL 15 server binaries.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Superuser is the name of the cluster's superuser; it connects without a password.
const Superuser = "postgres"

// ErrNotRunning is returned by operations that need a running server.
var ErrNotRunning = errors.New("pgcluster: server is not running")

// Options configures Start. The zero value is ready to use.
type Options struct {
	// BinDir holds initdb and postgres. Empty means $PG_BINDIR if set, else DefaultBinDir.
	BinDir string
	// ParentDir is where the cluster's temporary directory is created. Empty means os.TempDir().
	ParentDir string
	// Port is the TCP port on 127.0.0.1. Zero picks a free one.
	Port int
	// Settings are extra server settings (name to value), passed as -c name=value. They
	// override the defaults (fsync=on, synchronous_commit=on, max_connections=200, ...).
	Settings map[string]string
	// StartTimeout bounds how long Start and Restart wait for the server to accept
	// connections. Zero means 60 seconds.
	StartTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.BinDir == "" {
		o.BinDir = os.Getenv("PG_BINDIR")
	}
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if o.ParentDir == "" {
		o.ParentDir = os.TempDir()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
}

// Cluster is a running (or stopped) throwaway PostgreSQL cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	opts    Options
	dir     string // private temporary directory
	dataDir string
	sockDir string
	logPath string
	port    int
	cred    *syscall.Credential // nil when not running as root

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start initialises a new cluster in a fresh temporary directory and starts it. It returns
// once the server accepts connections. On failure it removes what it created; the error then
// carries the tail of the server log.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.setDefaults()
	for _, bin := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("pgcluster: %s not found in %s: %w", bin, opts.BinDir, err)
		}
	}
	c := &Cluster{opts: opts}
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return nil, err
		}
		c.cred = cred
	}
	dir, err := os.MkdirTemp(opts.ParentDir, "pgcluster-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: create directory: %w", err)
	}
	c.dir = dir
	c.dataDir = filepath.Join(dir, "data")
	c.sockDir = filepath.Join(dir, "sock")
	c.logPath = filepath.Join(dir, "postgres.log")
	if err := os.Mkdir(c.sockDir, 0o700); err != nil {
		c.removeDir()
		return nil, fmt.Errorf("pgcluster: create socket directory: %w", err)
	}
	if c.cred != nil {
		for _, p := range []string{dir, c.sockDir} {
			if err := os.Chown(p, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				c.removeDir()
				return nil, fmt.Errorf("pgcluster: hand %s to user postgres: %w", p, err)
			}
		}
	}
	if opts.Port != 0 {
		c.port = opts.Port
	} else if c.port, err = freePort(); err != nil {
		c.removeDir()
		return nil, err
	}
	// --no-sync skips flushing the fresh data directory to disk: the cluster is throwaway, and
	// the server's own writes (WAL, checkpoints) are still fsynced.
	initdb := exec.CommandContext(ctx, filepath.Join(opts.BinDir, "initdb"),
		"-D", c.dataDir, "-U", Superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		c.removeDir()
		return nil, fmt.Errorf("pgcluster: initdb: %w: %s", err, tail(out, 2000))
	}
	if err := c.start(ctx); err != nil {
		c.removeDir()
		return nil, err
	}
	return c, nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup(Superuser)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root needs the system user %q: %w", Superuser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: uid %q of user %q: %w", u.Uid, Superuser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: gid %q of user %q: %w", u.Gid, Superuser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// settings returns the server settings: durable defaults overridden by Options.Settings.
func (c *Cluster) settings() []string {
	s := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(c.port),
		"unix_socket_directories": c.sockDir,
		"fsync":                   "on",
		"synchronous_commit":      "on",
		"full_page_writes":        "on",
		"max_connections":         "200",
		"shared_buffers":          "128MB",
		"logging_collector":       "off",
	}
	for k, v := range c.opts.Settings {
		s[k] = v
	}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]string, 0, 2*len(keys)+2)
	args = append(args, "-D", c.dataDir)
	for _, k := range keys {
		args = append(args, "-c", k+"="+s[k])
	}
	return args
}

// start launches the postmaster and waits until it accepts connections.
func (c *Cluster) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: open server log: %w", err)
	}
	// Not CommandContext: the server outlives the ctx of the call that starts it.
	cmd := exec.Command(filepath.Join(c.opts.BinDir, "postgres"), c.settings()...)
	cmd.Dir = c.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: c.cred,
		// Own process group, so that Kill reaches every server process and a terminal's
		// Ctrl-C does not.
		Setpgid: true,
		// If this process dies, the postmaster gets SIGQUIT (immediate shutdown) instead of
		// living on as an orphan.
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	c.cmd, c.done = cmd, done

	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	for {
		conn, err := pgconn.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-done:
			c.cmd, c.done = nil, nil
			return fmt.Errorf("pgcluster: postgres exited during start-up: %s", c.logTail())
		case <-ctx.Done():
			c.stopLocked(syscall.SIGQUIT, 10*time.Second)
			return fmt.Errorf("pgcluster: postgres not ready: %w (last error: %v): %s", ctx.Err(), err, c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL returns a connection URL for database dbname as the superuser, over the unix socket.
func (c *Cluster) URL(dbname string) string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", Superuser, dbname, c.sockDir, c.port)
}

// TCPURL returns a connection URL for database dbname as the superuser, over TCP on 127.0.0.1.
func (c *Cluster) TCPURL(dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.port, dbname)
}

// Port returns the TCP port the cluster listens on.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster's temporary directory (data, socket and log live below it).
func (c *Cluster) Dir() string { return c.dir }

// CreateDatabase creates an empty database named name.
func CreateDatabase(ctx context.Context, serverURL, name string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("pgcluster: connect to create database %q: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("pgcluster: create database %q: %w", name, err)
	}
	return nil
}

// CreateDatabase creates an empty database named name in the cluster.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return CreateDatabase(ctx, c.URL("postgres"), name)
}

// Running reports whether the server process is alive.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd != nil
}

// Stop shuts the server down cleanly (fast shutdown: open transactions are rolled back,
// clients disconnected) and keeps the data for Restart. Stopping a stopped cluster is a no-op.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(syscall.SIGINT, 60*time.Second)
}

// Kill crashes the server: every server process gets SIGKILL, as in a power cut of the
// database (though writes already handed to the kernel survive). The data stays for Restart,
// which then runs crash recovery. Killing a stopped cluster is a no-op.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	pid := c.cmd.Process.Pid
	// Server processes call setsid, so they are not in the postmaster's process group: find
	// them by parent pid before the postmaster dies and they are re-parented.
	children := childPIDs(pid)
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgcluster: kill postmaster %d: %w", pid, err)
	}
	for _, p := range children {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	<-c.done
	c.cmd, c.done = nil, nil
	// Wait until the killed processes are gone, so that Restart finds the shared memory free.
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range children {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// childPIDs lists the processes whose parent is ppid, from /proc.
func childPIDs(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parent, _, ok := procStat(pid); ok && parent == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X'
}

// procStat returns the parent pid and state of pid from /proc/<pid>/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// Format: pid (comm) state ppid ...; comm may contain spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}

// Restart starts the server again on the same data, socket and port. A running server is
// stopped cleanly first.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.start(ctx)
}

// Close stops the server (cleanly, or by SIGKILL if it does not stop in time) and removes the
// cluster's directory. The Cluster cannot be used afterwards.
func (c *Cluster) Close() error {
	c.mu.Lock()
	err := c.stopLocked(syscall.SIGINT, 30*time.Second)
	c.mu.Unlock()
	if err != nil {
		_ = c.Kill()
	}
	if rmErr := c.removeDir(); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// stopLocked sends sig to the postmaster and waits up to timeout for it to exit, then kills it.
func (c *Cluster) stopLocked(sig syscall.Signal, timeout time.Duration) error {
	if c.cmd == nil {
		return nil
	}
	defer func() { c.cmd, c.done = nil, nil }()
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgcluster: signal postgres: %w", err)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("pgcluster: postgres did not stop within %s; killed", timeout)
	}
}

func (c *Cluster) removeDir() error {
	if c.dir == "" {
		return nil
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("pgcluster: remove %s: %w", c.dir, err)
	}
	return nil
}

// LogTail returns the last few kilobytes of the server log, for error messages.
func (c *Cluster) LogTail() string { return c.logTail() }

func (c *Cluster) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	return tail(b, 4000)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
