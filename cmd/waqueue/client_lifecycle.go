package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
)

// lifecycleCmds are the connection lifecycle commands of `waqueue connections`: logout and
// retire.
func lifecycleCmds(cf *clientFlags) []*cobra.Command {
	logout := &cobra.Command{
		Use:   "logout CONN",
		Short: "Log the connection's WhatsApp session out and hold its queue (pair it again to send)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			res, err := cl.Logout(c.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json {
				return printJSONValue(c.OutOrStdout(), res)
			}
			remote := "WhatsApp confirmed the logout"
			if !res.RemoteLogout {
				remote = "the session was not connected: only the stored session was deleted"
			}
			fmt.Fprintf(c.OutOrStdout(), "logged out connection %s (%s): %s; link %s, queue %s\n", res.ID, res.Phone, remote, res.LinkStatus, res.QueueStatus)
			return nil
		},
	}

	var o retireOptions
	retire := &cobra.Command{
		Use:   "retire CONN --reason R [--clear-first] [--yes]",
		Short: "Retire a connection for good, after confirming with its phone number",
		Long: `Retire ends a connection for good: it is logged out and never sends again; its history
stays. It asks you to type the connection's phone number to confirm (or takes --yes). A queue
with messages pending or in flight is refused (queue_not_empty) unless --clear-first: then the
queue is cleared first and the connection retires when the clear completes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			res, err := retireConnection(c.Context(), cl, args[0], o, c.InOrStdin(), c.ErrOrStderr())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSONValue(c.OutOrStdout(), res)
			}
			if res.ClearID != "" {
				fmt.Fprintf(c.OutOrStdout(), "connection %s is %s: clear %s runs first, then it retires\n", args[0], res.Status, res.ClearID)
				return nil
			}
			fmt.Fprintf(c.OutOrStdout(), "retired connection %s (%s)\n", res.ID, res.Phone)
			return nil
		},
	}
	f := retire.Flags()
	f.StringVar(&o.reason, "reason", "", "why the connection is retired (recorded in the audit trail; required)")
	f.BoolVar(&o.clearFirst, "clear-first", false, "clear the queue first and retire when the clear completes")
	f.BoolVar(&o.yes, "yes", false, "do not ask: confirm with the connection's phone number")
	f.StringVar(&o.idempotencyKey, "idempotency-key", "", "makes a retried --clear-first request answer the same clear (default: a new one per run)")
	_ = retire.MarkFlagRequired("reason")
	return []*cobra.Command{cf.addJSON(logout), cf.addJSON(retire)}
}

// errRetireAborted: the typed confirmation did not match.
var errRetireAborted = errors.New("retire aborted: the confirmation did not match the connection's phone number; nothing was changed")

// printJSONValue writes v, indented, to w (answers the client decodes into a value).
func printJSONValue(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type retireOptions struct {
	reason, idempotencyKey string
	clearFirst, yes        bool
}

// retireConnection confirms with the connection's phone number (read from in unless o.yes),
// then retires it.
func retireConnection(ctx context.Context, cl *client.Client, conn string, o retireOptions, in io.Reader, prompt io.Writer) (client.Retired, error) {
	card, err := cl.Connection(ctx, conn)
	if err != nil {
		return client.Retired{}, err
	}
	confirm := card.Phone
	if !o.yes {
		fmt.Fprintf(prompt, "Connection %s (%s): %d pending, %d in flight. Retiring is final.\nType the connection's phone number (%s) to confirm: ",
			card.ID, card.Phone, card.Pending, card.InFlight, card.Phone)
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return client.Retired{}, fmt.Errorf("read the confirmation: %w", err)
		}
		if strings.TrimSpace(line) != card.Phone {
			return client.Retired{}, errRetireAborted
		}
		confirm = strings.TrimSpace(line)
	}
	key := o.idempotencyKey
	if key == "" && o.clearFirst {
		key = "cli-retire-" + uuid.NewString()
	}
	return cl.Retire(ctx, conn, client.RetireRequest{Reason: o.reason, Confirm: confirm, ClearFirst: o.clearFirst}, key)
}
