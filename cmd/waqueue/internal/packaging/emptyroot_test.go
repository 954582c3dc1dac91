package packaging

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/waqueue/waqueue/internal/testwait"
)

// nonroot is the uid/gid of distroless's "nonroot" user, which the image runs as.
const nonroot = 65532

// emptyRoot builds what the image holds: the binary at /usr/local/bin/waqueue, the CA
// certificates, tzdata and an empty /data owned by the non-root user. Nothing else: no shell,
// no libc, no /etc/passwd, no /tmp.
func emptyRoot(t *testing.T, bin string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	copyFile(t, bin, filepath.Join(root, "usr/local/bin/waqueue"), 0o755)
	copyFile(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), 0o644)
	err := filepath.WalkDir("/usr/share/zoneinfo", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		copyFile(t, p, filepath.Join(root, p), 0o644)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(root, "data"), nonroot, nonroot); err != nil {
		t.Fatal(err)
	}
	// Every directory on the way must be traversable by the non-root user.
	_ = filepath.WalkDir(filepath.Dir(root), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != filepath.Join(root, "data") {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return root
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// jail returns the command that runs args inside root as the non-root user, in new mount and
// PID namespaces when unshare works here, with chroot alone otherwise.
func jail(t *testing.T, root string) func(ctx context.Context, env []string, args ...string) *exec.Cmd {
	t.Helper()
	prerequisite(t, os.Geteuid() == 0, "root (chroot)")
	chroot, err := exec.LookPath("chroot")
	prerequisite(t, err == nil, "chroot (coreutils)")
	var prefix []string
	if unshare, err := exec.LookPath("unshare"); err == nil &&
		exec.Command(unshare, "--mount", "--pid", "--fork", "--kill-child", "true").Run() == nil {
		prefix = []string{unshare, "--mount", "--pid", "--fork", "--kill-child"}
	} else {
		t.Log("unshare unavailable; chroot alone")
	}
	return func(ctx context.Context, env []string, args ...string) *exec.Cmd {
		argv := append(append(append([]string{}, prefix...), chroot, "--userspec="+strconv.Itoa(nonroot)+":"+strconv.Itoa(nonroot), root), args...)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		return cmd
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// safeBuf is a bytes.Buffer safe for the process's writes and the test's reads.
type safeBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *safeBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestStaticBinaryIsStatic: the image's binary needs no dynamic loader or shared library.
func TestStaticBinaryIsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the static binary; not in -short")
	}
	f, err := elf.Open(staticBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a PT_INTERP (dynamic loader): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
}

// TestImageRootServesUntilHealthy runs the binary as the image does — `serve` with the image's
// environment, as the non-root user, in a root holding only the binary, CA certificates, tzdata
// and the /data volume — and waits until the image's HEALTHCHECK (`waqueue healthcheck`, run in
// the same root) passes and /readyz answers 200 (so the SQLite store works in /data with no
// /tmp). It also runs `waqueue version` there and compares it with what the toolchain stamped.
func TestImageRootServesUntilHealthy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the static binary and runs it; not in -short")
	}
	bin := staticBinary(t)
	root := emptyRoot(t, bin)
	run := jail(t, root)
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	env := []string{"PATH=/usr/local/bin", "WAQUEUE_DATA_DIR=/data", "WAQUEUE_LISTEN=" + addr, "WAQUEUE_METRICS_LISTEN=" + metricsAddr}

	safety := testwait.Limit
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()

	// waqueue version inside the root: the same build info the toolchain reports.
	out, err := run(ctx, env, "/usr/local/bin/waqueue", "version", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("waqueue version in the empty root: %v\n%s", err, out)
	}
	var ver struct {
		Version   string `json:"version"`
		Revision  string `json:"revision"`
		GoVersion string `json:"go_version"`
	}
	if err := json.Unmarshal(out, &ver); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	goVer, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mod\tgithub.com/waqueue/waqueue\t" + ver.Version, "build\tCGO_ENABLED=0", "build\t-trimpath=true"} {
		if !strings.Contains(string(goVer), want) {
			t.Errorf("go version -m lacks %q (version --json %s):\n%s", want, out, goVer)
		}
	}
	if !strings.HasPrefix(string(goVer), bin+": "+ver.GoVersion+"\n") {
		t.Errorf("version --json go_version %q; go version -m:\n%s", ver.GoVersion, goVer)
	}
	if rev := ver.Revision; rev != "" && !strings.Contains(string(goVer), "vcs.revision="+rev) {
		t.Errorf("version --json revision %q; go version -m:\n%s", rev, goVer)
	}

	var logs safeBuf
	srv := run(ctx, env, "/usr/local/bin/waqueue", "serve")
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("serve's output:\n%s", logs.String())
		}
	}()

	// Wait for the condition: the HEALTHCHECK command passes. Each attempt is bounded by the
	// command's own --timeout; the overall bound is only a safety net.
	var last []byte
	for healthy := false; !healthy; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("serve exited before it was healthy: %v", err)
		case <-ctx.Done():
			t.Fatalf("not healthy within the %s safety timeout; last healthcheck:\n%s", safety, last)
		default:
		}
		hc := run(ctx, env, "/usr/local/bin/waqueue", "healthcheck")
		last, err = hc.CombinedOutput()
		healthy = err == nil
		if !healthy {
			waitABit(ctx)
		}
	}
	if !strings.Contains(string(last), `"status":"ok"`) {
		t.Errorf("healthcheck output %s", last)
	}
	// Ready too: the event store and read models (SQLite in /data) answer, no projection fails.
	for {
		code, body := get(ctx, t, "http://"+addr+"/readyz")
		if code == http.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("/readyz never 200 within the safety timeout: %d %s", code, body)
		}
		waitABit(ctx)
	}
	// The metrics listener names the build.
	if code, body := get(ctx, t, "http://"+metricsAddr+"/metrics"); code != http.StatusOK ||
		!strings.Contains(body, `waqueue_build_info{goversion="`+ver.GoVersion+`"`) {
		t.Errorf("metrics: %d, waqueue_build_info with goversion %s missing", code, ver.GoVersion)
	}
	// The state went to the volume, owned by the non-root user.
	st, err := os.Stat(filepath.Join(root, "data", "admin.key"))
	if err != nil {
		t.Fatalf("admin key not in /data: %v", err)
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok && (s.Uid != nonroot || s.Gid != nonroot) {
		t.Errorf("/data/admin.key owned by %d:%d, want %d:%d", s.Uid, s.Gid, nonroot, nonroot)
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("serve logged errors:\n%s", logs.String())
	}
}

// waitABit yields between two polls of a condition (the condition, not the pause, decides).
func waitABit(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}

func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
