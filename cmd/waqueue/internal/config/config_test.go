package config

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/waqueue/waqueue/adapters/eventstore/postgres"
)

func parse(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	c := &Config{}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	c.Bind(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func TestDefaults(t *testing.T) {
	c, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB != "sqlite://.data/waqueue.db" || c.Engine() != "sqlite" || c.SQLitePath() != ".data/waqueue.db" {
		t.Errorf("DB = %q (engine %s, path %s), want the embedded default under .data", c.DB, c.Engine(), c.SQLitePath())
	}
	if c.Transport != TransportSimulator || c.Listen != "127.0.0.1:8080" || c.NoPacing || c.NoDispatcher ||
		c.WebhookAllowPrivate || len(c.WebhookAllowPrefixes) != 0 || c.MetricsListen != "127.0.0.1:9090" || c.MetricsToken != "" ||
		c.MetricsTenantTop != 0 || c.MetricsExposed() {
		t.Errorf("defaults: %+v", c)
	}
	if c.AuditKey != ".data/audit-key.pem" || c.AuditCheckpointEvery != 100 || c.AuditCheckpointInterval != 5*time.Minute {
		t.Errorf("audit defaults: key %q, every %d, interval %s", c.AuditKey, c.AuditCheckpointEvery, c.AuditCheckpointInterval)
	}
	if c.GroupCommit != postgres.DefaultGroupCommitters {
		t.Errorf("--group-commit defaults to %d, the store's measured default is %d", c.GroupCommit, postgres.DefaultGroupCommitters)
	}
}

func TestAuditKeyAndCheckpointsFromEnvironment(t *testing.T) {
	env := map[string]string{"WAQUEUE_AUDIT_KEY": "/etc/waqueue/audit.pem", "WAQUEUE_AUDIT_CHECKPOINT_EVERY": "10",
		"WAQUEUE_AUDIT_CHECKPOINT_INTERVAL": "30s"}
	c, err := parse(t, []string{"--audit-checkpoint-every", "20"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.AuditKey != "/etc/waqueue/audit.pem" || c.AuditCheckpointEvery != 20 || c.AuditCheckpointInterval != 30*time.Second {
		t.Errorf("audit settings: key %q, every %d, interval %s", c.AuditKey, c.AuditCheckpointEvery, c.AuditCheckpointInterval)
	}
	_, err = parse(t, nil, map[string]string{"WAQUEUE_AUDIT_CHECKPOINT_EVERY": "0", "WAQUEUE_AUDIT_CHECKPOINT_INTERVAL": "1ms"})
	for _, want := range []string{"WAQUEUE_AUDIT_CHECKPOINT_EVERY", "WAQUEUE_AUDIT_CHECKPOINT_INTERVAL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %s named", err, want)
		}
	}
}

func TestFlagsBeatEnvironment(t *testing.T) {
	env := map[string]string{"WAQUEUE_DB": "postgres://env@localhost/db", "WAQUEUE_LISTEN": "127.0.0.1:9000",
		"WAQUEUE_NO_PACING": "true", "WAQUEUE_NO_DISPATCHER": "1"}
	c, err := parse(t, []string{"--listen", "127.0.0.1:7000"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7000" {
		t.Errorf("Listen = %q, want the flag's value", c.Listen)
	}
	if c.DB != env["WAQUEUE_DB"] || c.Engine() != "postgres" || !c.NoPacing || !c.NoDispatcher {
		t.Errorf("environment not applied: %+v", c)
	}
}

func TestInvalidConfigurationNamesEveryProblem(t *testing.T) {
	env := map[string]string{"WAQUEUE_DB": "mysql://x", "WAQUEUE_TRANSPORT": "telegram", "WAQUEUE_BROKER": "kafka://k",
		"WAQUEUE_LISTEN": "nohostport", "WAQUEUE_LOG_LEVEL": "loud", "WAQUEUE_EVENTSTORE": "http://esdb",
		"WAQUEUE_WEBHOOK_ALLOW_CIDRS": "10.0.0.0/8,not-a-cidr", "WAQUEUE_METRICS_LISTEN": "nohostport", "WAQUEUE_METRICS_TENANT_TOP": "1000"}
	_, err := parse(t, nil, env)
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{"WAQUEUE_DB", "WAQUEUE_TRANSPORT", "WAQUEUE_BROKER", "WAQUEUE_LISTEN", "WAQUEUE_LOG_LEVEL", "WAQUEUE_EVENTSTORE", "not-a-cidr",
		"WAQUEUE_METRICS_LISTEN", "WAQUEUE_METRICS_TENANT_TOP"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestEventStoreNeedsPostgresReadModels(t *testing.T) {
	_, err := parse(t, []string{"--eventstore", "esdb://localhost:2113?tls=false"}, nil)
	if err == nil || !strings.Contains(err.Error(), "postgres") {
		t.Fatalf("esdb with SQLite read models: err = %v, want a postgres requirement", err)
	}
	if _, err := parse(t, []string{"--eventstore", "kurrentdb://localhost:2113", "--db", "postgres://u@h/d"}, nil); err != nil {
		t.Fatalf("kurrentdb with postgres read models refused: %v", err)
	}
}

func TestBadBooleanInEnvironment(t *testing.T) {
	_, err := parse(t, nil, map[string]string{"WAQUEUE_NO_PACING": "perhaps"})
	if err == nil || !strings.Contains(err.Error(), "WAQUEUE_NO_PACING") {
		t.Fatalf("err = %v, want WAQUEUE_NO_PACING named", err)
	}
}

func TestWebhookEgressConfiguration(t *testing.T) {
	c, err := parse(t, []string{"--webhook-allow-cidrs", "10.20.0.0/16, fd00:1::/64"}, map[string]string{"WAQUEUE_WEBHOOK_ALLOW_PRIVATE": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.WebhookAllowPrivate || len(c.WebhookAllowPrefixes) != 2 || c.WebhookAllowPrefixes[0].String() != "10.20.0.0/16" ||
		c.WebhookAllowPrefixes[1].String() != "fd00:1::/64" {
		t.Errorf("webhook egress: private %v, prefixes %v", c.WebhookAllowPrivate, c.WebhookAllowPrefixes)
	}
	c, err = parse(t, nil, map[string]string{"WAQUEUE_WEBHOOK_ALLOW_CIDRS": "192.168.7.9/24"})
	if err != nil || len(c.WebhookAllowPrefixes) != 1 || c.WebhookAllowPrefixes[0].String() != "192.168.7.0/24" {
		t.Errorf("env CIDR: %v, %v (want it masked to 192.168.7.0/24)", c.WebhookAllowPrefixes, err)
	}
}

func TestMetricsListenerConfiguration(t *testing.T) {
	c, err := parse(t, []string{"--metrics-listen", "0.0.0.0:9100"}, map[string]string{"WAQUEUE_METRICS_TENANT_TOP": "20"})
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen != "0.0.0.0:9100" || c.MetricsTenantTop != 20 || !c.MetricsExposed() {
		t.Errorf("metrics: %q top %d exposed %v", c.MetricsListen, c.MetricsTenantTop, c.MetricsExposed())
	}
	c, err = parse(t, []string{"--metrics-listen", "0.0.0.0:9100"}, map[string]string{"WAQUEUE_METRICS_TOKEN": "t0ken"})
	if err != nil || c.MetricsToken != "t0ken" || c.MetricsExposed() {
		t.Errorf("with a token: %+v, %v", c, err)
	}
	if c, err = parse(t, []string{"--metrics-listen", ""}, nil); err != nil || c.MetricsListen != "" || c.MetricsExposed() {
		t.Errorf("metrics off: %q, %v", c.MetricsListen, err)
	}
	if _, err := parse(t, []string{"--listen", "127.0.0.1:8080", "--metrics-listen", "127.0.0.1:8080"}, nil); err == nil ||
		!strings.Contains(err.Error(), "WAQUEUE_METRICS_LISTEN") {
		t.Errorf("metrics on the API's address: %v, want refused", err)
	}
}

func TestLeaseSettings(t *testing.T) {
	c, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "" || c.LeaseTTL != 6*time.Second || c.LeaseRenew != 2*time.Second {
		t.Errorf("lease defaults: node %q, TTL %s, renew %s; want empty (generated), 6s, 2s", c.NodeID, c.LeaseTTL, c.LeaseRenew)
	}
	c, err = parse(t, []string{"--lease-ttl", "3s"}, map[string]string{"WAQUEUE_NODE_ID": "node-a", "WAQUEUE_LEASE_RENEW": "500ms"})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "node-a" || c.LeaseTTL != 3*time.Second || c.LeaseRenew != 500*time.Millisecond {
		t.Errorf("lease settings: node %q, TTL %s, renew %s", c.NodeID, c.LeaseTTL, c.LeaseRenew)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--lease-ttl", "6s", "--lease-renew", "3s"}, "WAQUEUE_LEASE_RENEW"}, // not below TTL/2
		{[]string{"--lease-ttl", "6s", "--lease-renew", "-1s"}, "WAQUEUE_LEASE_RENEW"},
		{[]string{"--lease-ttl", "10ms"}, "WAQUEUE_LEASE_TTL"},
		{[]string{"--lease-ttl", "0s"}, "WAQUEUE_LEASE_TTL"},
		{[]string{"--node-id", "a b"}, "WAQUEUE_NODE_ID"},
		{[]string{"--sim-latency", "-1s"}, "WAQUEUE_SIM_LATENCY"},
	} {
		if _, err := parse(t, bad.args, nil); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: err = %v, want %s named", bad.args, err, bad.want)
		}
	}
}
