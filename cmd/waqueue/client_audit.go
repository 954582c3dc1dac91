package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/cmd/waqueue/internal/client"
)

func newAuditCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Export and verify the tenant's audit trail (auditor, admin)"}
	var (
		format, outPath string
		f               client.AuditFilter
	)
	export := &cobra.Command{
		Use:   "export [--format csv|jsonl] [-o FILE]",
		Short: "Export every matching audit entry, oldest first, following the API's cursor pages",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if format != "csv" && format != "jsonl" {
				return fmt.Errorf("audit export: --format %q: want csv or jsonl", format)
			}
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			var w io.Writer = c.OutOrStdout()
			var file *os.File
			if outPath != "" && outPath != "-" {
				if file, err = os.Create(outPath); err != nil {
					return err
				}
				defer file.Close()
				w = file
			}
			bw := bufio.NewWriter(w)
			n, err := exportAudit(c, cl, f, format, bw)
			if err == nil {
				err = bw.Flush()
			}
			if err == nil && file != nil {
				err = file.Close()
			}
			if err != nil {
				return err
			}
			if file != nil {
				fmt.Fprintf(c.ErrOrStderr(), "exported %d entries to %s\n", n, outPath)
			}
			return nil
		},
	}
	ef := export.Flags()
	ef.StringVar(&format, "format", "csv", "csv or jsonl")
	ef.StringVar(&f.Connection, "connection", "", "only entries of this connection")
	ef.StringVar(&f.Type, "type", "", "only entries of this event type, e.g. ClearQueueRequested")
	ef.StringVar(&f.Actor, "actor", "", "only entries of this actor")
	ef.StringVar(&f.From, "from", "", "first time or day (RFC 3339 or YYYY-MM-DD, inclusive)")
	ef.StringVar(&f.To, "to", "", "end time or day (exclusive)")
	ef.StringVarP(&outPath, "output", "o", "", "write to FILE instead of standard output")

	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the audit hash chain; exit status 1 when it is broken",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			v, raw, err := cl.VerifyAudit(c.Context())
			if err != nil {
				return err
			}
			if cf.json {
				if err := printJSON(c.OutOrStdout(), raw); err != nil {
					return err
				}
			} else if v.OK {
				fmt.Fprintf(c.OutOrStdout(), "audit chain intact: %d entries checked, head %s\n", v.Checked, dash(v.Head))
			}
			if !v.OK {
				return fmt.Errorf("audit chain broken at seq %d after %d entries checked: %s", v.FirstBadSeq, v.Checked, v.Problem)
			}
			return nil
		},
	}
	cmd.AddCommand(export, cf.addJSON(verify))
	return cmd
}

// auditPageSize is how many entries an export reads per request (the API's maximum).
var auditPageSize = 1000

// auditCSVHeader are the columns of a CSV export, those of the server's own export.
var auditCSVHeader = []string{"seq", "at", "event_type", "connection_id", "actor", "reason", "stream", "event_id", "details", "prev_hash", "hash"}

// exportAudit writes every entry matching f to w, page by page, and returns how many.
func exportAudit(c *cobra.Command, cl *client.Client, f client.AuditFilter, format string, w io.Writer) (int, error) {
	cw := csv.NewWriter(w)
	if format == "csv" {
		if err := cw.Write(auditCSVHeader); err != nil {
			return 0, err
		}
	}
	n, cursor := 0, ""
	for {
		page, err := cl.AuditPage(c.Context(), f, cursor, auditPageSize)
		if err != nil {
			return n, err
		}
		for _, raw := range page.Entries {
			if format == "jsonl" {
				var buf bytes.Buffer
				if err := json.Compact(&buf, raw); err != nil {
					return n, fmt.Errorf("audit export: entry %d: %w", n, err)
				}
				buf.WriteByte('\n')
				if _, err := w.Write(buf.Bytes()); err != nil {
					return n, err
				}
			} else {
				var e client.AuditEntry
				if err := json.Unmarshal(raw, &e); err != nil {
					return n, fmt.Errorf("audit export: entry %d: %w", n, err)
				}
				if err := cw.Write([]string{strconv.FormatUint(e.Seq, 10), e.At.Format(time.RFC3339Nano), e.EventType, e.ConnectionID,
					e.Actor, e.Reason, e.Stream, e.EventID, string(e.Details), e.PrevHash, e.Hash}); err != nil {
					return n, err
				}
			}
			n++
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return n, err
		}
		if page.NextCursor == "" || len(page.Entries) == 0 {
			return n, nil
		}
		cursor = page.NextCursor
	}
}
