package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
	"github.com/waqueue/waqueue/domain/auditchain"
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

	var since string
	var publicKeys []string
	verify := &cobra.Command{
		Use:   "verify [--since CHECKPOINT --public-key KEY]",
		Short: "Recompute the audit hash chain; exit status 1 when it is broken",
		Long: `Without --since, the server recomputes the tenant's hash chain: it detects an entry altered,
removed or inserted, not a chain recomputed after an edit, nor a cut tail.

With --since, this command reads every entry and every stored checkpoint through the API and
verifies them here, anchored at CHECKPOINT (one you kept outside the server: a
waqueue.audit.checkpoint.v1 webhook body, or an item of GET /v1/audit/checkpoints), whose
signature must verify with --public-key (the key the server prints at start). It detects, since
that checkpoint: edited or deleted entries, a recomputed chain, a cut tail, and forged or
altered checkpoints. CHECKPOINT is its JSON, a file holding it, "-" for standard input, or its
fields as tenant_id=…,seq=…,head_hash=…,at=…,key_id=…,signature=….`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			if since != "" {
				return verifySince(c, cl, cf.json, since, publicKeys)
			}
			if len(publicKeys) > 0 {
				return errors.New("audit verify: --public-key needs --since")
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
	vf := verify.Flags()
	vf.StringVar(&since, "since", "", "checkpoint to verify from (JSON, file, - for stdin, or key=value fields)")
	vf.StringArrayVar(&publicKeys, "public-key", nil, "trusted Ed25519 public key of the signer: base64 or a PEM file (repeat for a rotated key)")

	checkpoints := &cobra.Command{
		Use:   "checkpoints [--limit N]",
		Short: "List the tenant's signed audit checkpoints, newest first, one JSON object a line",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			page, err := cl.AuditCheckpoints(c.Context(), "", checkpointLimit)
			if err != nil {
				return err
			}
			for _, raw := range page.Checkpoints {
				var buf bytes.Buffer
				if err := json.Compact(&buf, raw); err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), buf.String())
			}
			return nil
		},
	}
	checkpoints.Flags().IntVar(&checkpointLimit, "limit", 1, "how many (the newest first)")
	cmd.AddCommand(export, cf.addJSON(verify), checkpoints)
	return cmd
}

var checkpointLimit int

// verifySince verifies the tenant's chain here, from the entries and checkpoints the API
// returns, anchored at the checkpoint arg, trusting only the keys given.
func verifySince(c *cobra.Command, cl *client.Client, asJSON bool, arg string, keyArgs []string) error {
	since, err := parseCheckpointArg(arg, c.InOrStdin())
	if err != nil {
		return fmt.Errorf("audit verify --since: %w", err)
	}
	if len(keyArgs) == 0 {
		return errors.New("audit verify --since needs --public-key: the server's audit public key (printed at start), never one read from the server now")
	}
	var keys []ed25519.PublicKey
	for _, k := range keyArgs {
		if b, err := os.ReadFile(k); err == nil {
			k = string(b)
		}
		pub, err := auditchain.ParsePublicKey(k)
		if err != nil {
			return fmt.Errorf("audit verify --public-key: %w", err)
		}
		keys = append(keys, pub)
	}
	v, err := auditchain.NewVerifier(since, keys...)
	if err != nil {
		return fmt.Errorf("audit verify: %w (forged, altered, or signed by another key)", err)
	}
	ctx := c.Context()
	for raw, err := range cl.Checkpoints(ctx, 1000) {
		if err != nil {
			return err
		}
		var cp auditchain.Checkpoint
		if err := json.Unmarshal(raw, &cp); err != nil {
			return fmt.Errorf("audit verify: checkpoint from the server: %w", err)
		}
		if cp.TenantID != since.TenantID {
			return fmt.Errorf("audit verify: the checkpoint is of tenant %q, this key reads tenant %q", since.TenantID, cp.TenantID)
		}
		v.Stored(cp)
	}
	for e, err := range cl.AuditEntries(ctx, client.AuditFilter{}, auditPageSize) {
		if err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		v.Entry(auditchain.Link{Tenant: since.TenantID, Seq: e.Seq, EventID: e.EventID, Stream: e.Stream, Connection: e.ConnectionID,
			Type: e.EventType, Actor: e.Actor, Reason: e.Reason, AtUS: e.At.UnixMicro(), Details: string(e.Details),
			PrevHash: e.PrevHash}, e.Hash)
	}
	rep := v.Finish()
	out := c.OutOrStdout()
	if asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(out, string(b))
	} else if rep.OK {
		fmt.Fprintf(out, "audit chain intact since checkpoint %d: %d entries checked, %d signed heads matched, head %d\n",
			since.Seq, rep.Checked, rep.CheckpointsChecked, rep.Head)
		fmt.Fprintf(out, "newest verified checkpoint: seq %d signed %s by %s; %d entries after it are protected by the hash chain only\n",
			rep.Latest.Seq, rep.Latest.At.Format(time.RFC3339), rep.Latest.KeyID, rep.Uncovered)
	}
	if !rep.OK {
		return fmt.Errorf("audit chain tampered (%s at seq %d): %s", rep.Problem.Kind, rep.Problem.Seq, rep.Problem.Detail)
	}
	return nil
}

// parseCheckpointArg reads a checkpoint given as JSON, a file, "-" (standard input) or its
// fields ("tenant_id=…,seq=…,…").
func parseCheckpointArg(arg string, stdin io.Reader) (auditchain.Checkpoint, error) {
	arg = strings.TrimSpace(arg)
	var b []byte
	switch {
	case arg == "-":
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, 1<<20)); err != nil {
			return auditchain.Checkpoint{}, err
		}
	case strings.HasPrefix(arg, "{"):
		b = []byte(arg)
	case strings.Contains(arg, "seq="):
		fields := map[string]any{}
		for _, kv := range strings.Split(arg, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				return auditchain.Checkpoint{}, fmt.Errorf("field %q: want key=value", kv)
			}
			fields[k] = val
			if k == "seq" {
				n, err := strconv.ParseUint(val, 10, 64)
				if err != nil {
					return auditchain.Checkpoint{}, fmt.Errorf("seq %q: %w", val, err)
				}
				fields[k] = n
			}
		}
		var err error
		if b, err = json.Marshal(fields); err != nil {
			return auditchain.Checkpoint{}, err
		}
	default:
		var err error
		if b, err = os.ReadFile(arg); err != nil {
			return auditchain.Checkpoint{}, err
		}
	}
	return auditchain.ParseCheckpoint(b)
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
