package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
)

func newTenantsCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Create, list, rename, suspend and resume tenants (platform operator)"}
	printTenant := func(c *cobra.Command, t client.Tenant) {
		fmt.Fprintf(c.OutOrStdout(), "tenant %s (%q): %s\n", t.ID, t.Name, t.Status)
	}

	var name string
	create := &cobra.Command{
		Use:   "create ID [--name NAME]",
		Short: "Create a tenant; then: waqueue keys create --tenant ID --role admin",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			t, raw, err := cl.CreateTenant(c.Context(), args[0], name)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			printTenant(c, t)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "display name (default: the id)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List every tenant",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			ts, raw, err := cl.Tenants(c.Context())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(ts))
			for _, t := range ts {
				limit := strconv.FormatFloat(t.EffectiveRateLimit.PerSecond, 'g', -1, 64) + "/s burst " + strconv.Itoa(t.EffectiveRateLimit.Burst)
				if t.EffectiveRateLimit.PerSecond == 0 {
					limit = "none"
				}
				if t.EffectiveRateLimit.Default {
					limit += " (default)"
				}
				rows = append(rows, []string{t.ID, t.Name, t.Status, dash(t.SuspendedReason), limit, when(t.CreatedAt)})
			}
			return table(c.OutOrStdout(), []string{"ID", "NAME", "STATUS", "SUSPENDED FOR", "RATE LIMIT", "CREATED"}, rows)
		},
	}

	rename := &cobra.Command{
		Use:   "rename ID NAME",
		Short: "Rename a tenant (the id never changes)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			t, raw, err := cl.ChangeTenant(c.Context(), args[0], &args[1], nil)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			printTenant(c, t)
			return nil
		},
	}

	var perSecond float64
	var burst int
	limit := &cobra.Command{
		Use:   "limit ID --per-second N --burst N",
		Short: "Set a tenant's API rate limit (0 and 0 restore the default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			t, raw, err := cl.ChangeTenant(c.Context(), args[0], nil, &client.RateLimit{PerSecond: perSecond, Burst: burst})
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			fmt.Fprintf(c.OutOrStdout(), "tenant %s: %g requests/s, burst %d (default %t)\n", t.ID,
				t.EffectiveRateLimit.PerSecond, t.EffectiveRateLimit.Burst, t.EffectiveRateLimit.Default)
			return nil
		},
	}
	limit.Flags().Float64Var(&perSecond, "per-second", 0, "requests a second refilled")
	limit.Flags().IntVar(&burst, "burst", 0, "bucket size")

	var reason string
	change := func(use, short string, resume bool) *cobra.Command {
		cc := &cobra.Command{
			Use:   use + " ID [--reason R]",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := cf.client(c)
				if err != nil {
					return err
				}
				call := cl.SuspendTenant
				if resume {
					call = cl.ResumeTenant
				}
				res, raw, err := call(c.Context(), args[0], reason)
				if err != nil {
					return err
				}
				if cf.json {
					return printJSON(c.OutOrStdout(), raw)
				}
				printTenant(c, res.Tenant)
				if resume {
					fmt.Fprintf(c.OutOrStdout(), "%d queue(s) resumed (queues held for another reason stay held)\n", res.QueuesResumed)
				} else {
					fmt.Fprintf(c.OutOrStdout(), "%d queue(s) held; nothing purged\n", res.QueuesHeld)
				}
				return nil
			},
		}
		cc.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
		return cc
	}
	cmd.AddCommand(create, list, rename, limit,
		change("suspend", "Suspend a tenant: its keys get 403 tenant_suspended, its queues are held", false),
		change("resume", "Resume a tenant and the queues held for its suspension", true))
	return cmd
}
