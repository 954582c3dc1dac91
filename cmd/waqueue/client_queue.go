package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
)

// errAborted is returned when the operator did not confirm a clear.
var errAborted = errors.New("clear aborted: the confirmation did not match the connection's phone number; nothing was cleared")

func newQueueCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "queue", Short: "Show, clear, hold and resume a connection's queue"}
	show := &cobra.Command{
		Use:   "show CONN",
		Short: "Show a connection's queue: status, pending, in flight, broadcasts",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			q, raw, err := cl.Queue(c.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "connection %s: queue %s, %d pending, %d in flight, last seq %d\n", q.ConnectionID, q.Status, q.Pending, q.InFlight, q.LastSeq)
			if q.ClearID != "" {
				fmt.Fprintf(out, "clearing: clear %s\n", q.ClearID)
			}
			if len(q.Broadcasts) == 0 {
				return nil
			}
			return broadcastTable(out, q.Broadcasts)
		},
	}

	var o clearOptions
	clear := &cobra.Command{
		Use:   "clear CONN --reason R [--broadcast ID] [--then keep|hold|resume] [--yes]",
		Short: "Clear a queue (or one broadcast's pending messages) after confirming with the phone number",
		Long: `Clear shows what would be purged, asks you to type the connection's phone number to
confirm (or takes --yes), requests the clear, waits for it to complete and prints its report.
Messages already in flight are not recalled; the report lists them.

--then says what the queue becomes after the clear: keep (default) leaves it as it was, so a
queue held by a ban stays held after the ban is lifted; resume reopens a held queue (refused
while the connection is banned or logged out); hold holds it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			return clearQueue(c.Context(), cl, args[0], o, c.InOrStdin(), c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	f := clear.Flags()
	f.StringVar(&o.reason, "reason", "", "why the queue is cleared (recorded in the audit trail; required)")
	f.StringVar(&o.broadcast, "broadcast", "", "clear only this broadcast's pending messages")
	f.StringVar(&o.then, "then", "", "what the queue becomes after the clear: keep (default), hold or resume")
	f.BoolVar(&o.yes, "yes", false, "do not ask: confirm with the connection's phone number")
	f.StringVar(&o.idempotencyKey, "idempotency-key", "", "makes a retried request clear once (default: a new one per run)")
	f.DurationVar(&o.wait, "wait", 2*time.Minute, "how long to wait for the report (the clear goes on if this runs out)")
	_ = clear.MarkFlagRequired("reason")

	var (
		cursor string
		limit  int
	)
	list := &cobra.Command{
		Use:   "clears CONN [--limit N] [--cursor C]",
		Short: "List a connection's clears, newest first: status, who, when, purged, in flight, then",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			p, raw, err := cl.Clears(c.Context(), args[0], cursor, limit)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(p.Clears))
			for _, r := range p.Clears {
				rows = append(rows, []string{r.ClearID, r.Status, when(r.RequestedAt), r.RequestedBy, strconv.FormatUint(r.PurgedCount, 10),
					strconv.Itoa(r.InFlightCount), r.Then, r.QueueAfter})
			}
			if err := table(c.OutOrStdout(), []string{"CLEAR", "STATUS", "REQUESTED", "BY", "PURGED", "IN FLIGHT", "THEN", "QUEUE AFTER"}, rows); err != nil {
				return err
			}
			if p.NextCursor != "" {
				fmt.Fprintf(c.OutOrStdout(), "more: --cursor %s\n", p.NextCursor)
			}
			return nil
		},
	}
	list.Flags().StringVar(&cursor, "cursor", "", "continue after a previous page (its \"more: --cursor\" value)")
	list.Flags().IntVar(&limit, "limit", 0, "clears per page (server default 50, at most 1000)")

	cmd.AddCommand(cf.addJSON(show), clear, cf.addJSON(list), holdResume(cf, true), holdResume(cf, false))
	return cmd
}

func holdResume(cf *clientFlags, hold bool) *cobra.Command {
	var note string
	use, short := "resume CONN", "Resume a held queue"
	if hold {
		use, short = "hold CONN", "Hold a queue: nothing is sent until it is resumed or cleared"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			do := cl.Resume
			if hold {
				do = cl.Hold
			}
			card, raw, err := do(c.Context(), args[0], note)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			fmt.Fprintf(c.OutOrStdout(), "connection %s: queue %s, %d pending\n", card.ID, card.QueueStatus, card.Pending)
			return nil
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "a note for the audit trail")
	return cf.addJSON(cmd)
}

type clearOptions struct {
	reason, broadcast, idempotencyKey, then string
	yes                                     bool
	wait                                    time.Duration
}

// clearQueue runs the clear dialogue: preview, confirmation, request, progress, report.
func clearQueue(ctx context.Context, cl *client.Client, conn string, o clearOptions, in io.Reader, out, progress io.Writer) error {
	p, err := cl.ClearPreview(ctx, conn)
	if err != nil {
		return err
	}
	printPreview(out, p, o.broadcast)
	// The API confirms a clear with the connection's phone number.
	confirm := p.Phone
	if !o.yes {
		fmt.Fprintf(progress, "Type the connection's phone number (%s) to confirm: ", p.Phone)
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the confirmation: %w", err)
		}
		if strings.TrimSpace(line) != p.Phone {
			return errAborted
		}
		confirm = strings.TrimSpace(line)
	}
	key := o.idempotencyKey
	if key == "" {
		key = "cli-clear-" + uuid.NewString()
	}
	acc, err := cl.Clear(ctx, conn, client.ClearRequest{Reason: o.reason, BroadcastID: o.broadcast, Confirm: confirm, Then: o.then}, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "clear %s requested; the queue is clearing\n", acc.ClearID)
	spinner := io.Discard // the spinner only on a terminal
	if terminal(progress) {
		spinner = progress
	}
	st, err := waitForClear(ctx, cl, conn, acc.ClearID, o.wait, spinner)
	if err != nil {
		return err
	}
	printReport(out, *st.Report)
	return nil
}

func printPreview(out io.Writer, p client.ClearPreview, broadcast string) {
	fmt.Fprintf(out, "connection %s (%s), queue %s\n", p.ConnectionID, p.Phone, p.QueueStatus)
	if broadcast != "" {
		var pending uint64
		for _, b := range p.Broadcasts {
			if b.BroadcastID == broadcast {
				pending = b.Pending
			}
		}
		fmt.Fprintf(out, "would purge %d pending messages of broadcast %s\n", pending, broadcast)
	} else {
		fmt.Fprintf(out, "would purge %d pending messages\n", p.Total)
		if len(p.Broadcasts) > 0 {
			_ = broadcastTable(out, p.Broadcasts)
		}
	}
	if p.InFlight > 0 {
		fmt.Fprintf(out, "%d messages are in flight and are not recalled\n", p.InFlight)
	}
}

func broadcastTable(out io.Writer, bs []client.BroadcastQueue) error {
	rows := make([][]string, 0, len(bs))
	for _, b := range bs {
		rows = append(rows, []string{b.BroadcastID, strconv.FormatUint(b.Pending, 10), strconv.FormatUint(b.Total, 10),
			fmt.Sprintf("%d-%d", b.FirstSeq, b.LastSeq)})
	}
	return table(out, []string{"BROADCAST", "PENDING", "TOTAL", "SEQ"}, rows)
}

// waitForClear polls the clear until it is done, showing a progress indicator on progress.
func waitForClear(ctx context.Context, cl *client.Client, conn, clearID string, wait time.Duration, progress io.Writer) (client.ClearStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	frames := `|/-\`
	for i := 0; ; i++ {
		st, _, err := cl.ClearStatus(ctx, conn, clearID)
		if err == nil && st.Done() && st.Report != nil {
			fmt.Fprintf(progress, "\r%-40s\r", "")
			return st, nil
		}
		if err != nil && ctx.Err() == nil {
			return st, err
		}
		fmt.Fprintf(progress, "\rclearing %c %s", frames[i%len(frames)], time.Since(start).Round(100*time.Millisecond))
		select {
		case <-ctx.Done():
			fmt.Fprintln(progress)
			return st, fmt.Errorf("clear %s not done after %s; see `waqueue queue show %s`: %w", clearID, wait, conn, ctx.Err())
		case <-tick.C:
		}
	}
}

func printReport(out io.Writer, r client.ClearReport) {
	fmt.Fprintf(out, "clear %s done\n", r.ClearID)
	fmt.Fprintf(out, "  purged:       %d messages\n", r.PurgedCount)
	fmt.Fprintf(out, "  in flight:    %d (not recalled)\n", r.InFlightCount)
	if r.NotSentCount > 0 {
		fmt.Fprintf(out, "  not sent:     %d (never handed to WhatsApp; failed not_sent)\n", r.NotSentCount)
	}
	fmt.Fprintf(out, "  requested by: %s at %s\n", r.RequestedBy, when(r.RequestedAt))
	fmt.Fprintf(out, "  reason:       %s\n", r.Reason)
	fmt.Fprintf(out, "  completed by: %s at %s\n", r.CompletedBy, when(r.CompletedAt))
	if r.QueueAfter != "" {
		fmt.Fprintf(out, "  then:         %s; the queue is %s\n", r.Then, r.QueueAfter)
	}
	if r.QueueAfter == "held" {
		fmt.Fprintln(out, "  nothing is sent until the queue is resumed (waqueue queue resume CONN)")
	}
}
