package bench

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/httpapi"
	"github.com/waqueue/waqueue/adapters/server"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// ImportConfig configures the import benchmark.
type ImportConfig struct {
	// Recipients is the number of phone numbers of the CSV broadcast measured. Zero means
	// 100,000 (the API's limit per broadcast).
	Recipients int
}

// Import measures, per engine, a broadcast imported over HTTP: one CSV upload of
// cfg.Recipients numbers (POST /v1/connections/{id}/broadcasts, Content-Type text/csv)
// through a real listener against a node with every background process running (dispatcher
// off, so the messages stay queued), from the request until the queue read model shows every
// message pending. The baseline, in the same run and the node's own database, is the same
// rows (the queue read model's columns) written the fastest way the engine has: COPY on
// PostgreSQL, multi-row INSERTs in one transaction on SQLite. It prints
//
//	BENCH import/<engine>/recipients=<n> msgs_per_s=… answered_s=… pending_s=… settled_s=… baseline=copy baseline_per_s=… ratio=… rss_mib=…
//
// settled_s is when every read model and the integration publisher had the broadcast (not
// part of the ratio); the baseline runs after it, on a database no longer busy with it.
func Import(ctx context.Context, env *Env, cfg ImportConfig, w io.Writer) error {
	if cfg.Recipients <= 0 {
		cfg.Recipients = 100_000
	}
	if cfg.Recipients > connection.MaxRecipients {
		return fmt.Errorf("bench: import: %d recipients, the API takes at most %d per broadcast", cfg.Recipients, connection.MaxRecipients)
	}
	for _, engine := range env.Adapters {
		if err := importOnce(ctx, env, engine, cfg, w); err != nil {
			return fmt.Errorf("bench: import/%s: %w", engine, err)
		}
	}
	return nil
}

func importOnce(ctx context.Context, env *Env, engine string, cfg ImportConfig, w io.Writer) (err error) {
	node, base, key, stop, err := env.apiNode(ctx, engine, func(o *server.Options) {
		o.NoDispatcher = true
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stop(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	client := &http.Client{Timeout: 30 * time.Minute}
	defer client.CloseIdleConnections()

	conn := "import-" + uuid.NewString()[:8]
	if _, err := node.Handlers.RegisterConnection.Handle(operator(ctx, node), commands.RegisterConnection{ConnectionID: conn, Phone: "+4915200000001"}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	const text = "Hello, this is the import benchmark's broadcast."
	var position eventstore.Position // of the last upload's answer
	upload := func(key2 string, numbers []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			base+"/v1/connections/"+conn+"/broadcasts?text="+url.QueryEscape(text), bytes.NewReader(numbers))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+key.Secret)
		req.Header.Set("Content-Type", "text/csv")
		req.Header.Set("Idempotency-Key", key2)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("broadcast answered %d: %s", resp.StatusCode, b)
		}
		pos, ok := httpapi.ParsePosition(resp.Header.Get(httpapi.HeaderPosition))
		if !ok {
			return fmt.Errorf("broadcast answered without a %s header", httpapi.HeaderPosition)
		}
		position = pos
		return nil
	}
	// Warm up (untimed): a small broadcast through the same path.
	const warm = 10
	if err := upload("bench-import-warm", importCSV(9_000_000, warm)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := waitPending(ctx, node, conn, warm); err != nil {
		return err
	}
	csv := importCSV(0, cfg.Recipients)
	start := time.Now()
	if err := upload("bench-import", csv); err != nil {
		return err
	}
	answered := time.Since(start)
	if err := waitPending(ctx, node, conn, warm+cfg.Recipients); err != nil {
		return err
	}
	pending := time.Since(start)
	// Every other read model (message status, cards, analytics, audit) and the integration
	// publisher, too: the broadcast's full cost. The baseline then runs on a database no
	// longer busy with it.
	if err := node.Runner.WaitReached(ctx, projectionNames(node), position); err != nil {
		return fmt.Errorf("read models settling: %w", err)
	}
	settled := time.Since(start)

	baseRate, err := copyBaseline(ctx, node, cfg.Recipients, text)
	if err != nil {
		return fmt.Errorf("copy baseline: %w", err)
	}
	rate := perSecond(cfg.Recipients, pending)
	return emit(w, fmt.Sprintf("import/%s/recipients=%d", engine, cfg.Recipients),
		"msgs_per_s", rate, "answered_s", answered.Seconds(), "pending_s", pending.Seconds(), "settled_s", settled.Seconds(),
		"baseline", "copy", "baseline_per_s", baseRate, "ratio", ratio(rate, baseRate))
}

// projectionNames names every projection of node's runner.
func projectionNames(node *server.Node) []string {
	var names []string
	for _, st := range node.Runner.Statuses() {
		names = append(names, st.Name)
	}
	return names
}

// importCSV returns a CSV upload of n distinct German mobile numbers from +49151<first>.
func importCSV(first, n int) []byte {
	var b bytes.Buffer
	b.Grow(16 * (n + 1))
	b.WriteString("phone\n")
	for i := range n {
		fmt.Fprintf(&b, "+49151%08d\n", first+i)
	}
	return b.Bytes()
}

// waitPending polls the queue read model until connection conn shows want pending messages
// (a benchmark, not a test: polling every few milliseconds is the measurement's resolution).
func waitPending(ctx context.Context, node *server.Node, conn string, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	for {
		s, err := node.Queue.Summary(ctx, node.DB, node.Tenant, conn)
		if err != nil && !errors.Is(err, projections.ErrNotFound) {
			return fmt.Errorf("queue summary: %w", err)
		}
		if err == nil && s.Pending >= uint64(want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue of %s: %d pending, want %d: %w", conn, s.Pending, want, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// importPlainTable has the queue read model's message columns and key.
const importPlainTable = `CREATE TABLE bench_import (
    conn_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    message_id       TEXT NOT NULL,
    broadcast_id     TEXT NOT NULL DEFAULT '',
    recipient        TEXT NOT NULL,
    text             TEXT NOT NULL DEFAULT '',
    expires_at_us    BIGINT NOT NULL DEFAULT 0,
    queued_at_us     BIGINT NOT NULL,
    dispatched_at_us BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conn_id, seq)
)`

var importColumns = []string{"conn_id", "seq", "message_id", "broadcast_id", "recipient", "text", "expires_at_us", "queued_at_us", "dispatched_at_us"}

// copyBaseline writes n queue rows into a plain table of the node's database the fastest way
// the engine has (COPY; on SQLite multi-row INSERTs in one transaction) and returns the rate.
func copyBaseline(ctx context.Context, node *server.Node, n int, text string) (float64, error) {
	db := node.DB
	if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS bench_import`); err != nil {
		return 0, err
	}
	if _, err := db.ExecContext(ctx, importPlainTable); err != nil {
		return 0, err
	}
	defer db.ExecContext(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bench_import`)
	bid := uuid.NewString()
	now := time.Now().UnixMicro()
	row := func(i int) []any {
		return []any{"tenant/import-plain", int64(i + 1), uuid.NewString(), bid, fmt.Sprintf("+49151%08d", i), text, int64(0), now, int64(0)}
	}
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = row(i)
	}
	start := time.Now()
	if db.Dialect == projections.Postgres {
		c, err := node.SQL.Conn(ctx)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		err = c.Raw(func(dc any) error {
			pc := dc.(*stdlib.Conn).Conn()
			_, err := pc.CopyFrom(ctx, pgx.Identifier{"bench_import"}, importColumns, pgx.CopyFromRows(rows))
			return err
		})
		if err != nil {
			return 0, err
		}
		return perSecond(n, time.Since(start)), nil
	}
	tx, err := node.SQL.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if err := insertRows(ctx, tx, rows); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return perSecond(n, time.Since(start)), nil
}

// insertRows inserts rows into bench_import with multi-row INSERTs of up to 100 rows.
func insertRows(ctx context.Context, tx *sql.Tx, rows [][]any) error {
	const per = 100
	for len(rows) > 0 {
		k := min(per, len(rows))
		var sb strings.Builder
		sb.WriteString("INSERT INTO bench_import (" + strings.Join(importColumns, ", ") + ") VALUES ")
		args := make([]any, 0, k*len(importColumns))
		for i, r := range rows[:k] {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(?" + strings.Repeat(",?", len(r)-1) + ")")
			args = append(args, r...)
		}
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return err
		}
		rows = rows[k:]
	}
	return nil
}
