// Package pgtest gives tests a fresh PostgreSQL database per call.
//
// By default every test binary shares one throwaway cluster (see pgcluster), started on first
// use. If TEST_DATABASE_URL is set, databases are created on that server instead and dropped
// when the test ends. If no server can be had, the test is skipped — except when the
// environment has CI=true, where a missing PostgreSQL is a failure.
//
// A package whose tests use pgtest should stop the shared cluster when its tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it the cluster is still stopped when the test binary exits (the server gets SIGQUIT
// when its parent dies), but its temporary directory is left behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/waqueue/waqueue/adapters/pgcluster"
)

// EnvURL names the variable holding the URL of an existing server to use instead of a
// throwaway cluster. Its user must be allowed to create databases.
const EnvURL = "TEST_DATABASE_URL"

var (
	once     sync.Once
	shared   *pgcluster.Cluster
	startErr error
)

// Cluster returns the cluster shared by this test binary, starting it on first use. It fails
// or skips t (see the package doc) when no cluster can be started, or when TEST_DATABASE_URL
// is set (the shared server is then not ours to stop or kill).
func Cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Skipf("pgtest: %s is set; a test needing its own cluster cannot run", EnvURL)
	}
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared, startErr = pgcluster.Start(ctx, pgcluster.Options{})
	})
	if startErr != nil {
		unavailable(t, startErr)
	}
	return shared
}

// Start starts a cluster of the test's own (for fault tests that stop or kill the server) and
// closes it when the test ends. It fails or skips t like Cluster.
func Start(t testing.TB, opts pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, opts)
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("pgtest: close cluster: %v", err)
		}
	})
	return c
}

func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("pgtest: PostgreSQL is required when CI=true: %v", err)
	}
	t.Skipf("pgtest: PostgreSQL unavailable, skipping: %v", err)
}

// URL creates a fresh, empty database and returns its connection URL. With TEST_DATABASE_URL
// the database is dropped when the test ends; on the shared throwaway cluster it goes with the
// cluster.
func URL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "t_" + sanitize(t.Name()) + "_" + randomSuffix()
	if base := os.Getenv(EnvURL); base != "" {
		if err := pgcluster.CreateDatabase(ctx, base, name); err != nil {
			unavailable(t, err)
		}
		u, err := url.Parse(base)
		if err != nil {
			t.Fatalf("pgtest: parse %s: %v", EnvURL, err)
		}
		u.Path = "/" + name
		t.Cleanup(func() { dropDatabase(t, base, name) })
		return u.String()
	}
	c := Cluster(t)
	if err := c.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c.URL(name)
}

func dropDatabase(t testing.TB, base, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Logf("pgtest: drop database %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Logf("pgtest: drop database %s: %v", name, err)
	}
}

// Main runs the tests and then closes the shared cluster, if one was started.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// Shutdown closes the shared cluster, if one was started. A TestMain that decides its exit code
// itself calls it after m.Run instead of using Main.
func Shutdown() {
	if shared != nil {
		if err := shared.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: close shared cluster:", err)
		}
		shared = nil
	}
}

// sanitize keeps a readable, identifier-safe part of a test name (databases names are limited
// to 63 bytes; the random suffix keeps them unique).
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}

func randomSuffix() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}
