package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// The request bodies. Every decoder is a pure function of the body bytes (plus limits), fuzzed
// in decode_fuzz_test.go: none may panic, and each returns either a value or a *Problem.

// createConnectionRequest is the body of POST /v1/connections.
type createConnectionRequest struct {
	// ID is optional; the server generates one when it is empty. Connection ids are scoped to
	// the tenant: an id taken in the caller's tenant is a conflict; another tenant's is not seen.
	ID    string `json:"id"`
	Phone string `json:"phone"`
	// OnBan is "hold" (default) or "resume".
	OnBan string `json:"on_ban"`
	// SendingPolicy, optional, changes settings of the default sending policy from the start.
	SendingPolicy *sendingPolicyRequest `json:"sending_policy"`
}

// sendingPolicyRequest is a sending policy in a request: every setting optional (a partial
// update); quiet_hours null removes the quiet hours.
type sendingPolicyRequest struct {
	MinIntervalSeconds *int64          `json:"min_interval_seconds"`
	JitterSeconds      *int64          `json:"jitter_seconds"`
	DailyCap           *int            `json:"daily_cap"`
	TimeZone           *string         `json:"time_zone"`
	QuietHours         json.RawMessage `json:"quiet_hours"`
}

// maxPolicySeconds bounds the seconds decoded before they become a duration (no overflow); the
// domain's bounds are far below it.
const maxPolicySeconds = 1 << 31

// patch converts the request into a domain patch and checks it as far as it can without the
// connection: every setting's bounds are independent of the others, so a patch valid on the
// defaults is valid on any policy (422 invalid_sending_policy / invalid_time_zone otherwise).
// The time zone's loading is checked by the command.
func (r *sendingPolicyRequest) patch() (connection.SendingPolicyPatch, error) {
	var pt connection.SendingPolicyPatch
	secs := func(field string, v *int64) (*time.Duration, error) {
		if v == nil {
			return nil, nil
		}
		if *v < -maxPolicySeconds || *v > maxPolicySeconds {
			return nil, &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidSendingPolicy),
				Field: "sending_policy." + field, Detail: "out of bounds"}
		}
		d := time.Duration(*v) * time.Second
		return &d, nil
	}
	var err error
	if pt.MinInterval, err = secs("min_interval_seconds", r.MinIntervalSeconds); err != nil {
		return pt, err
	}
	if pt.Jitter, err = secs("jitter_seconds", r.JitterSeconds); err != nil {
		return pt, err
	}
	pt.DailyCap, pt.TimeZone = r.DailyCap, r.TimeZone
	switch raw := bytes.TrimSpace(r.QuietHours); {
	case len(raw) == 0:
	case string(raw) == "null":
		pt.NoQuietHours = true
	default:
		var q struct {
			Start *string `json:"start"`
			End   *string `json:"end"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		bad := &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidSendingPolicy),
			Field: "sending_policy.quiet_hours", Detail: `must be {"start": "HH:MM", "end": "HH:MM"} (local time) or null`}
		if dec.Decode(&q) != nil || q.Start == nil || q.End == nil {
			return pt, bad
		}
		start, err1 := connection.ParseClockTime(*q.Start)
		end, err2 := connection.ParseClockTime(*q.End)
		if err1 != nil || err2 != nil {
			return pt, bad
		}
		pt.QuietHours = &connection.QuietHours{Start: start, End: end}
	}
	if pt.IsZero() {
		return pt, &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidSendingPolicy),
			Field: "sending_policy", Detail: "names no setting to change"}
	}
	if _, err := pt.Apply(connection.DefaultSendingPolicy()); err != nil {
		return pt, err
	}
	return pt, nil
}

type enqueueRequest struct {
	Recipient  string `json:"recipient"`
	Text       string `json:"text"`
	TTLSeconds int64  `json:"ttl_seconds"`
}

type broadcastRequest struct {
	Recipients []string `json:"recipients"`
	Text       string   `json:"text"`
	TTLSeconds int64    `json:"ttl_seconds"`
	// CheckRecipients queues only the recipients on WhatsApp (a number check first).
	CheckRecipients bool `json:"check_recipients"`
}

type clearRequest struct {
	Reason string `json:"reason"`
	// BroadcastID limits the clear to one broadcast.
	BroadcastID string `json:"broadcast_id"`
	// Confirm must equal the connection's own phone number.
	Confirm string `json:"confirm"`
	// Then is what the queue becomes after the clear: "keep" (default), "hold" or "resume".
	Then string `json:"then"`
	// then is Then parsed by decodeClear.
	then connection.ClearThen
}

type noteRequest struct {
	Note string `json:"note"`
}

type pairPhoneRequest struct {
	Phone string `json:"phone"`
}

type createKeyRequest struct {
	Role  string `json:"role"`
	Label string `json:"label"`
}

type changeKeyRequest struct {
	Role string `json:"role"`
}

// changeConnectionRequest is the body of PATCH /v1/connections/{id}: the settings to change.
type changeConnectionRequest struct {
	OnBan         *string               `json:"on_ban"`
	SendingPolicy *sendingPolicyRequest `json:"sending_policy"`
}

// connectionChange is a decoded PATCH: the on_ban policy (zero: unchanged) and the sending
// policy patch (nil: unchanged).
type connectionChange struct {
	onBan   connection.OnBanPolicy
	sending *connection.SendingPolicyPatch
}

// decodeChangeConnection decodes {on_ban, sending_policy}; at least one is required (422
// invalid_request); on_ban must be hold or resume (422 invalid_policy); sending_policy is
// checked by sendingPolicyRequest.patch. The whole body is checked before anything is recorded.
func decodeChangeConnection(body []byte) (connectionChange, error) {
	var req changeConnectionRequest
	var ch connectionChange
	if err := decodeJSON(body, &req, false); err != nil {
		return ch, err
	}
	if req.OnBan == nil && req.SendingPolicy == nil {
		return ch, invalid("on_ban", "required: a setting to change (on_ban, sending_policy)")
	}
	if req.OnBan != nil {
		if *req.OnBan != "hold" && *req.OnBan != "resume" {
			return ch, &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidPolicy), Field: "on_ban",
				Detail: `must be "hold" or "resume"`}
		}
		p, err := connection.ParseOnBanPolicy(*req.OnBan)
		if err != nil {
			return ch, err
		}
		ch.onBan = p
	}
	if req.SendingPolicy != nil {
		pt, err := req.SendingPolicy.patch()
		if err != nil {
			return ch, err
		}
		ch.sending = &pt
	}
	return ch, nil
}

// cancelRequest is the body of DELETE …/messages/{message_id}.
type cancelRequest struct {
	Reason string `json:"reason"`
}

type revokeKeyRequest struct {
	Reason string `json:"reason"`
}

// createWebhookRequest is the body of POST /v1/webhooks.
type createWebhookRequest struct {
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types"`
}

// Bounds of a webhook registration, checked before the webhooks service sees it.
const (
	maxWebhookURL        = 2048
	maxWebhookEventTypes = 64
)

type brokerTokenRequest struct {
	TTL string `json:"ttl"`
}

type simBanRequest struct {
	Kind      string `json:"kind"`
	ExpiresIn string `json:"expires_in"`
}

// badJSON returns the invalid_json problem for a decoding error.
func badJSON(err error) *Problem {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	detail := "the body is not valid JSON for this request"
	switch {
	case errors.As(err, &syn):
		detail = fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		detail = fmt.Sprintf("field %q must be %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		detail = "the body is empty or truncated"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		detail = strings.TrimPrefix(err.Error(), "json: ")
	}
	return &Problem{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Detail: detail}
}

// decodeJSON decodes exactly one JSON object into v, refusing unknown fields and trailing data.
// An empty body decodes as {} when allowEmpty.
func decodeJSON(body []byte, v any, allowEmpty bool) error {
	if allowEmpty && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if !utf8.Valid(body) {
		return &Problem{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Detail: "the body is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badJSON(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &Problem{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Detail: "unexpected data after the JSON object"}
	}
	return nil
}

func invalid(field, detail string) *Problem {
	return &Problem{Status: http.StatusUnprocessableEntity, Code: CodeInvalidRequest, Field: field, Detail: detail}
}

func decodeCreateConnection(body []byte) (createConnectionRequest, error) {
	var req createConnectionRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, err
	}
	if req.ID != "" {
		if err := connection.ValidateID("id", req.ID); err != nil {
			return req, err
		}
	}
	if req.Phone == "" {
		return req, &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidPhone), Field: "phone", Detail: "required"}
	}
	switch req.OnBan {
	case "", "hold", "resume":
	default:
		return req, &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidPolicy), Field: "on_ban",
			Detail: `must be "hold" or "resume"`}
	}
	if req.SendingPolicy != nil {
		if _, err := req.SendingPolicy.patch(); err != nil {
			return req, err
		}
	}
	return req, nil
}

// ttl converts ttl_seconds, refusing values the domain would refuse, before multiplying
// (a huge number of seconds must not overflow into a valid duration).
func ttl(seconds int64) (time.Duration, error) {
	if seconds < 0 || seconds > int64(connection.MaxTTL/time.Second) {
		return 0, &Problem{Status: http.StatusUnprocessableEntity, Code: string(connection.CodeInvalidTTL), Field: "ttl_seconds",
			Detail: fmt.Sprintf("must be 0 (never expires) to %d", int64(connection.MaxTTL/time.Second))}
	}
	return time.Duration(seconds) * time.Second, nil
}

func decodeEnqueue(body []byte) (enqueueRequest, time.Duration, error) {
	var req enqueueRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, 0, err
	}
	d, err := ttl(req.TTLSeconds)
	return req, d, err
}

func tooManyRecipients(max int) *Problem {
	return &Problem{Status: http.StatusUnprocessableEntity, Code: CodeTooManyRecipients, Field: "recipients",
		Detail: fmt.Sprintf("at most %d recipients per broadcast", max)}
}

func decodeBroadcastJSON(body []byte, maxRecipients int) (broadcastRequest, time.Duration, error) {
	var req broadcastRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, 0, err
	}
	if len(req.Recipients) > maxRecipients {
		return req, 0, tooManyRecipients(maxRecipients)
	}
	d, err := ttl(req.TTLSeconds)
	return req, d, err
}

// decodeRecipientsCSV reads one phone number per line (the first field of each record, so a
// spreadsheet's export with more columns works too). Blank lines are skipped; a first line that
// holds no digit is taken for a header and skipped.
func decodeRecipientsCSV(body []byte, maxRecipients int) ([]string, error) {
	if !utf8.Valid(body) {
		return nil, &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Detail: "the CSV is not valid UTF-8"}
	}
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")) // a spreadsheet's byte order mark
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	var out []string
	line := 0
	for sc.Scan() {
		line++
		field, _, _ := strings.Cut(sc.Text(), ",")
		if f2, _, ok := strings.Cut(field, ";"); ok {
			field = f2
		}
		field = strings.TrimSpace(strings.Trim(strings.TrimSpace(field), `"`))
		if field == "" {
			continue
		}
		if line == 1 && !strings.ContainsAny(field, "0123456789") {
			continue // header
		}
		if len(out) == maxRecipients {
			return nil, tooManyRecipients(maxRecipients)
		}
		out = append(out, field)
	}
	if err := sc.Err(); err != nil {
		return nil, &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Detail: fmt.Sprintf("CSV line %d: %v", line+1, err)}
	}
	return out, nil
}

func decodeClear(body []byte) (clearRequest, uuid.UUID, error) {
	var req clearRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, uuid.Nil, err
	}
	var bid uuid.UUID
	if req.BroadcastID != "" {
		id, err := uuid.Parse(req.BroadcastID)
		if err != nil {
			return req, uuid.Nil, invalid("broadcast_id", "must be a UUID")
		}
		bid = id
	}
	then, err := connection.ParseClearThen(req.Then)
	if err != nil {
		return req, bid, err
	}
	req.then = then
	if strings.TrimSpace(req.Confirm) == "" {
		return req, bid, &Problem{Status: http.StatusUnprocessableEntity, Code: CodeConfirmMismatch, Field: "confirm",
			Detail: "type the connection's phone number to confirm the clear"}
	}
	return req, bid, nil
}

func decodeNote(body []byte) (noteRequest, error) {
	var req noteRequest
	err := decodeJSON(body, &req, true)
	return req, err
}

func decodePairPhone(body []byte) (pairPhoneRequest, error) {
	var req pairPhoneRequest
	err := decodeJSON(body, &req, true)
	return req, err
}

func decodeCreateKey(body []byte) (createKeyRequest, auth.Role, error) {
	var req createKeyRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, auth.Role{}, err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return req, auth.Role{}, invalid("role", "must be one of admin, operator, sender, auditor, analyst")
	}
	return req, role, nil
}

func decodeChangeKey(body []byte) (auth.Role, error) {
	var req changeKeyRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return auth.Role{}, err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return auth.Role{}, invalid("role", "must be one of admin, operator, sender, auditor, analyst")
	}
	return role, nil
}

// decodeBrokerToken decodes {ttl}; an empty body or ttl takes the default lifetime.
func decodeBrokerToken(body []byte) (time.Duration, error) {
	var req brokerTokenRequest
	if err := decodeJSON(body, &req, true); err != nil {
		return 0, err
	}
	if req.TTL == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(req.TTL)
	if err != nil || d < time.Minute || d > apikeys.MaxTokenTTL {
		return 0, invalid("ttl", fmt.Sprintf(`must be a duration from 1m to %s, like "15m"`, apikeys.MaxTokenTTL))
	}
	return d, nil
}

// decodeCancel decodes {reason}; the domain refuses an empty reason (422 missing_reason).
func decodeCancel(body []byte) (cancelRequest, error) {
	var req cancelRequest
	err := decodeJSON(body, &req, false)
	return req, err
}

func decodeRevokeKey(body []byte) (revokeKeyRequest, error) {
	var req revokeKeyRequest
	err := decodeJSON(body, &req, true)
	return req, err
}

// decodeCreateWebhook decodes {url, event_types}. It checks presence and size only; whether the
// URL is an absolute http(s) URL and the types are integration event types is the webhooks
// service's to say (422 invalid_webhook either way).
func decodeCreateWebhook(body []byte) (createWebhookRequest, error) {
	var req createWebhookRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, err
	}
	webhookInvalid := func(field, detail string) *Problem {
		return &Problem{Status: http.StatusUnprocessableEntity, Code: CodeInvalidWebhook, Field: field, Detail: detail}
	}
	switch {
	case req.URL == "":
		return req, webhookInvalid("url", "is required")
	case len(req.URL) > maxWebhookURL:
		return req, webhookInvalid("url", fmt.Sprintf("is longer than %d bytes", maxWebhookURL))
	case len(req.EventTypes) == 0:
		return req, webhookInvalid("event_types", "at least one event type is required")
	case len(req.EventTypes) > maxWebhookEventTypes:
		return req, webhookInvalid("event_types", fmt.Sprintf("at most %d event types", maxWebhookEventTypes))
	}
	return req, nil
}

// decodeSimBan decodes {kind: temporary|permanent, expires_in: Go duration like "1h"}.
func decodeSimBan(body []byte) (permanent bool, expire time.Duration, err error) {
	var req simBanRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return false, 0, err
	}
	switch req.Kind {
	case "permanent":
		if req.ExpiresIn != "" {
			return false, 0, invalid("expires_in", "a permanent ban has no expiry")
		}
		return true, 0, nil
	case "temporary":
		if req.ExpiresIn == "" {
			return false, time.Hour, nil
		}
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 || d > 365*24*time.Hour {
			return false, 0, invalid("expires_in", `must be a positive duration up to 8760h, like "30m" or "2h"`)
		}
		return false, d, nil
	default:
		return false, 0, invalid("kind", `must be "temporary" or "permanent"`)
	}
}

// mediaType returns r's media type, lower-cased, without parameters ("" when absent).
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid"
	}
	return mt
}

func unsupportedMedia(got string, want ...string) *Problem {
	return &Problem{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType,
		Detail: fmt.Sprintf("Content-Type %q is not accepted here; use %s", got, strings.Join(want, " or "))}
}

// readBody reads a body of the accepted media types, at most max bytes. A missing Content-Type
// is accepted as JSON when JSON is allowed (curl -d sends form encoding; we refuse that).
func readBody(w http.ResponseWriter, r *http.Request, max int64, accept ...string) (string, []byte, error) {
	mt := mediaType(r)
	if mt == "" && len(accept) > 0 && accept[0] == "application/json" {
		mt = "application/json"
	}
	ok := false
	for _, a := range accept {
		if mt == a {
			ok = true
		}
	}
	if !ok {
		return mt, nil, unsupportedMedia(mt, accept...)
	}
	body := http.MaxBytesReader(w, r.Body, max)
	var b []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= max {
		// The declared length, read into a buffer of that size (io.ReadAll grows one from 512
		// bytes); net/http's body ends there.
		b = make([]byte, n)
		_, err = io.ReadFull(body, b)
	} else {
		b, err = io.ReadAll(body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mt, nil, err
		}
		return mt, nil, &Problem{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Detail: "could not read the body"}
	}
	return mt, b, nil
}
