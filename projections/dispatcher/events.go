package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/commands"
	"github.com/waqueue/waqueue/domain/connection"
)

// Results of waqueue_dispatcher_transport_events_total.
const (
	eventRecorded = "recorded" // a command recorded the event
	eventRefused  = "refused"  // the domain refused it (already so, unknown connection or message)
	eventIgnored  = "ignored"  // nothing to record (no domain event, or a receipt no one can place)
	eventError    = "error"    // a store failure; logged
)

// handleEvent is the transport's event handler: it turns each event into commands, in the order
// the transport observed them, from the transport's delivering goroutine.
func (d *Dispatcher) handleEvent(e transport.Event) {
	d.mu.Lock()
	ctx := d.ctx
	d.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	h := e.Header()
	typ, err := d.apply(ctx, e)
	result := eventRecorded
	switch {
	case err == nil:
	case errors.Is(err, errIgnored):
		result = eventIgnored
	case commands.IsRefusal(err) || errors.Is(err, eventstore.ErrDuplicateEventID):
		result = eventRefused
		d.log.Debug("transport event refused by the domain", "type", typ, "connection", h.ConnectionID, "err", err)
	default:
		result = eventError
		d.log.Error("recording a transport event failed", "type", typ, "connection", h.ConnectionID, "err", err)
	}
	d.m.events.WithLabelValues(typ, result).Inc()
}

// errIgnored marks an event with nothing to record.
var errIgnored = errors.New("dispatcher: event ignored")

// apply records e and returns its metric label.
func (d *Dispatcher) apply(ctx context.Context, e transport.Event) (string, error) {
	id := e.Header().ConnectionID
	switch ev := e.(type) {
	case transport.Paired:
		return "paired", d.as(ctx, id, func(pctx context.Context) error {
			_, err := d.pair.Handle(pctx, commands.PairingSucceeded{ConnectionID: id, JID: ev.JID})
			return err
		})
	case transport.SessionInvalidated:
		return "session_invalidated", d.as(ctx, id, func(pctx context.Context) error {
			_, err := d.invalid.Handle(pctx, commands.SessionInvalidated{ConnectionID: id, Reason: strconv.Itoa(ev.Reason)})
			return err
		})
	case transport.PermanentBan:
		d.m.bans.WithLabelValues(connection.BanPermanent.String()).Inc()
		d.log.Warn("connection permanently banned", "connection", id, "reason", ev.Reason)
		return "permanent_ban", d.as(ctx, id, func(pctx context.Context) error {
			_, err := d.ban.Handle(pctx, commands.ReportBan{ConnectionID: id, Kind: connection.BanPermanent, ReasonCode: strconv.Itoa(ev.Reason)})
			return err
		})
	case transport.TemporaryBan:
		d.m.bans.WithLabelValues(connection.BanTemporary.String()).Inc()
		d.log.Warn("connection temporarily banned", "connection", id, "code", ev.Code, "expires_at", ev.ExpiresAt)
		return "temporary_ban", d.as(ctx, id, func(pctx context.Context) error {
			_, err := d.ban.Handle(pctx, commands.ReportBan{ConnectionID: id, Kind: connection.BanTemporary,
				ExpiresAt: ev.ExpiresAt.UTC(), ReasonCode: strconv.Itoa(ev.Code)})
			return err
		})
	case transport.BanLifted:
		d.log.Info("ban lifted", "connection", id)
		return "ban_lifted", d.as(ctx, id, func(pctx context.Context) error {
			_, err := d.lift.Handle(pctx, commands.LiftBan{ConnectionID: id, Reason: "transport reconnected after the ban expired"})
			return err
		})
	case transport.Receipt:
		return "receipt_" + ev.Kind.String(), d.receipt(ctx, id, ev)
	case transport.StreamReplaced:
		d.log.Warn("another client took over the session; not reconnecting", "connection", id)
		return "stream_replaced", d.problemObserved(ctx, id, connection.ProblemStreamReplaced, "", "another client took over the session")
	case transport.ClientOutdated:
		d.log.Error("WhatsApp refuses this client version; not reconnecting", "connection", id)
		return "client_outdated", d.problemObserved(ctx, id, connection.ProblemClientOutdated, "405", "WhatsApp refuses this client version")
	case transport.KeepAliveTimeout:
		d.log.Warn("keepalive failing", "connection", id, "errors", ev.ErrorCount, "last_success", ev.LastSuccess)
		if ev.ErrorCount > 1 {
			// Recorded once per streak of failures: the transport reports every failed ping.
			return "keepalive_timeout", errIgnored
		}
		detail := "keepalive pings failing"
		if !ev.LastSuccess.IsZero() {
			detail += "; last success " + ev.LastSuccess.UTC().Format(time.RFC3339)
		}
		return "keepalive_timeout", d.problemObserved(ctx, id, connection.ProblemKeepAliveTimeout, "", detail)
	case transport.ConnectFailure:
		d.log.Warn("login refused", "connection", id, "reason", ev.Reason, "message", ev.Message)
		return "connect_failure", d.problemObserved(ctx, id, connection.ProblemConnectFailure, strconv.Itoa(ev.Reason), ev.Message)
	case transport.Connected:
		return "connected", errIgnored
	case transport.QRCode:
		return "qr_code", errIgnored
	case transport.PairingCode:
		return "pairing_code", errIgnored
	case transport.PairingFailed:
		return "pairing_failed", errIgnored
	}
	return fmt.Sprintf("%T", e), errIgnored
}

// problemObserved records a TransportProblemObserved through RecordTransportProblem. detail is
// made valid UTF-8 and cut to connection.MaxNoteLen bytes: the transport's text must not make
// the domain refuse the observation.
func (d *Dispatcher) problemObserved(ctx context.Context, connID string, kind connection.TransportProblemKind, reason, detail string) error {
	return d.as(ctx, connID, func(pctx context.Context) error {
		_, err := d.problem.Handle(pctx, commands.RecordTransportProblem{ConnectionID: connID, Kind: kind,
			Reason: reason, Detail: clip(detail, connection.MaxNoteLen)})
		return err
	})
}

// clip returns s as valid UTF-8 of at most n bytes, cut at a rune boundary.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// as runs do acting as the system principal of the connection's tenant.
func (d *Dispatcher) as(ctx context.Context, connID string, do func(context.Context) error) error {
	pctx, err := d.asSystem(ctx, connID)
	if err != nil {
		return err
	}
	return do(pctx)
}

// receipt records a delivered or read receipt for each message it can place. A message no
// source knows (not ours, purged, from before the locator's reach) is skipped silently.
func (d *Dispatcher) receipt(ctx context.Context, connID string, r transport.Receipt) error {
	if r.Kind != transport.ReceiptDelivered && r.Kind != transport.ReceiptRead {
		return errIgnored
	}
	pctx, err := d.asSystem(ctx, connID)
	if err != nil {
		return err
	}
	var errs []error
	placed := 0
	for _, id := range r.MessageIDs {
		seq, ok := d.locate(pctx, connID, id)
		if !ok {
			continue
		}
		placed++
		ref := commands.MessageRef{ConnectionID: connID, MessageID: id, Seq: seq}
		if r.Kind == transport.ReceiptDelivered {
			_, err = d.deliv.Handle(pctx, commands.RecordDelivered{MessageRef: ref})
		} else {
			_, err = d.read.Handle(pctx, commands.RecordRead{MessageRef: ref})
		}
		switch {
		case err == nil || errors.Is(err, eventstore.ErrDuplicateEventID):
		case commands.IsRefusal(err):
			// A receipt for a message WhatsApp never had from us (purged, expired, failed, never
			// dispatched): not recorded, counted and logged, never fatal.
			d.m.refused.WithLabelValues(r.Kind.String()).Inc()
			d.log.Info("receipt refused by the domain", "kind", r.Kind.String(), "connection", connID, "message", id, "seq", seq, "err", err)
		default:
			errs = append(errs, err)
		}
	}
	if placed == 0 {
		return errIgnored
	}
	return errors.Join(errs...)
}

// locate finds a message's Seq: in the index of messages dispatched here, in the aggregate's
// in-flight set, then through the Locator.
func (d *Dispatcher) locate(ctx context.Context, connID string, id uuid.UUID) (uint64, bool) {
	if seq, ok := d.recentSeq(connID, id); ok {
		return seq, true
	}
	var seq uint64
	found := false
	_ = d.cfg.Repository.View(ctx, connID, func(c *connection.Connection) error {
		for _, m := range c.InFlight() {
			if m.MessageID == id {
				seq, found = m.Seq, true
			}
		}
		return nil
	})
	if found || d.cfg.Locator == nil {
		return seq, found
	}
	t, err := d.tenant(ctx, connID)
	if err != nil {
		return 0, false
	}
	seq, err = d.cfg.Locator.MessageSeq(ctx, t, connID, id)
	return seq, err == nil
}
