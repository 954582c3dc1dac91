package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the repository's top directory (this package is cmd/waqueue/internal/packaging).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", dir, err)
	}
	return dir
}

// prerequisite skips the test when ok is false, or fails it when CI=true: in CI every
// prerequisite of these tests must be present.
func prerequisite(t *testing.T, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true makes this a failure): %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildOut  []byte
)

// staticBinary builds the binary once per test run with scripts/build-static.sh, the script the
// Dockerfile runs, and returns its path.
func staticBinary(t *testing.T) string {
	t.Helper()
	prerequisite(t, runtime.GOOS == "linux", "Linux (the image's platform)")
	root := repoRoot(t)
	_, err := exec.LookPath("sh")
	prerequisite(t, err == nil, "sh to run scripts/build-static.sh")
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "waqueue-static-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "waqueue")
		cmd := exec.Command("sh", filepath.Join(root, "scripts", "build-static.sh"), builtBin)
		cmd.Dir = root
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("scripts/build-static.sh: %v\n%s", buildErr, buildOut)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// goModGoVersion is go.mod's go directive.
func goModGoVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go directive")
	return ""
}
