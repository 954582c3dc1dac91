package httpapi

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/waqueue/waqueue/adapters/apikeys"
	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/simulator"
	"github.com/waqueue/waqueue/adapters/sqlitedb"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/adapters/webhooks"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// Stable problem codes of the API itself. The domain's codes (connection.Code: queue_clearing,
// invalid_phone, text_too_long, …) are passed through as they are.
const (
	CodeUnauthorized         = "unauthorized"
	CodeForbidden            = "forbidden"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeConflict             = "conflict"
	CodeInvalidJSON          = "invalid_json"
	CodeInvalidRequest       = "invalid_request"
	CodeBodyTooLarge         = "body_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeNotAcceptable        = "not_acceptable"
	CodeConfirmMismatch      = "confirm_mismatch"
	CodeTooManyRecipients    = string(connection.CodeTooManyRecipients)
	CodeKeyRevoked           = "key_revoked"
	CodeAlreadyPaired        = "already_paired"
	CodeNotPaired            = "not_paired"
	CodePairingInProgress    = "pairing_in_progress"
	CodeNoPairing            = "no_pairing"
	CodeSimulatorState       = "simulator_state"
	CodeInvalidWebhook       = "invalid_webhook"
	CodeServiceUnavailable   = "service_unavailable"
	// CodeRateLimited: a rate limit ran out (429, with Retry-After): the per-connection number
	// checks, or WhatsApp refusing a lookup for now.
	CodeRateLimited = "rate_limited"
	// CodeNotConnected: the operation needs the connection's WhatsApp session logged in and
	// connected (a number check).
	CodeNotConnected = "not_connected"
	// CodeTooManyNumbers: a number check of more than 1,000 numbers, or a broadcast with
	// check_recipients beyond the number-check burst.
	CodeTooManyNumbers = "too_many_numbers"
	// CodeTransportError: WhatsApp (the transport) refused or failed the operation (502).
	CodeTransportError = "transport_error"
	CodeInternal       = "internal"
	// Tenants (tenants.go).
	CodeTenantSuspended = "tenant_suspended"
	CodeTenantExists    = "tenant_exists"
	CodePlatformTenant  = "platform_tenant"
)

// Problem is an RFC 9457 problem document. It is also an error, so that decoders and handlers
// can return one directly.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Code is the stable, machine-readable code.
	Code string `json:"code"`
	// Field names the request field at fault, if any.
	Field string `json:"field,omitempty"`
	// Instance is the request id.
	Instance string `json:"instance,omitempty"`
	// Extra members (e.g. clear_id and since for queue_clearing).
	Extra map[string]any `json:"-"`
	// retryAfter, if positive, is sent as Retry-After (whole seconds, rounded up).
	retryAfter time.Duration
}

func (p *Problem) Error() string {
	return fmt.Sprintf("httpapi: %d %s: %s", p.Status, p.Code, p.Detail)
}

// MarshalJSON adds Extra's members to the document.
func (p *Problem) MarshalJSON() ([]byte, error) {
	type plain Problem
	b, err := json.Marshal((*plain)(p))
	if err != nil || len(p.Extra) == 0 {
		return b, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range p.Extra {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// problemType is the type URI of a code.
func problemType(code string) string { return "https://waqueue.dev/problems/" + code }

// statusOfDomainCode maps the domain's refusal codes to HTTP statuses: validation failures are
// 422, state conflicts 409.
var statusOfDomainCode = map[connection.Code]int{
	connection.CodeQueueClearing:       http.StatusConflict,
	connection.CodeQueueHeld:           http.StatusConflict,
	connection.CodeLinkStatus:          http.StatusConflict,
	connection.CodeNotRegistered:       http.StatusNotFound,
	connection.CodeAlreadyRegistered:   http.StatusConflict,
	connection.CodeAlreadyHeld:         http.StatusConflict,
	connection.CodeNotHeld:             http.StatusConflict,
	connection.CodeNoClearInProgress:   http.StatusConflict,
	connection.CodeBroadcastNotPending: http.StatusConflict,
	connection.CodeAlreadyDisposed:     http.StatusConflict,
	connection.CodeNotHead:             http.StatusConflict,
	connection.CodeUnknownMessage:      http.StatusConflict,
	connection.CodeMessagePurged:       http.StatusConflict,
	connection.CodeMessageExpired:      http.StatusConflict,
	connection.CodeNotExpired:          http.StatusConflict,
	connection.CodeNotInFlight:         http.StatusConflict,
	connection.CodeInFlightLimit:       http.StatusConflict,
	connection.CodeSendInterrupted:     http.StatusConflict,
	connection.CodeMessageNotPending:   http.StatusConflict,
	connection.CodeMessageCancelled:    http.StatusConflict,
	connection.CodeStaleEpoch:          http.StatusConflict,
	connection.CodeConnectionRetired:   http.StatusConflict,
	connection.CodeQueueNotEmpty:       http.StatusConflict,
	// The same Idempotency-Key with another request: the request cannot be processed as sent.
	connection.CodeIdempotencyKeyReused: http.StatusUnprocessableEntity,
}

// toProblem maps any error to its problem: the one place where errors become HTTP statuses.
// Everything is matched with errors.Is/As, so wrapping never changes the answer. An error that
// matches nothing is a 500 "internal" whose detail says nothing about the cause (it is logged).
func toProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	mk := func(status int, code, detail string) *Problem {
		return &Problem{Status: status, Code: code, Detail: detail}
	}
	var (
		clearing *connection.ClearingError
		valErr   *connection.ValidationError
		keyVal   *apikeys.ValidationError
		hookVal  *webhooks.InvalidError
		maxBytes *http.MaxBytesError
		notEmpty *connection.QueueNotEmptyError
	)
	switch {
	case errors.As(err, &maxBytes):
		return mk(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the body exceeds %d bytes", maxBytes.Limit))
	case errors.Is(err, commands.ErrUnauthenticated), errors.Is(err, apikeys.ErrInvalidKey):
		return mk(http.StatusUnauthorized, CodeUnauthorized, "a valid API key is required (Authorization: Bearer wq_…)")
	case errors.Is(err, auth.ErrWrongTenant), errors.Is(err, commands.ErrNotFound), errors.Is(err, projections.ErrNotFound),
		errors.Is(err, apikeys.ErrNotFound), errors.Is(err, connection.ErrNotRegistered), errors.Is(err, webhooks.ErrNotFound),
		errors.Is(err, apikeys.ErrTenantNotFound):
		// Another tenant's resource is indistinguishable from a missing one (G9).
		return mk(http.StatusNotFound, CodeNotFound, "no such resource")
	case errors.Is(err, apikeys.ErrTenantSuspended):
		return mk(http.StatusForbidden, CodeTenantSuspended, "the key's tenant is suspended; ask the platform operator")
	case errors.Is(err, apikeys.ErrTenantExists):
		return mk(http.StatusConflict, CodeTenantExists, "a tenant with this id exists already")
	case errors.Is(err, auth.ErrForbidden):
		var denied *auth.DeniedError
		detail := "your role lacks the right for this operation"
		if errors.As(err, &denied) {
			detail = fmt.Sprintf("role %q lacks the right %q", denied.Principal.Role, denied.Right)
		}
		return mk(http.StatusForbidden, CodeForbidden, detail)
	case errors.As(err, &clearing):
		p := mk(http.StatusConflict, string(connection.CodeQueueClearing),
			"the queue is being cleared; sends are refused until the clear completes")
		p.Extra = map[string]any{"clear_id": clearing.ClearID, "since": clearing.Since}
		return p
	case errors.As(err, &valErr):
		p := mk(http.StatusUnprocessableEntity, string(valErr.Code), valErr.Error())
		p.Field = valErr.Field
		return p
	case errors.As(err, &keyVal):
		p := mk(http.StatusUnprocessableEntity, CodeInvalidRequest, keyVal.Error())
		p.Field = keyVal.Field
		return p
	case errors.As(err, &hookVal) && hookVal.Field == "cursor":
		// The delivery log's cursor is a query parameter: a malformed one is a bad request, as
		// for every other cursor of the API.
		p := mk(http.StatusBadRequest, CodeInvalidRequest, "not a cursor this API produced")
		p.Field = "cursor"
		return p
	case errors.As(err, &hookVal):
		p := mk(http.StatusUnprocessableEntity, CodeInvalidWebhook, hookVal.Field+": "+hookVal.Reason)
		p.Field = hookVal.Field
		return p
	case errors.Is(err, webhooks.ErrInvalid):
		return mk(http.StatusUnprocessableEntity, CodeInvalidWebhook, "the webhook registration is invalid")
	case errors.Is(err, apikeys.ErrRevoked):
		return mk(http.StatusConflict, CodeKeyRevoked, "the key is revoked")
	case errors.Is(err, transport.ErrAlreadyPaired):
		return mk(http.StatusConflict, CodeAlreadyPaired, "the connection is paired already; log it out first")
	case errors.Is(err, transport.ErrPairingInProgress):
		return mk(http.StatusConflict, CodePairingInProgress, "a pairing is already running for this connection")
	case errors.Is(err, transport.ErrNotPaired):
		return mk(http.StatusConflict, CodeNotPaired, "the connection is not paired")
	case errors.As(err, &notEmpty):
		p := mk(http.StatusConflict, string(connection.CodeQueueNotEmpty),
			"messages are pending or in flight, or a clear is in progress: retire with clear_first, or wait")
		p.Extra = map[string]any{"pending": notEmpty.Pending, "in_flight": notEmpty.InFlight, "clearing": notEmpty.Clearing}
		return p
	case errors.Is(err, transport.ErrNotConnected):
		return mk(http.StatusConflict, CodeNotConnected, "the connection's WhatsApp session is not connected")
	case errors.Is(err, transport.ErrRateLimited):
		p := mk(http.StatusTooManyRequests, CodeRateLimited, "WhatsApp refused the lookup for now; retry later")
		p.retryAfter = time.Minute
		return p
	case errors.Is(err, transport.ErrRejected), errors.Is(err, errTransport):
		return mk(http.StatusBadGateway, CodeTransportError, "WhatsApp refused or failed the operation; retry later")
	case errors.Is(err, simulator.ErrNotBanned), errors.Is(err, simulator.ErrNotLoggedIn):
		return mk(http.StatusConflict, CodeSimulatorState, err.Error())
	case errors.Is(err, commands.ErrConflict), errors.Is(err, eventstore.ErrWrongExpectedRevision),
		errors.Is(err, eventstore.ErrDuplicateEventID):
		return mk(http.StatusConflict, CodeConflict, "the resource changed concurrently; retry")
	case unavailable(err):
		return mk(http.StatusServiceUnavailable, CodeServiceUnavailable, "the store is unavailable; retry later")
	}
	if code, ok := connection.ErrorCode(err); ok {
		status, known := statusOfDomainCode[code]
		if !known {
			status = http.StatusConflict
		}
		return mk(status, string(code), err.Error())
	}
	return mk(http.StatusInternalServerError, CodeInternal, "internal error; see the server log for this request id")
}

// unavailable reports errors that mean the store or database cannot be reached right now:
// a closed store, a broken or refused connection, PostgreSQL shutting down or starting
// (SQLSTATE classes 57P and 08, too many connections), a busy SQLite, a deadline.
func unavailable(err error) bool {
	var netErr net.Error
	if errors.Is(err, eventstore.ErrClosed) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.As(err, &netErr) || sqlitedb.IsBusy(err) ||
		chainHasText(err, sqlDBClosed) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "57P") || strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "53300"
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.Timeout(err) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	// Some drivers flatten the cause into text; these are connection failures whatever wraps them.
	msg := err.Error()
	for _, s := range []string{"broken pipe", "connection reset by peer", "connection refused", "conn closed", "unexpected EOF", "the database system is shutting down", "the database system is starting up"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// sqlDBClosed is database/sql's error text for a closed *sql.DB, which has no exported sentinel.
const sqlDBClosed = "sql: database is closed"

// chainHasText reports whether any error in err's tree has exactly the text msg.
func chainHasText(err error, msg string) bool {
	for err != nil {
		if err.Error() == msg {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if chainHasText(e, msg) {
					return true
				}
			}
			return false
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

// writeProblem writes p as application/problem+json.
func writeProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	if p.Type == "" {
		p.Type = problemType(p.Code)
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	p.Instance = requestID(r.Context())
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if p.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((p.retryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
