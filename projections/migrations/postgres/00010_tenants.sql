-- +goose Up
-- The API keys the audit trail has seen created (APIKeyCreated, APIKeyRoleChanged), so that an
-- entry names its actor's key label and role, not only its id. Keyed by the key's tenant and id
-- (key ids are unique across tenants; the platform operator's key acts in other tenants).
CREATE TABLE audit_actors (
    tenant_id TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    label     TEXT NOT NULL,
    role      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key_id)
);
CREATE INDEX audit_actors_key ON audit_actors (key_id);
-- The actor's key label and role when the entry was recorded (outside the hash chain: empty for
-- actors that are no key, and for entries recorded before this migration until a rebuild).
ALTER TABLE audit_entries ADD COLUMN actor_label TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_entries ADD COLUMN actor_role TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE audit_entries DROP COLUMN actor_role;
ALTER TABLE audit_entries DROP COLUMN actor_label;
DROP TABLE audit_actors;
