package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// errTransport marks a transport failure that matches none of the transport's sentinels
// (502 transport_error).
var errTransport = errors.New("httpapi: transport failed")

// logoutResponse is the body of 200 on POST …/logout: the card, and whether WhatsApp confirmed
// the logout of the linked device.
type logoutResponse struct {
	cardView
	// RemoteLogout is true when WhatsApp confirmed the logout; false when the session was not
	// connected (only the stored session was deleted) or there was none.
	RemoteLogout bool `json:"remote_logout"`
}

// logout logs the connection's WhatsApp session out on an operator's request: it records the
// logout first (SessionInvalidated with the caller as actor, the queue held: nothing is
// dispatched from here on), then ends the transport session (Transport.Unpair). On several
// nodes this node may not run the session (another holds the connection's lease): its unpair
// deletes the stored session (remote_logout false) and the node running it logs the device out
// at WhatsApp when it sees the logout recorded (the dispatcher there). Retrying is safe: on a
// link already logged out nothing more is recorded and the transport's unpair is a no-op. The
// pairing routes pair the number again.
func (s *server) logout(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.card(r, id); err != nil {
		return err
	}
	res, err := s.d.Handlers.UnpairConnection.Handle(r.Context(), commands.UnpairConnection{ConnectionID: id})
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	u, err := s.d.Transport.Unpair(context.WithoutCancel(r.Context()), connKey(r))
	if err != nil {
		return transportErr(err)
	}
	s.ownView(w, r.Context(), res.Position, projections.CardsName)
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, logoutResponse{cardView: viewCard(c, s.d.Now()), RemoteLogout: u.Remote})
}

// transportErr keeps the transport's sentinels (mapped by toProblem) and marks any other
// transport failure as errTransport.
func transportErr(err error) error {
	for _, known := range []error{transport.ErrNotConnected, transport.ErrRateLimited, transport.ErrRejected,
		transport.ErrPairingInProgress, transport.ErrNotPaired, transport.ErrAlreadyPaired} {
		if errors.Is(err, known) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", errTransport, err)
}

type retireRequest struct {
	Reason string `json:"reason"`
	// Confirm must equal the connection's own phone number.
	Confirm string `json:"confirm"`
	// ClearFirst clears the queue first (a clear with then=retire) and retires the connection
	// when the clear completes.
	ClearFirst bool `json:"clear_first"`
}

// retireResponse is the body of 202 on POST …/retire with clear_first: the clear that retires
// the connection when it completes.
type retireResponse struct {
	ConnectionID string `json:"connection_id"`
	Status       string `json:"status"`
	ClearID      string `json:"clear_id"`
}

// retire retires a connection for good. Without clear_first it is refused with 409
// queue_not_empty while messages are pending or in flight (or a clear runs), and answers the
// retired card (200). With clear_first it requests a clear of the whole queue with
// then=retire (idempotent under Idempotency-Key, like POST …/queue/clear) and answers 202 with
// the clear: the connection is retired when the clear completes. The transport session of
// this node is disconnected at once (the dispatcher that holds the connection releases its own).
func (s *server) retire(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	var req retireRequest
	if err := decodeJSON(b, &req, false); err != nil {
		return err
	}
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	if d := digits(req.Confirm); d == "" || d != digits(c.Phone) {
		return &Problem{Status: http.StatusUnprocessableEntity, Code: CodeConfirmMismatch, Field: "confirm",
			Detail: "confirm must be the connection's phone number"}
	}
	if req.ClearFirst {
		res, err := s.d.Handlers.RequestClear.Handle(r.Context(), commands.RequestClear{
			ConnectionID: id, IdempotencyKey: idempotencyKey(r), Reason: req.Reason, Then: connection.ClearThenRetire,
		})
		if err != nil {
			return err
		}
		setPosition(w, res.Position)
		markReplay(w, res.Replayed)
		w.Header().Set("Location", "/v1/connections/"+id+"/clears/"+res.ClearID.String())
		return writeJSON(w, http.StatusAccepted, retireResponse{ConnectionID: id, Status: "retiring", ClearID: res.ClearID.String()})
	}
	res, err := s.d.Handlers.RetireConnection.Handle(r.Context(), commands.RetireConnection{ConnectionID: id, Reason: req.Reason})
	if err != nil {
		return err
	}
	setPosition(w, res.Position)
	if err := s.d.Transport.Disconnect(context.WithoutCancel(r.Context()), connKey(r)); err != nil {
		s.log.Warn("disconnecting a retired connection failed", "connection", id, "err", err)
	}
	s.ownView(w, r.Context(), res.Position, projections.CardsName)
	c, err = s.card(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewCard(c, s.d.Now()))
}
