package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"
)

func newBroadcastCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "broadcast", Short: "Import and follow broadcasts"}
	var csvPath, text, idem string
	imp := &cobra.Command{
		Use:   "import CONN --csv FILE --text T",
		Short: "Queue a broadcast to the numbers of a CSV file (one a line, first column, optional header)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			f, err := os.Open(csvPath)
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			bar := &progressReader{r: f, total: fi.Size(), w: progressOut(c.ErrOrStderr()), label: "uploading " + csvPath}
			acc, raw, err := cl.ImportBroadcast(c.Context(), args[0], text, bar, fi.Size(), idem)
			bar.finish()
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			fmt.Fprintf(c.OutOrStdout(), "broadcast %s queued on %s: %d recipients\n", acc.BroadcastID, acc.ConnectionID, acc.Count)
			return nil
		},
	}
	f := imp.Flags()
	f.StringVar(&csvPath, "csv", "", "the CSV file of phone numbers (required)")
	f.StringVar(&text, "text", "", "the message text (required)")
	f.StringVar(&idem, "idempotency-key", "", "makes a retried upload queue once")
	_ = imp.MarkFlagRequired("csv")
	_ = imp.MarkFlagRequired("text")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a broadcast's progress (counts by status)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			p, raw, err := cl.Broadcast(c.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			fmt.Fprintf(c.OutOrStdout(), "broadcast %s on %s: %d recipients\n", p.BroadcastID, p.ConnectionID, p.Count)
			cols := []string{"QUEUED", "DISPATCHED", "SENT", "DELIVERED", "READ", "FAILED", "PURGED", "EXPIRED", "UNKNOWN"}
			vals := []int{p.Queued, p.Dispatched, p.Sent, p.Delivered, p.Read, p.Failed, p.Purged, p.Expired, p.Unknown}
			row := make([]string, len(vals))
			for i, v := range vals {
				row[i] = strconv.Itoa(v)
			}
			return table(c.OutOrStdout(), cols, [][]string{row})
		},
	}
	cmd.AddCommand(cf.addJSON(imp), cf.addJSON(show))
	return cmd
}

func newSendCmd(cf *clientFlags) *cobra.Command {
	var to, text, idem string
	cmd := &cobra.Command{
		Use:   "send CONN --to PHONE --text T",
		Short: "Queue one message",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			acc, raw, err := cl.Send(c.Context(), args[0], to, text, idem)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			fmt.Fprintf(c.OutOrStdout(), "message %s queued on %s\n", acc.MessageID, acc.ConnectionID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "recipient phone number (required)")
	f.StringVar(&text, "text", "", "message text (required)")
	f.StringVar(&idem, "idempotency-key", "", "makes a retried send queue once")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagRequired("text")
	return cf.addJSON(cmd)
}

// terminal reports whether w is a terminal (a character device). Progress bars and spinners are
// drawn only there: piped or redirected output (a log, a CI job) gets no carriage returns.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressOut returns w for progress drawing if it is a terminal, nil otherwise (draw nothing).
func progressOut(w io.Writer) io.Writer {
	if terminal(w) {
		return w
	}
	return nil
}

// progressReader counts the bytes read through it and draws a progress bar of them on w (none
// when w is nil). It is read by the HTTP transport's goroutine while finish may run on the
// caller's, hence mu.
type progressReader struct {
	r     io.Reader
	total int64
	w     io.Writer
	label string

	mu    sync.Mutex
	done  int64
	drawn int // percent last drawn, to redraw only on change
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += int64(n)
	p.draw(false)
	return n, err
}

// draw writes the bar when the percentage changed (or always when force). Callers hold mu.
func (p *progressReader) draw(force bool) {
	if p.w == nil {
		return
	}
	pct := 100
	if p.total > 0 {
		pct = int(p.done * 100 / p.total)
	}
	if pct == p.drawn && !force {
		return
	}
	p.drawn = pct
	const width = 30
	fill := min(pct*width/100, width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %d/%d bytes", p.label, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, p.done, p.total)
}

// finish draws the final state and ends the line.
func (p *progressReader) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		return
	}
	p.draw(true)
	fmt.Fprintln(p.w)
}
