package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
)

// Defaults of the client flags.
const (
	defaultServer  = "http://127.0.0.1:8080"
	defaultDataDir = ".data"
)

// clientCommands are the subcommands that talk to a running server over the API, plus
// `projections`, which works on the database of a stopped server.
func clientCommands() []*cobra.Command {
	cf := &clientFlags{}
	groups := []*cobra.Command{
		newKeysCmd(cf), newTenantsCmd(cf), newConnectionsCmd(cf), newQueueCmd(cf), newBroadcastCmd(cf), newSendCmd(cf), newAuditCmd(cf),
	}
	for _, g := range groups {
		cf.bind(g)
	}
	return append(groups, newProjectionsCmd())
}

// clientFlags are the flags every API command takes. Each value comes from its flag, else its
// environment variable, else its default.
type clientFlags struct {
	server, key, dataDir, session string
	json                          bool
}

// bind adds the client flags to cmd and its subcommands.
func (cf *clientFlags) bind(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&cf.server, "server", defaultServer, "base URL of the waqueue server ($WAQUEUE_SERVER)")
	f.StringVar(&cf.key, "key", "", "API key ($WAQUEUE_KEY; default: the contents of DATA_DIR/admin.key)")
	f.StringVar(&cf.dataDir, "data-dir", defaultDataDir, "data directory holding admin.key, the key used when --key is not set ($WAQUEUE_DATA_DIR)")
	f.StringVar(&cf.session, "session", "", "file keeping the position of this client's last write, sent with every request so reads show it ($WAQUEUE_SESSION; default: one per server in the user cache directory; \"-\" for none)")
}

// addJSON adds --json (print the server's JSON answer as is) to a list or show command.
func (cf *clientFlags) addJSON(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().BoolVar(&cf.json, "json", false, "print the server's JSON answer instead of a table")
	return cmd
}

// fromEnv returns the value of flag name of cmd: the flag when set, else env when set, else
// the flag's default in cur.
func fromEnv(cmd *cobra.Command, name, env, cur string) string {
	if cmd.Flags().Changed(name) {
		return cur
	}
	if v, ok := os.LookupEnv(env); ok && v != "" {
		return v
	}
	return cur
}

// client builds the API client of cmd's flags.
func (cf *clientFlags) client(cmd *cobra.Command) (*client.Client, error) {
	server := fromEnv(cmd, "server", "WAQUEUE_SERVER", cf.server)
	key := fromEnv(cmd, "key", "WAQUEUE_KEY", cf.key)
	if key == "" {
		dir := fromEnv(cmd, "data-dir", "WAQUEUE_DATA_DIR", cf.dataDir)
		b, err := os.ReadFile(filepath.Join(dir, "admin.key"))
		switch {
		case err == nil:
			key = strings.TrimSpace(string(b))
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("no API key: set --key or WAQUEUE_KEY (or run where %s exists)", filepath.Join(dir, "admin.key"))
		default:
			return nil, fmt.Errorf("read the admin key: %w", err)
		}
	}
	c, err := client.New(server, key, nil)
	if err != nil {
		return nil, err
	}
	cf.resumeSession(c, fromEnv(cmd, "session", "WAQUEUE_SESSION", cf.session), server)
	return c, nil
}

// resumeSession gives c the position of the last write made through this server from the
// session file (read your writes across runs: "waqueue send" then "waqueue queue show" shows
// the message) and keeps the file current. Without a usable file the client still reads its own
// writes within the run. A position from a reset server only makes a read wait its bound.
func (cf *clientFlags) resumeSession(c *client.Client, path, server string) {
	if path == "-" {
		return
	}
	if path == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(strings.TrimRight(server, "/")))
		path = filepath.Join(dir, "waqueue", fmt.Sprintf("session-%016x", h.Sum64()))
	}
	b, _ := os.ReadFile(path)
	c.SetMinPosition(strings.TrimSpace(string(b)), func(pos string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return
		}
		tmp := path + ".tmp"
		if os.WriteFile(tmp, []byte(pos+"\n"), 0o600) == nil {
			_ = os.Rename(tmp, path)
		}
	})
}

// printJSON writes the raw answer b, indented, to w.
func printJSON(w io.Writer, b json.RawMessage) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under header, aligned in columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// when formats t for a table ("-" when zero).
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// dash returns s, or "-" when empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
