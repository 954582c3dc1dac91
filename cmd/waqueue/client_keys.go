package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/waqueue/waqueue/client"
)

func newKeysCmd(cf *clientFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create, list, revoke API keys and change their roles (admin)"}

	var role, label, tenant string
	create := &cobra.Command{
		Use:   "create --role ROLE [--label L]",
		Short: "Create an API key; its secret is printed this once",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			var (
				k   client.CreatedKey
				raw json.RawMessage
			)
			if tenant != "" {
				// A key of a named tenant: the platform operator's route (404 for anyone else,
				// so the key is never created somewhere the operator did not ask for).
				k, raw, err = cl.CreateTenantKey(c.Context(), tenant, role, label)
			} else {
				k, raw, err = cl.CreateKey(c.Context(), role, label)
			}
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "created key %s (role %s, tenant %s, label %q)\n", k.ID, k.Role, k.TenantID, k.Label)
			fmt.Fprintf(out, "secret: %s\n", k.Secret)
			fmt.Fprintln(out, "The secret is shown this once and stored nowhere; keep it now.")
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator, sender, auditor or analyst (required)")
	create.Flags().StringVar(&label, "label", "", "a label to recognise the key by")
	create.Flags().StringVar(&tenant, "tenant", "", "tenant of the key (platform operator only; default: the calling key's tenant)")
	_ = create.MarkFlagRequired("role")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's keys (never their secrets), revoked ones included",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			keys, raw, err := cl.Keys(c.Context())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(c.OutOrStdout(), raw)
			}
			rows := make([][]string, 0, len(keys))
			for _, k := range keys {
				rows = append(rows, []string{k.ID, k.Role, dash(k.Label), k.TenantID, dash(k.CreatedBy), when(k.CreatedAt), when(k.RevokedAt)})
			}
			return table(c.OutOrStdout(), []string{"ID", "ROLE", "LABEL", "TENANT", "CREATED BY", "CREATED", "REVOKED"}, rows)
		},
	}

	var reason string
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key (final; audited)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			if err := cl.RevokeKey(c.Context(), args[0], reason); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "revoked key %s\n", args[0])
			return nil
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why the key is revoked (recorded in the audit trail)")

	roleCmd := &cobra.Command{
		Use:   "role ID ROLE",
		Short: "Give a key another role: admin, operator, sender, auditor or analyst (audited; in effect at once)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := cf.client(c)
			if err != nil {
				return err
			}
			key, err := cl.ChangeKeyRole(c.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if cf.json {
				return printJSONValue(c.OutOrStdout(), key)
			}
			fmt.Fprintf(c.OutOrStdout(), "key %s now has the role %s\n", key.ID, key.Role)
			return nil
		},
	}

	cmd.AddCommand(cf.addJSON(create), cf.addJSON(list), revoke, cf.addJSON(roleCmd))
	return cmd
}
