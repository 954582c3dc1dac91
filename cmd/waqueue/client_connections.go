package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
)

func newConnectionsCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "connections", Short: "List, register, log out and retire connections (WhatsApp numbers)"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's connections with their link and queue status",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			cards, raw, err := cl.Connections(c.Context())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(cards))
			for _, k := range cards {
				rows = append(rows, []string{k.ID, k.Phone, k.LinkStatus, k.QueueStatus,
					strconv.FormatUint(k.Pending, 10), strconv.FormatUint(k.InFlight, 10), banExpiry(k.Ban)})
			}
			return table(c.OutOrStdout(), []string{"ID", "PHONE", "LINK", "QUEUE", "PENDING", "IN FLIGHT", "BAN EXPIRY"}, rows)
		},
	}
	var id, phone, onBan string
	register := &cobra.Command{
		Use:   "register --phone PHONE [--id ID]",
		Short: "Register a connection (pair it afterwards)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			card, raw, err := cl.RegisterConnection(c.Context(), id, phone, onBan)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			fmt.Fprintf(c.OutOrStdout(), "registered connection %s (%s, link %s, on ban: %s)\n", card.ID, card.Phone, card.LinkStatus, card.OnBan)
			return nil
		},
	}
	register.Flags().StringVar(&phone, "phone", "", "the WhatsApp number, E.164 (required)")
	register.Flags().StringVar(&id, "id", "", "connection id (default: generated)")
	register.Flags().StringVar(&onBan, "on-ban", "", "after a ban lifts: hold (default) or resume")
	_ = register.MarkFlagRequired("phone")
	cmd.AddCommand(cf.addJSON(list), cf.addJSON(register))
	cmd.AddCommand(lifecycleCmds(cf)...)
	return cmd
}

// banExpiry is the table cell of a ban: "-" without one, "permanent", or its expiry.
func banExpiry(b *client.Ban) string {
	switch {
	case b == nil:
		return "-"
	case b.ExpiresAt.IsZero():
		return b.Kind
	default:
		return when(b.ExpiresAt)
	}
}
