package packaging

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/config"
)

// dockerfile is the Dockerfile as instructions (continuation lines joined, comments dropped).
func dockerfile(t *testing.T) [][2]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if c, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur += c + " "
			continue
		}
		cur += trimmed
		if kw, rest, ok := strings.Cut(cur, " "); ok {
			out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(rest)})
		}
		cur = ""
	}
	return out
}

// TestDockerfile checks what the Dockerfile promises and the container test relies on: the
// binary is built by scripts/build-static.sh (the script the test runs) with go.mod's Go
// version, the final stage is distroless/static or scratch, it runs as a non-root user with
// /data as a volume, its HEALTHCHECK is `waqueue healthcheck`, and its WAQUEUE_* variables are
// ones the binary reads.
func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms, runs, users, volumes, healthchecks, envs []string
	for _, in := range ins {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
		case "RUN":
			runs = append(runs, in[1])
		case "USER":
			users = append(users, in[1])
		case "VOLUME":
			volumes = append(volumes, in[1])
		case "HEALTHCHECK":
			healthchecks = append(healthchecks, in[1])
		case "ENV":
			envs = append(envs, in[1])
		case "ARG":
			if v, ok := strings.CutPrefix(in[1], "GO_VERSION="); ok && v != goModGoVersion(t) {
				t.Errorf("Dockerfile ARG GO_VERSION=%s; go.mod says go %s", v, goModGoVersion(t))
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build; FROM lines %v", froms)
	}
	if !strings.HasPrefix(froms[0], "golang:${GO_VERSION}") {
		t.Errorf("build stage %q: want golang:${GO_VERSION}…", froms[0])
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage %q: want distroless/static or scratch", final)
	}
	built := false
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			t.Errorf("the Dockerfile runs go build itself (%q); it must run scripts/build-static.sh, which the tests run", r)
		}
		built = built || strings.HasPrefix(r, "./scripts/build-static.sh ")
	}
	if !built {
		t.Errorf("no RUN ./scripts/build-static.sh in %v", runs)
	}
	if len(users) == 0 || slices.ContainsFunc(users, func(u string) bool {
		return u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:")
	}) {
		t.Errorf("USER %v: want a non-root user", users)
	}
	if !slices.ContainsFunc(volumes, func(v string) bool { return strings.Contains(v, `"/data"`) || v == "/data" }) {
		t.Errorf("VOLUME %v: want /data", volumes)
	}
	if len(healthchecks) != 1 || !strings.Contains(healthchecks[0], `["/usr/local/bin/waqueue", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %v: want CMD [\"/usr/local/bin/waqueue\", \"healthcheck\"]", healthchecks)
	}
	known := knownEnv()
	for _, e := range envs {
		for _, kv := range strings.Fields(e) {
			name, _, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(name, "WAQUEUE_") && !known[name] {
				t.Errorf("Dockerfile ENV %s: not a variable waqueue reads", name)
			}
		}
	}
}

func knownEnv() map[string]bool {
	known := map[string]bool{}
	for _, name := range config.EnvVars() {
		known[name] = true
	}
	return known
}

type composeFile struct {
	Services map[string]struct {
		Image       string         `yaml:"image"`
		Build       any            `yaml:"build"`
		Command     []string       `yaml:"command"`
		Environment map[string]any `yaml:"environment"`
		Ports       []string       `yaml:"ports"`
		Volumes     []string       `yaml:"volumes"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

var interpolation = regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}`)

// interpolate resolves ${NAME:-default} as compose does with NAME unset.
func interpolate(s string) string {
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		return interpolation.FindStringSubmatch(m)[2]
	})
}

// readmeEnv is the WAQUEUE_* names of README's configuration table.
func readmeEnv(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `--[a-z-]+` \\| `(WAQUEUE_[A-Z_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	if len(names) < 5 {
		t.Fatalf("found only %v in README's configuration table", names)
	}
	return names
}

// TestComposeFile parses docker-compose.yml and checks it against the binary's configuration:
// waqueue, PostgreSQL 15 and NATS with JetStream; waqueue starts only when both are healthy;
// every WAQUEUE_* it sets is a variable waqueue reads, every variable waqueue reads (so every
// row of README's table) is set, and the values pass waqueue's own validation, with the
// database and broker URLs naming the compose services and their ports.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	names := make([]string, 0, len(cf.Services))
	for n := range cf.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "nats,postgres,waqueue" {
		t.Fatalf("services %v; want nats, postgres, waqueue", names)
	}
	wq, pg, nats := cf.Services["waqueue"], cf.Services["postgres"], cf.Services["nats"]

	if wq.Build == nil {
		t.Error("waqueue: want build: . (the Dockerfile)")
	}
	if !strings.HasPrefix(pg.Image, "postgres:15") {
		t.Errorf("postgres image %q: want postgres:15…", pg.Image)
	}
	if !strings.HasPrefix(nats.Image, "nats:") || !slices.ContainsFunc(nats.Command, func(a string) bool { return a == "--jetstream" || a == "-js" }) {
		t.Errorf("nats: image %q command %v: want nats with --jetstream", nats.Image, nats.Command)
	}
	for _, dep := range []string{"postgres", "nats"} {
		if d, ok := wq.DependsOn[dep]; !ok || d.Condition != "service_healthy" {
			t.Errorf("waqueue depends_on %s: %+v; want condition service_healthy", dep, wq.DependsOn)
		}
		if s := cf.Services[dep]; s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 {
			t.Errorf("%s has no healthcheck, so service_healthy never holds", dep)
		}
	}
	if wq.Healthcheck == nil || !slices.Contains(wq.Healthcheck.Test, "healthcheck") {
		t.Errorf("waqueue healthcheck %+v: want waqueue healthcheck", wq.Healthcheck)
	}
	if !slices.ContainsFunc(wq.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
		t.Errorf("waqueue volumes %v: want one on /data", wq.Volumes)
	}

	known := knownEnv()
	env := map[string]string{}
	for k, v := range wq.Environment {
		if !strings.HasPrefix(k, "WAQUEUE_") {
			continue
		}
		if !known[k] {
			t.Errorf("docker-compose.yml sets %s, which waqueue does not read", k)
		}
		s, ok := v.(string)
		if !ok {
			t.Errorf("%s: value %v (%T): quote it, compose wants strings", k, v, v)
		}
		env[k] = interpolate(s)
	}
	for name := range known {
		if _, ok := env[name]; !ok {
			t.Errorf("docker-compose.yml does not set %s (every setting is listed there)", name)
		}
	}
	for _, name := range readmeEnv(t) {
		if !known[name] {
			t.Errorf("README's configuration table names %s, which waqueue does not read", name)
		}
	}

	// The values are a configuration waqueue accepts, on PostgreSQL and NATS.
	var cfg config.Config
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.Bind(fs)
	if err := config.ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatalf("compose environment: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("compose environment does not validate: %v", err)
	}
	if cfg.Engine() != "postgres" || cfg.Broker == "" {
		t.Fatalf("compose runs on %s with broker %q; want PostgreSQL and NATS", cfg.Engine(), cfg.Broker)
	}
	for _, c := range []struct{ url, service, port string }{{cfg.DB, "postgres", "5432"}, {cfg.Broker, "nats", "4222"}} {
		u, err := url.Parse(c.url)
		if err != nil || u.Hostname() != c.service || u.Port() != c.port {
			t.Errorf("%s: want host %s port %s (the compose service)", c.url, c.service, c.port)
		}
	}
	if u, err := url.Parse(cfg.DB); err == nil {
		if u.User.Username() != interpolate(anyString(pg.Environment["POSTGRES_USER"])) ||
			strings.TrimPrefix(u.Path, "/") != interpolate(anyString(pg.Environment["POSTGRES_DB"])) {
			t.Errorf("WAQUEUE_DB %s does not match the postgres service's POSTGRES_USER/POSTGRES_DB", cfg.DB)
		}
		if p, _ := u.User.Password(); p != interpolate(anyString(pg.Environment["POSTGRES_PASSWORD"])) {
			t.Error("WAQUEUE_DB's password does not match the postgres service's POSTGRES_PASSWORD")
		}
	}
	// The published port reaches the listen address; the listen host is reachable from outside.
	_, port, _ := strings.Cut(cfg.Listen, ":")
	if host, _, _ := strings.Cut(cfg.Listen, ":"); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("WAQUEUE_LISTEN %s: loopback is unreachable from outside the container", cfg.Listen)
	}
	if !slices.ContainsFunc(wq.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
		t.Errorf("waqueue ports %v do not publish the listen port %s", wq.Ports, port)
	}
	if cfg.MetricsListen != "" {
		_, mport, _ := strings.Cut(cfg.MetricsListen, ":")
		if !slices.ContainsFunc(wq.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+mport) }) {
			t.Errorf("waqueue ports %v do not publish the metrics port %s", wq.Ports, mport)
		}
	}
	if cfg.Transport != config.TransportSimulator {
		t.Errorf("compose's default transport is %s; the default must be the simulator (nothing reaches WhatsApp by accident)", cfg.Transport)
	}
}

func anyString(v any) string { s, _ := v.(string); return s }
