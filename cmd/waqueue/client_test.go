package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/adapters/httpapi/apitest"
	"github.com/waqueue/waqueue/client"
	"github.com/waqueue/waqueue/internal/testwait"
)

// cli runs the waqueue root command with args against srv (its URL, and its data directory
// for the admin key unless args name another key), feeding stdin. It returns stdout, stderr and
// the command's error.
func cli(t *testing.T, srv *apitest.Server, dir, stdin string, args ...string) (string, string, error) {
	t.Helper()
	for _, env := range []string{"WAQUEUE_SERVER", "WAQUEUE_KEY", "WAQUEUE_DATA_DIR", "WAQUEUE_SESSION"} {
		t.Setenv(env, "")
	}
	if srv != nil {
		args = append(args, "--server", srv.URL, "--data-dir", dir)
		// Runs against this server share one session file: each run reads the writes of the
		// runs before it, as a user's successive commands do.
		t.Setenv("WAQUEUE_SESSION", filepath.Join(dir, "cli-session"))
	}
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// mustCLI is cli that fails the test on an error.
func mustCLI(t *testing.T, srv *apitest.Server, dir string, args ...string) string {
	t.Helper()
	out, errOut, err := cli(t, srv, dir, "", args...)
	if err != nil {
		t.Fatalf("waqueue %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func startServer(t *testing.T) (*apitest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	return apitest.Start(t, apitest.Options{Dir: dir}), dir
}

func TestKeysCreateListRevoke(t *testing.T) {
	srv, dir := startServer(t)
	// No --key: the admin key is read from DATA_DIR/admin.key.
	out := mustCLI(t, srv, dir, "keys", "create", "--role", "operator", "--label", "night shift")
	secret := regexp.MustCompile(`secret: (wq_\S+)`).FindStringSubmatch(out)
	id := regexp.MustCompile(`created key (\S+) \(role operator, tenant default`).FindStringSubmatch(out)
	if secret == nil || id == nil {
		t.Fatalf("keys create printed %q, want the key id, role, tenant and secret", out)
	}

	out = mustCLI(t, srv, dir, "keys", "list")
	row := lineWith(out, id[1])
	if !strings.Contains(row, "operator") || !strings.Contains(row, "night shift") || !strings.HasSuffix(strings.TrimSpace(row), "-") {
		t.Fatalf("keys list row of %s = %q, want operator, its label and no revocation\n%s", id[1], row, out)
	}
	if strings.Contains(out, secret[1]) {
		t.Fatalf("keys list shows a secret:\n%s", out)
	}
	// The new key works as --key.
	mustCLI(t, srv, dir, "connections", "list", "--key", secret[1])

	if out = mustCLI(t, srv, dir, "keys", "revoke", id[1], "--reason", "left the team"); !strings.Contains(out, "revoked key "+id[1]) {
		t.Fatalf("keys revoke printed %q", out)
	}
	var listed struct {
		Keys []client.Key `json:"keys"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, srv, dir, "keys", "list", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range listed.Keys {
		if k.ID == id[1] {
			found = true
			if k.RevokedAt.IsZero() {
				t.Fatalf("key %s not revoked in --json list: %+v", id[1], k)
			}
		}
	}
	if !found {
		t.Fatalf("key %s missing from keys list --json: %+v", id[1], listed.Keys)
	}

	// A revoked key is refused; the API's problem reaches the user with its code.
	_, _, err := cli(t, srv, dir, "", "connections", "list", "--key", secret[1])
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "unauthorized" || p.Status != 401 {
		t.Fatalf("connections list with a revoked key: err = %v, want the unauthorized problem", err)
	}
	if want := "(unauthorized)"; !strings.HasSuffix(err.Error(), want) || !strings.HasPrefix(err.Error(), p.Title+": ") {
		t.Fatalf("error text %q, want '<title>: <detail> (code)'", err.Error())
	}

	// --tenant naming a tenant that does not exist creates nothing anywhere (404).
	before := len(listed.Keys)
	if _, _, err := cli(t, srv, dir, "", "keys", "create", "--role", "sender", "--tenant", "other"); !errors.As(err, &p) || p.Code != "not_found" {
		t.Fatalf("keys create --tenant other: err = %v, want not_found", err)
	}
	if err := json.Unmarshal([]byte(mustCLI(t, srv, dir, "keys", "list", "--json")), &listed); err != nil || len(listed.Keys) != before {
		t.Fatalf("after a refused create: %d keys (err %v), want %d", len(listed.Keys), err, before)
	}
}

func TestAPIProblemCode(t *testing.T) {
	srv, dir := startServer(t)
	mustCLI(t, srv, dir, "connections", "register", "--phone", "+491701234567", "--id", "shop-1")
	_, _, err := cli(t, srv, dir, "", "connections", "register", "--phone", "+491701234568", "--id", "shop-1")
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "already_registered" {
		t.Fatalf("second register of shop-1: err = %v, want already_registered", err)
	}
	_, _, err = cli(t, srv, dir, "", "send", "shop-1", "--to", "not a number", "--text", "hi")
	if !errors.As(err, &p) || p.Code != "invalid_phone" || !strings.HasSuffix(err.Error(), "(invalid_phone)") {
		t.Fatalf("send to a bad number: err = %v, want invalid_phone", err)
	}
	// The --idempotency-key travels with the send: the same send again answers the same
	// message; the key with another text is refused.
	first := mustCLI(t, srv, dir, "send", "shop-1", "--to", "+491709876543", "--text", "hi", "--idempotency-key", "k-1")
	if again := mustCLI(t, srv, dir, "send", "shop-1", "--to", "+49 170 9876543", "--text", "hi", "--idempotency-key", "k-1"); again != first {
		t.Fatalf("send retried with its key printed %q, want %q", again, first)
	}
	_, _, err = cli(t, srv, dir, "", "send", "shop-1", "--to", "+491709876543", "--text", "other", "--idempotency-key", "k-1")
	if !errors.As(err, &p) || p.Code != "idempotency_key_reused" || p.Status != 422 {
		t.Fatalf("send with a used key and another text: err = %v, want 422 idempotency_key_reused", err)
	}
	_, _, err = cli(t, srv, dir, "", "queue", "show", "nope")
	if !errors.As(err, &p) || p.Code != "not_found" {
		t.Fatalf("queue show of an unknown connection: err = %v, want not_found", err)
	}
}

func TestConnectionsSendBroadcastAndClear(t *testing.T) {
	srv, dir := startServer(t)
	const phone = "+491701234567"
	if out := mustCLI(t, srv, dir, "connections", "register", "--phone", phone, "--id", "shop-1"); !strings.Contains(out, "registered connection shop-1 ("+phone) {
		t.Fatalf("connections register printed %q", out)
	}
	if out := mustCLI(t, srv, dir, "send", "shop-1", "--to", "+491709876543", "--text", "Your order shipped", "--idempotency-key", "order-1"); !strings.Contains(out, "queued on shop-1") {
		t.Fatalf("send printed %q", out)
	}
	// The run kept its write's position for the next runs (read your writes across runs).
	if b, err := os.ReadFile(filepath.Join(dir, "cli-session")); err != nil || !regexp.MustCompile(`^\d+/\d+\n$`).Match(b) {
		t.Fatalf("session file after send: %q, %v; want the write's position", b, err)
	}

	csvPath := filepath.Join(t.TempDir(), "customers.csv")
	if err := os.WriteFile(csvPath, []byte("phone\n+491700000001\n+491700000002\n+491700000003\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := cli(t, srv, dir, "", "broadcast", "import", "shop-1", "--csv", csvPath, "--text", "Sale today")
	if err != nil {
		t.Fatalf("broadcast import: %v\n%s", err, errOut)
	}
	m := regexp.MustCompile(`broadcast (\S+) queued on shop-1: 3 recipients`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("broadcast import printed %q, want its id and 3 recipients", out)
	}
	bid := m[1]
	if strings.Contains(errOut, "\r") || strings.Contains(errOut, "uploading") {
		t.Fatalf("a progress bar on a stderr that is no terminal: %q", errOut)
	}
	var prog client.BroadcastProgress
	if err := json.Unmarshal([]byte(mustCLI(t, srv, dir, "broadcast", "show", bid, "--json")), &prog); err != nil || prog.Count != 3 || prog.Queued != 3 {
		t.Fatalf("broadcast show --json = %+v (err %v), want 3 queued", prog, err)
	}
	if err := srv.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}

	row := lineWith(mustCLI(t, srv, dir, "connections", "list"), "shop-1")
	if f := strings.Fields(row); len(f) != 7 || f[1] != phone || f[3] != "open" || f[4] != "4" || f[5] != "0" || f[6] != "-" {
		t.Fatalf("connections list row = %q, want shop-1 %s <link> open 4 0 -", row, phone)
	}
	if out := mustCLI(t, srv, dir, "queue", "show", "shop-1"); !strings.Contains(out, "queue open, 4 pending") || !strings.Contains(out, bid) {
		t.Fatalf("queue show printed %q", out)
	}

	// Hold and resume.
	if out := mustCLI(t, srv, dir, "queue", "hold", "shop-1", "--note", "checking"); !strings.Contains(out, "queue held") {
		t.Fatalf("queue hold printed %q", out)
	}
	if out := mustCLI(t, srv, dir, "queue", "resume", "shop-1"); !strings.Contains(out, "queue open") {
		t.Fatalf("queue resume printed %q", out)
	}

	// A wrong confirmation aborts: nothing is cleared.
	out, errOut, err = cli(t, srv, dir, "+491700000000\n", "queue", "clear", "shop-1", "--reason", "mistake")
	if !errors.Is(err, errAborted) {
		t.Fatalf("clear with a wrong phone: err = %v, want errAborted\n%s", err, out)
	}
	if !strings.Contains(out, "would purge 4 pending messages") || !strings.Contains(errOut, "("+phone+") to confirm") {
		t.Fatalf("clear preview/prompt: stdout %q stderr %q", out, errOut)
	}
	if q := queueOf(t, srv, dir, "shop-1"); q.Pending != 4 || q.Status != "open" {
		t.Fatalf("after an aborted clear: %+v, want 4 pending, open", q)
	}

	// The typed phone number confirms a clear of the broadcast only.
	out, _, err = cli(t, srv, dir, phone+"\n", "queue", "clear", "shop-1", "--reason", "wrong text", "--broadcast", bid)
	if err != nil {
		t.Fatalf("clear of the broadcast: %v\n%s", err, out)
	}
	for _, want := range []string{"would purge 3 pending messages of broadcast " + bid, "purged:       3 messages", "reason:       wrong text", "requested by: "} {
		if !strings.Contains(out, want) {
			t.Fatalf("clear output lacks %q:\n%s", want, out)
		}
	}
	// The report comes from the event stream; the queue read model follows it shortly after.
	if q := queueEventually(t, srv, dir, "shop-1", func(q client.Queue) bool { return q.Status == "open" }); q.Pending != 1 || q.Status != "open" {
		t.Fatalf("after the broadcast clear: %+v, want 1 pending, open", q)
	}

	// --yes confirms with the phone number itself.
	out = mustCLI(t, srv, dir, "queue", "clear", "shop-1", "--reason", "banned", "--yes")
	if !strings.Contains(out, "purged:       1 messages") || !strings.Contains(out, "reason:       banned") {
		t.Fatalf("clear --yes printed:\n%s", out)
	}
	if q := queueEventually(t, srv, dir, "shop-1", func(q client.Queue) bool { return q.Status == "open" }); q.Pending != 0 || q.Status != "open" {
		t.Fatalf("after clear --yes: %+v, want nothing pending, open", q)
	}

	// --then says what comes after: a held queue stays held by default, and the report says so;
	// resume reopens it; hold holds an open one.
	mustCLI(t, srv, dir, "queue", "hold", "shop-1")
	if out := mustCLI(t, srv, dir, "queue", "clear", "shop-1", "--reason", "r", "--yes"); !strings.Contains(out, "then:         keep; the queue is held") ||
		!strings.Contains(out, "waqueue queue resume") {
		t.Fatalf("clear of a held queue printed:\n%s", out)
	}
	if out := mustCLI(t, srv, dir, "queue", "clear", "shop-1", "--reason", "r", "--then", "resume", "--yes"); !strings.Contains(out, "then:         resume; the queue is open") {
		t.Fatalf("clear --then resume printed:\n%s", out)
	}
	if q := queueEventually(t, srv, dir, "shop-1", func(q client.Queue) bool { return q.Status == "open" }); q.Status != "open" {
		t.Fatalf("after clear --then resume: %+v, want open", q)
	}
	if out := mustCLI(t, srv, dir, "queue", "clear", "shop-1", "--reason", "r", "--then", "hold", "--yes"); !strings.Contains(out, "then:         hold; the queue is held") {
		t.Fatalf("clear --then hold printed:\n%s", out)
	}
	if _, _, err := cli(t, srv, dir, "", "queue", "clear", "shop-1", "--reason", "r", "--then", "later", "--yes"); err == nil || !strings.Contains(err.Error(), "invalid_then") {
		t.Fatalf("clear --then later: %v, want invalid_then", err)
	}
	// The connection's clears, newest first: the --then hold one, then the --then resume one.
	out = mustCLI(t, srv, dir, "queue", "clears", "shop-1", "--limit", "2")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || !strings.Contains(lines[1], "hold") ||
		!strings.Contains(lines[2], "resume") || !strings.HasPrefix(lines[3], "more: --cursor ") {
		t.Fatalf("queue clears printed:\n%s", out)
	}
}

func TestAuditExportAndVerify(t *testing.T) {
	srv, dir := startServer(t)
	mustCLI(t, srv, dir, "connections", "register", "--phone", "+491701234567", "--id", "shop-1")
	for _, role := range []string{"operator", "auditor", "sender"} {
		mustCLI(t, srv, dir, "keys", "create", "--role", role)
	}
	mustCLI(t, srv, dir, "send", "shop-1", "--to", "+491709876543", "--text", "hi")
	mustCLI(t, srv, dir, "queue", "clear", "shop-1", "--reason", "test", "--yes")
	if err := srv.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := auditPageSize
	auditPageSize = 2 // so that the export follows several cursor pages
	t.Cleanup(func() { auditPageSize = old })

	file := filepath.Join(t.TempDir(), "audit.jsonl")
	_, errOut, err := cli(t, srv, dir, "", "audit", "export", "--format", "jsonl", "-o", file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	var lastSeq uint64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var e client.AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("jsonl line %q: %v", sc.Text(), err)
		}
		if e.Seq <= lastSeq {
			t.Fatalf("seq %d after %d: the export repeats or reorders entries", e.Seq, lastSeq)
		}
		lastSeq = e.Seq
		types = append(types, e.EventType)
	}
	// Three keys created and a clear requested and completed: at least five entries, more
	// than two pages of two.
	if len(types) < 5 || !contains(types, "ClearQueueRequested") || !contains(types, "QueueCleared") || !contains(types, "APIKeyCreated") {
		t.Fatalf("exported types %v, want the key creations and the clear", types)
	}
	if !strings.Contains(errOut, "exported ") {
		t.Fatalf("no summary on stderr: %q", errOut)
	}

	out := mustCLI(t, srv, dir, "audit", "export", "--type", "ClearQueueRequested", "--connection", "shop-1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != strings.Join(auditCSVHeader, ",") || !strings.Contains(lines[1], ",ClearQueueRequested,shop-1,") {
		t.Fatalf("csv export of the clear request:\n%s", out)
	}

	out = mustCLI(t, srv, dir, "audit", "verify")
	if !strings.Contains(out, "audit chain intact: ") || !strings.Contains(out, " entries checked") {
		t.Fatalf("audit verify printed %q", out)
	}
	var v client.AuditVerification
	if err := json.Unmarshal([]byte(mustCLI(t, srv, dir, "audit", "verify", "--json")), &v); err != nil || !v.OK || v.Checked != len(types) {
		t.Fatalf("audit verify --json = %+v (err %v), want ok with %d checked", v, err, len(types))
	}
}

func TestProjectionsRebuild(t *testing.T) {
	dir := t.TempDir()
	srv, err := apitest.New(context.Background(), apitest.Options{Dir: dir, ContractViolation: func(err error) { t.Errorf("%v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	mustCLI(t, srv, dir, "connections", "register", "--phone", "+491701234567", "--id", "shop-1")
	mustCLI(t, srv, dir, "send", "shop-1", "--to", "+491709876543", "--text", "hi")
	if err := srv.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Damage the cards read model behind its checkpoint's back: only a rebuild brings it back.
	if _, err := srv.DB.ExecContext(context.Background(), `DELETE FROM card_connections`); err != nil {
		t.Fatal(err)
	}
	srv.Close()

	if _, _, err := cli(t, nil, "", "", "projections", "rebuild", "--data-dir", dir, "nope"); err == nil || !strings.Contains(err.Error(), `unknown projection "nope"`) {
		t.Fatalf("rebuild nope: err = %v, want unknown projection", err)
	}
	out, errOut, err := cli(t, nil, "", "", "projections", "rebuild", "--data-dir", dir, "cards")
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, errOut)
	}
	if out != "rebuilt cards\n" {
		t.Fatalf("rebuild printed %q, want only cards rebuilt", out)
	}

	srv = apitest.Start(t, apitest.Options{Dir: dir})
	row := lineWith(mustCLI(t, srv, dir, "connections", "list"), "shop-1")
	if f := strings.Fields(row); len(f) != 7 || f[1] != "+491701234567" || f[4] != "1" {
		t.Fatalf("connections list after the rebuild: row %q, want shop-1 with its message pending", row)
	}
	// Rebuilding everything (no names) also succeeds on a live-free database.
	srv.Close()
	if out, errOut, err := cli(t, nil, "", "", "projections", "rebuild", "--data-dir", dir); err != nil || strings.Count(out, "rebuilt ") != 6 {
		t.Fatalf("rebuild of all: %q, err %v\n%s", out, err, errOut)
	}
}

func queueOf(t *testing.T, srv *apitest.Server, dir, conn string) client.Queue {
	t.Helper()
	var q client.Queue
	if err := json.Unmarshal([]byte(mustCLI(t, srv, dir, "queue", "show", conn, "--json")), &q); err != nil {
		t.Fatal(err)
	}
	return q
}

// queueEventually shows the queue until done accepts it or testwait.Limit has passed, and returns the last
// one seen (the caller's assertions then fail with its values).
func queueEventually(t *testing.T, srv *apitest.Server, dir, conn string, done func(client.Queue) bool) client.Queue {
	t.Helper()
	deadline := time.Now().Add(testwait.Limit)
	for {
		q := queueOf(t, srv, dir, conn)
		if done(q) || time.Now().After(deadline) {
			return q
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestClientFlagsFromEnvironment(t *testing.T) {
	srv, _ := startServer(t)
	// The environment names the server and the key; no flags.
	t.Setenv("WAQUEUE_SERVER", srv.URL)
	t.Setenv("WAQUEUE_KEY", srv.AdminKey)
	t.Setenv("WAQUEUE_DATA_DIR", t.TempDir()) // no admin.key there: the key must come from WAQUEUE_KEY
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"connections", "register", "--phone", "+491701234567", "--id", "env-1"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("register with the environment's server and key: %v", err)
	}
	if !strings.Contains(out.String(), "registered connection env-1") {
		t.Fatalf("register printed %q", out.String())
	}

	// Without a key anywhere the command says so instead of calling the API.
	t.Setenv("WAQUEUE_KEY", "")
	root = newRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"connections", "list"})
	if err := root.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "no API key") {
		t.Fatalf("connections list without a key: err = %v, want 'no API key'", err)
	}
}

// TestProgressOnlyOnATerminal: the upload bar draws on a terminal writer and on nothing else.
func TestProgressOnlyOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	if terminal(&buf) || progressOut(&buf) != nil {
		t.Fatal("a buffer is taken for a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if terminal(f) {
		t.Fatal("a regular file is taken for a terminal")
	}
	p := &progressReader{r: strings.NewReader("0123456789"), total: 10, w: progressOut(&buf), label: "up"}
	if _, err := io.ReadAll(p); err != nil {
		t.Fatal(err)
	}
	p.finish()
	if buf.Len() != 0 {
		t.Fatalf("drew on a non-terminal: %q", buf.String())
	}
	p = &progressReader{r: strings.NewReader("0123456789"), total: 10, w: &buf, label: "up"} // as on a terminal
	if _, err := io.ReadAll(p); err != nil {
		t.Fatal(err)
	}
	p.finish()
	if !strings.Contains(buf.String(), "100%") {
		t.Fatalf("no bar drawn on a terminal writer: %q", buf.String())
	}
}

// TestTenantsCLI: the platform operator (the bootstrap key) provisions a tenant and its first
// admin key, suspends it (its key gets tenant_suspended) and resumes it.
func TestTenantsCLI(t *testing.T) {
	srv, dir := startServer(t)
	if out := mustCLI(t, srv, dir, "tenants", "create", "acme", "--name", "Acme Ltd"); !strings.Contains(out, "tenant acme") {
		t.Fatalf("tenants create: %q", out)
	}
	out := mustCLI(t, srv, dir, "keys", "create", "--tenant", "acme", "--role", "admin", "--label", "acme admin")
	if !strings.Contains(out, "tenant acme") {
		t.Fatalf("keys create --tenant acme: %q", out)
	}
	secret := ""
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, "secret: "); ok {
			secret = s
		}
	}
	if out := mustCLI(t, srv, dir, "tenants", "rename", "acme", "Acme GmbH"); !strings.Contains(out, "Acme GmbH") {
		t.Fatalf("tenants rename: %q", out)
	}
	if out := mustCLI(t, srv, dir, "tenants", "limit", "acme", "--per-second", "20", "--burst", "40"); !strings.Contains(out, "20 requests/s, burst 40") {
		t.Fatalf("tenants limit: %q", out)
	}
	if out := mustCLI(t, srv, dir, "tenants", "list"); !strings.Contains(out, "acme") || !strings.Contains(out, "Acme GmbH") {
		t.Fatalf("tenants list: %q", out)
	}
	if out := mustCLI(t, srv, dir, "tenants", "suspend", "acme", "--reason", "unpaid"); !strings.Contains(out, "suspended") {
		t.Fatalf("tenants suspend: %q", out)
	}
	var p *client.Problem
	if _, _, err := cli(t, srv, dir, "", "connections", "list", "--key", secret); !errors.As(err, &p) || p.Code != "tenant_suspended" || p.Status != 403 {
		t.Fatalf("a suspended tenant's key: %v", err)
	}
	// The tenant's own admin cannot manage tenants: 404, as for a route that does not exist.
	mustCLI(t, srv, dir, "tenants", "resume", "acme")
	if _, _, err := cli(t, srv, dir, "", "tenants", "list", "--key", secret); !errors.As(err, &p) || p.Code != "not_found" {
		t.Fatalf("tenants list as a tenant admin: %v", err)
	}
}
