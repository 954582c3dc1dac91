package httpapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/broker"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/docs"
	"github.com/waqueue/waqueue/domain/auditchain"
	"github.com/waqueue/waqueue/internal/buildinfo"
	"github.com/waqueue/waqueue/projections"
)

type auditEntryView struct {
	Seq          uint64          `json:"seq"`
	EventID      uuid.UUID       `json:"event_id"`
	Stream       string          `json:"stream"`
	ConnectionID string          `json:"connection_id,omitempty"`
	EventType    string          `json:"event_type"`
	Actor        string          `json:"actor"`
	ActorLabel   string          `json:"actor_label,omitempty"`
	ActorRole    string          `json:"actor_role,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	At           time.Time       `json:"at"`
	Details      json.RawMessage `json:"details"`
	PrevHash     string          `json:"prev_hash"`
	Hash         string          `json:"hash"`
}

func viewAudit(e projections.AuditEntry) auditEntryView {
	d := e.Details
	if len(d) == 0 {
		d = json.RawMessage("null")
	}
	return auditEntryView{Seq: e.Seq, EventID: e.EventID, Stream: e.Stream, ConnectionID: e.ConnectionID, EventType: e.EventType,
		Actor: e.Actor, ActorLabel: e.ActorLabel, ActorRole: e.ActorRole, Reason: e.Reason, At: e.At, Details: d, PrevHash: e.PrevHash, Hash: e.Hash}
}

// queryTime parses an optional RFC 3339 time or YYYY-MM-DD day.
func queryTime(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Field: name,
		Detail: "must be an RFC 3339 time (2026-01-02T15:04:05Z) or a day (2026-01-02)"}
}

// audit answers a page of the tenant's audit trail (JSON), or exports every matching entry
// (format=csv or format=jsonl), oldest first.
func (s *server) audit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := projections.AuditFilter{ConnectionID: q.Get("connection"), EventType: q.Get("type"), Actor: q.Get("actor"), Cursor: q.Get("cursor")}
	var err error
	if f.From, err = queryTime(r, "from"); err != nil {
		return err
	}
	if f.To, err = queryTime(r, "to"); err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 100, 1000)
	if err != nil {
		return err
	}
	f.Limit = int(limit)
	tenant := principal(r).TenantID
	format := q.Get("format")
	switch format {
	case "", "json":
		page, err := s.d.Audit.Entries(r.Context(), s.d.DB, tenant, f)
		if err != nil {
			return badCursor(err)
		}
		out := make([]auditEntryView, 0, len(page.Entries))
		for _, e := range page.Entries {
			out = append(out, viewAudit(e))
		}
		return writeJSONVerbatim(w, http.StatusOK, map[string]any{"entries": out, "next_cursor": page.NextCursor})
	case "csv", "jsonl":
	default:
		return &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Field: "format", Detail: `must be "json", "csv" or "jsonl"`}
	}
	// Export: every page from the cursor on. The first page is read before anything is written,
	// so a bad filter is still a problem response.
	f.Limit = 1000
	page, err := s.d.Audit.Entries(r.Context(), s.d.DB, tenant, f)
	if err != nil {
		return badCursor(err)
	}
	ext := map[string]string{"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
	w.Header().Set("Content-Type", ext[format])
	w.Header().Set("Content-Disposition", `attachment; filename="audit-`+tenant+`.`+format+`"`)
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // details byte for byte as hashed (see writeJSONVerbatim)
	if format == "csv" {
		_ = cw.Write([]string{"seq", "at", "event_type", "connection_id", "actor", "reason", "stream", "event_id", "details", "prev_hash", "hash"})
	}
	for {
		for _, e := range page.Entries {
			if format == "csv" {
				_ = cw.Write([]string{strconv.FormatUint(e.Seq, 10), e.At.Format(time.RFC3339Nano), e.EventType, e.ConnectionID,
					e.Actor, e.Reason, e.Stream, e.EventID.String(), string(e.Details), e.PrevHash, e.Hash})
			} else if err := enc.Encode(viewAudit(e)); err != nil {
				return nil // the client went away; the status is written already
			}
		}
		cw.Flush()
		if page.NextCursor == "" || r.Context().Err() != nil {
			return nil
		}
		f.Cursor = page.NextCursor
		if page, err = s.d.Audit.Entries(r.Context(), s.d.DB, tenant, f); err != nil {
			s.log.ErrorContext(r.Context(), "audit export interrupted", "request_id", requestID(r.Context()), "error", err)
			return nil // the status is written already; the truncated export shows in the log
		}
	}
}

// writeJSONVerbatim is writeJSON without HTML escaping: an entry's details (raw JSON) then
// reach the client byte for byte as stored and hashed, so a verifier recomputes the same hash
// (json.Marshal would turn a stored "<", ">" or "&" into \u003c…).
func writeJSONVerbatim(w http.ResponseWriter, status int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
	return nil
}

func badCursor(err error) error {
	if errors.Is(err, projections.ErrBadCursor) {
		return &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Field: "cursor", Detail: "not a cursor this API produced"}
	}
	return err
}

func (s *server) auditVerify(w http.ResponseWriter, r *http.Request) error {
	v, err := s.d.Audit.Verify(r.Context(), s.d.DB, principal(r).TenantID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"ok": v.OK, "checked": v.Checked, "first_bad_seq": v.FirstBadSeq,
		"problem": v.Problem, "head": v.Head})
}

// auditCheckpoints answers a page of the tenant's signed audit checkpoints, newest first.
func (s *server) auditCheckpoints(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryInt(r, "limit", 100, 1000)
	if err != nil {
		return err
	}
	page, err := s.d.Audit.Checkpoints(r.Context(), s.d.DB, principal(r).TenantID, r.URL.Query().Get("cursor"), int(limit))
	if err != nil {
		return badCursor(err)
	}
	out := page.Checkpoints
	if out == nil {
		out = []auditchain.Checkpoint{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"checkpoints": out, "next_cursor": page.NextCursor})
}

func (s *server) analyticsDaily(w http.ResponseWriter, r *http.Request) error {
	q := projections.AnalyticsQuery{ConnectionID: r.URL.Query().Get("connection")}
	var err error
	if q.From, err = queryTime(r, "from"); err != nil {
		return err
	}
	if q.To, err = queryTime(r, "to"); err != nil {
		return err
	}
	rows, err := s.d.Analytics.Daily(r.Context(), s.d.DB, principal(r).TenantID, q)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(rows))
	for _, d := range rows {
		out = append(out, map[string]any{
			"day": d.Day.Format(time.DateOnly), "connection_id": d.ConnectionID, "queued": d.Queued, "dispatched": d.Dispatched,
			"sent": d.Sent, "delivered": d.Delivered, "read": d.Read, "failed": d.Failed, "expired": d.Expired,
			"purged": d.Purged, "unknown": d.Unknown, "bans": d.Bans, "clears": d.Clears, "cancelled": d.Cancelled,
		})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"days": out})
}

func (s *server) createKey(w http.ResponseWriter, r *http.Request) error {
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	req, role, err := decodeCreateKey(b)
	if err != nil {
		return err
	}
	p := principal(r)
	created, err := s.d.Keys.Create(r.Context(), p.TenantID, role, req.Label, p.ID)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, created)
}

// mintBrokerToken answers a broker token standing for the caller's key (apikeys.Tokens), and the
// subject prefix its commands go to on NATS.
func (s *server) mintBrokerToken(w http.ResponseWriter, r *http.Request) error {
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	ttl, err := decodeBrokerToken(b)
	if err != nil {
		return err
	}
	tok, err := s.d.Tokens.Mint(r.Context(), principal(r), ttl)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, map[string]any{
		"token": tok.Token, "expires_at": tok.ExpiresAt, "tenant_id": tok.TenantID, "key_id": tok.KeyID,
		"commands_subject_prefix": broker.CommandsPrefix(tok.TenantID),
	})
}

func (s *server) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.d.Keys.List(r.Context(), principal(r).TenantID)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []apikeys.Key{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *server) changeKey(w http.ResponseWriter, r *http.Request) error {
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	role, err := decodeChangeKey(b)
	if err != nil {
		return err
	}
	p := principal(r)
	key, err := s.d.Keys.ChangeRole(r.Context(), p.TenantID, r.PathValue("id"), role, p.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, key)
}

func (s *server) revokeKey(w http.ResponseWriter, r *http.Request) error {
	var reason string
	if r.ContentLength != 0 {
		_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
		if err != nil {
			return err
		}
		req, err := decodeRevokeKey(b)
		if err != nil {
			return err
		}
		reason = req.Reason
	}
	p := principal(r)
	if err := s.d.Keys.Revoke(r.Context(), p.TenantID, r.PathValue("id"), p.ID, reason); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// simulated answers a simulator control call, labelled as simulated.
func simulated(w http.ResponseWriter, id, action string, extra map[string]any) error {
	w.Header().Set("X-Waqueue-Simulated", "true")
	v := map[string]any{"simulated": true, "adapter": simulator.Name, "connection_id": id, "action": action}
	for k, x := range extra {
		v[k] = x
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *server) simBan(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	permanent, expire, err := decodeSimBan(b)
	if err != nil {
		return err
	}
	if _, err := s.card(r, id); err != nil {
		return err
	}
	if err := s.d.Simulator.Ban(connKey(r), simulator.Ban{Permanent: permanent, Expire: expire}); err != nil {
		return err
	}
	kind := "temporary"
	extra := map[string]any{"kind": kind, "expires_in": expire.String()}
	if permanent {
		extra = map[string]any{"kind": "permanent"}
	}
	return simulated(w, id, "ban", extra)
}

func (s *server) simLift(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.card(r, id); err != nil {
		return err
	}
	if err := s.d.Simulator.LiftBan(connKey(r)); err != nil {
		return err
	}
	return simulated(w, id, "lift", nil)
}

func (s *server) simLogout(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.card(r, id); err != nil {
		return err
	}
	if err := s.d.Simulator.Logout(connKey(r), 401); err != nil {
		return err
	}
	return simulated(w, id, "logout", map[string]any{"reason": 401})
}

// healthz is liveness; it also names the build (buildinfo), which is public like the route.
func (s *server) healthz(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "build": buildinfo.Read()})
}

func (s *server) openapi(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(docs.OpenAPI)
	return nil
}
