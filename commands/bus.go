package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/waqueue/waqueue/adapters/eventstore"
	"github.com/waqueue/waqueue/domain/auth"
	"github.com/waqueue/waqueue/domain/connection"
)

// Metadata keys of a bus command.
const (
	// MetaCredential holds the command's credential: a short-lived broker token minted for a
	// principal (adapters/apikeys.Tokens), never an API key, since brokers persist messages.
	// The principal itself never travels on the bus: a message cannot claim one.
	MetaCredential = "waqueue_credential"
	// MetaTenant holds the tenant the command is for. A broker sets it on delivery from where
	// the message arrived (on NATS the tenant token of its subject, which the server's
	// permissions guard), overwriting whatever the publisher wrote; the processor refuses a
	// command whose principal belongs to another tenant, or that names none.
	MetaTenant = "waqueue_tenant"
	// MetaStoredAt holds when the broker stored the message (RFC 3339, set on delivery by the
	// broker, never by the publisher). A credential is judged as of that time, so a command
	// accepted by the broker while its token was valid is not refused for waiting in the queue.
	MetaStoredAt = "waqueue_stored_at"
)

// Credential is what a bus message offers to authenticate its command.
type Credential struct {
	// Token is the MetaCredential metadata.
	Token string
	// At is when the broker stored the message (MetaStoredAt), or when the processor received
	// it if the broker does not say.
	At time.Time
}

// Authenticator turns the credential of a bus command into the principal it stands for; an
// unknown, expired or revoked credential is an error. It must never return the system
// principal (the processor refuses it).
type Authenticator interface {
	AuthenticateCommand(ctx context.Context, c Credential) (auth.Principal, error)
}

// marshaler names commands by CommandName, never by reflection.
var marshaler = cqrs.JSONMarshaler{GenerateName: func(v any) string {
	if c, ok := v.(Command); ok {
		return c.CommandName()
	}
	return "" // refused by CommandBus.Send before it gets here
}}

// topic is the topic of a command name.
func topic(commandName string) string { return commandName }

// NewInProcessPubSub returns the default in-process pub/sub for commands: a watermill GoChannel
// that does not persist messages (a broker replaces it in a scale-out deployment).
func NewInProcessPubSub(logger watermill.LoggerAdapter) *gochannel.GoChannel {
	return gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, logger)
}

// CommandBus sends commands to the processor over a message.Publisher.
type CommandBus struct {
	bus *cqrs.CommandBus
}

// NewCommandBus returns a bus publishing on pub (a GoChannel from NewInProcessPubSub, or a
// broker's publisher). logger may be nil.
func NewCommandBus(pub message.Publisher, logger watermill.LoggerAdapter) (*CommandBus, error) {
	if pub == nil {
		return nil, errors.New("commands: NewCommandBus: nil publisher")
	}
	b, err := cqrs.NewCommandBusWithConfig(pub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			return topic(p.CommandName), nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("commands: NewCommandBus: %w", err)
	}
	return &CommandBus{bus: b}, nil
}

// Send publishes cmd for tenantID with the caller's credential (a broker token: never an API
// key, which the broker would persist) and the correlation id of ctx (a new one if ctx has
// none). It returns once the publisher accepted the message; the command is handled
// asynchronously, and its refusals are logged by the processor, not returned here. A caller that
// needs the answer (an HTTP request that must get 409 while clearing) calls the handler
// synchronously instead.
func (b *CommandBus) Send(ctx context.Context, tenantID, credential string, cmd Command) error {
	if cmd == nil || cmd.CommandName() == "" {
		return errors.New("commands: Send: command without a name")
	}
	if tenantID == "" {
		return errors.New("commands: Send: no tenant")
	}
	corr := CorrelationIDFromContext(ctx)
	if corr == "" {
		corr = watermill.NewUUID()
	}
	return b.bus.SendWithModifiedMessage(ctx, cmd, func(m *message.Message) error {
		m.Metadata.Set(MetaCredential, credential)
		m.Metadata.Set(MetaTenant, tenantID)
		middleware.SetCorrelationID(corr, m)
		return nil
	})
}

// Handlers holds every command handler; NewHandlers builds them. The processor serves only the
// commands of BusCommandNames (a nil handler is not served): the transport-originated ones are
// in the struct for the node's own processes (the clearing process completes clears with
// CompleteClear) and are never subscribed to, whatever the processor is given. DispatchNext is
// absent: its answer (what to send) is the point of the command; the dispatcher calls its
// handler directly.
type Handlers struct {
	RegisterConnection     *RegisterConnectionHandler
	SetOnBanPolicy         *SetOnBanPolicyHandler
	SetSendingPolicy       *SetSendingPolicyHandler
	PairingSucceeded       *PairingSucceededHandler
	SessionInvalidated     *SessionInvalidatedHandler
	ReportBan              *ReportBanHandler
	LiftBan                *LiftBanHandler
	EnqueueMessage         *EnqueueMessageHandler
	StartBroadcast         *StartBroadcastHandler
	RecordSent             *RecordSentHandler
	RecordDelivered        *RecordDeliveredHandler
	RecordRead             *RecordReadHandler
	RecordFailed           *RecordFailedHandler
	RecordOutcomeUnknown   *RecordOutcomeUnknownHandler
	ExpireMessage          *ExpireMessageHandler
	HoldQueue              *HoldQueueHandler
	ResumeQueue            *ResumeQueueHandler
	RequestClear           *RequestClearHandler
	CancelMessage          *CancelMessageHandler
	CompleteClear          *CompleteClearHandler
	RecordTransportProblem *RecordTransportProblemHandler
	// UnpairConnection and RetireConnection are served by the HTTP API only (not on the bus).
	UnpairConnection *UnpairConnectionHandler
	RetireConnection *RetireConnectionHandler
	// HoldForTenant and ResumeForTenant serve the platform operator's tenant suspension (HTTP
	// only, no broker command).
	HoldForTenant   *HoldForTenantHandler
	ResumeForTenant *ResumeForTenantHandler
}

// ProcessorConfig configures RegisterProcessor.
type ProcessorConfig struct {
	// Router the processor's handlers are added to; NewRouter makes one with the recommended
	// middleware. Required.
	Router *message.Router
	// Subscriber delivers the commands (the GoChannel the CommandBus publishes on, or a broker's
	// subscriber). Required.
	Subscriber message.Subscriber
	// Authenticator turns each message's credential into its principal. Required.
	Authenticator Authenticator
	// Handlers to serve; at least one.
	Handlers Handlers
	// Logger; nil means no logging.
	Logger watermill.LoggerAdapter
}

// Validate reports every problem of the config.
func (c ProcessorConfig) Validate() error {
	var err error
	if c.Router == nil {
		err = errors.Join(err, errors.New("commands: ProcessorConfig: missing Router"))
	}
	if c.Subscriber == nil {
		err = errors.Join(err, errors.New("commands: ProcessorConfig: missing Subscriber"))
	}
	if c.Authenticator == nil {
		err = errors.Join(err, errors.New("commands: ProcessorConfig: missing Authenticator"))
	}
	return err
}

// NewRouter returns a watermill router with the middleware the command processor wants:
// Recoverer (a panicking handler nacks its message instead of killing the process),
// CorrelationID (carried to anything the handler publishes) and Retry of transient failures
// (store errors and exhausted conflicts; never refusals, which the processor acknowledges). Run it with Run(ctx).
func NewRouter(logger watermill.LoggerAdapter) (*message.Router, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	r, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return nil, fmt.Errorf("commands: NewRouter: %w", err)
	}
	r.AddMiddleware(
		middleware.Recoverer,
		middleware.CorrelationID,
		middleware.Retry{MaxRetries: 3, InitialInterval: 50 * time.Millisecond, Multiplier: 2, Logger: logger}.Middleware,
	)
	return r, nil
}

// RegisterProcessor adds a CQRS command processor serving cfg.Handlers to cfg.Router. For each
// message it authenticates the credential (MetaCredential), puts the principal, the correlation
// id and the causation id (the message's UUID) in the context and calls the handler. Refusals
// (authentication, authorization, not found, domain refusals) are logged and the message is
// acknowledged, since redelivering it cannot change the answer; other errors (store failures,
// conflicts that outlasted the handler's own retries) nack it, and the router's Retry
// middleware (NewRouter) or the broker redelivers it.
func RegisterProcessor(cfg ProcessorConfig) (*cqrs.CommandProcessor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	hs := cqrsHandlers(cfg.Handlers)
	if len(hs) == 0 {
		return nil, errors.New("commands: RegisterProcessor: no handlers")
	}
	p, err := cqrs.NewCommandProcessorWithConfig(cfg.Router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return topic(p.CommandName), nil
		},
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return cfg.Subscriber, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
		OnHandle: func(p cqrs.CommandProcessorOnHandleParams) error {
			ctx := p.Message.Context()
			principal, err := authenticate(ctx, cfg.Authenticator, p.Message)
			if err != nil {
				logger.Error("commands: bus command refused", fmt.Errorf("%w: %w", ErrUnauthenticated, err),
					watermill.LogFields{"command": p.CommandName, "message_uuid": p.Message.UUID})
				return nil
			}
			ctx = WithPrincipal(ctx, principal)
			ctx = WithCorrelationID(ctx, middleware.MessageCorrelationID(p.Message))
			ctx = WithCausationID(ctx, p.Message.UUID)
			err = p.Handler.Handle(ctx, p.Command)
			if err != nil && IsRefusal(err) {
				logger.Info("commands: bus command refused", watermill.LogFields{
					"command": p.CommandName, "message_uuid": p.Message.UUID, "error": err.Error()})
				return nil
			}
			return err
		},
	})
	if err != nil {
		return nil, fmt.Errorf("commands: RegisterProcessor: %w", err)
	}
	if err := p.AddHandlers(hs...); err != nil {
		return nil, fmt.Errorf("commands: RegisterProcessor: %w", err)
	}
	return p, nil
}

// authenticate returns the principal of m's credential, refusing one of another tenant than
// the one m arrived for (MetaTenant) and the system principal.
func authenticate(ctx context.Context, a Authenticator, m *message.Message) (auth.Principal, error) {
	tenant := m.Metadata.Get(MetaTenant)
	if tenant == "" {
		return auth.Principal{}, errors.New("commands: bus command without a tenant")
	}
	at := time.Now().UTC()
	if s := m.Metadata.Get(MetaStoredAt); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return auth.Principal{}, fmt.Errorf("commands: bus command stored at %q: %w", s, err)
		}
		at = t
	}
	p, err := a.AuthenticateCommand(ctx, Credential{Token: m.Metadata.Get(MetaCredential), At: at})
	if err != nil {
		return auth.Principal{}, err
	}
	if p.IsSystem() {
		// An Authenticator must never yield the node's own principal; refuse rather than let
		// a message act as the node.
		return auth.Principal{}, errors.New("commands: a bus credential authenticated as the system principal")
	}
	if p.TenantID != tenant {
		return auth.Principal{}, fmt.Errorf("commands: a credential of tenant %q on a command for tenant %q", p.TenantID, tenant)
	}
	return p, nil
}

// IsRefusal reports whether err is a final answer to a command (retrying the same command cannot
// change it): unauthenticated, forbidden, not found, a domain refusal, a duplicate event id or
// nothing dispatchable. A *ConflictError is not a refusal: a later attempt may succeed.
func IsRefusal(err error) bool {
	if _, ok := connection.ErrorCode(err); ok {
		return true
	}
	for _, target := range []error{ErrUnauthenticated, ErrNotFound, ErrNotDispatchable,
		auth.ErrForbidden, auth.ErrWrongTenant, eventstore.ErrDuplicateEventID, connection.ErrInvalidCommand} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func handler[C Command, R any](h interface {
	Handle(context.Context, C) (R, error)
}) cqrs.CommandHandler {
	var zero C
	return cqrs.NewCommandHandler(zero.CommandName(), func(ctx context.Context, cmd *C) error {
		_, err := h.Handle(ctx, *cmd)
		return err
	})
}

// cqrsHandlers returns the processor's handlers: the commands of BusCommandNames whose handler
// is set. Transport-originated handlers are ignored on purpose (see Handlers).
func cqrsHandlers(h Handlers) []cqrs.CommandHandler {
	var out []cqrs.CommandHandler
	add := func(ok bool, ch func() cqrs.CommandHandler) {
		if ok {
			out = append(out, ch())
		}
	}
	add(h.RegisterConnection != nil, func() cqrs.CommandHandler { return handler[RegisterConnection](h.RegisterConnection) })
	add(h.SetOnBanPolicy != nil, func() cqrs.CommandHandler { return handler[SetOnBanPolicy](h.SetOnBanPolicy) })
	add(h.EnqueueMessage != nil, func() cqrs.CommandHandler { return handler[EnqueueMessage](h.EnqueueMessage) })
	add(h.StartBroadcast != nil, func() cqrs.CommandHandler { return handler[StartBroadcast](h.StartBroadcast) })
	add(h.HoldQueue != nil, func() cqrs.CommandHandler { return handler[HoldQueue](h.HoldQueue) })
	add(h.ResumeQueue != nil, func() cqrs.CommandHandler { return handler[ResumeQueue](h.ResumeQueue) })
	add(h.RequestClear != nil, func() cqrs.CommandHandler { return handler[RequestClear](h.RequestClear) })
	add(h.CancelMessage != nil, func() cqrs.CommandHandler { return handler[CancelMessage](h.CancelMessage) })
	add(h.SetSendingPolicy != nil, func() cqrs.CommandHandler { return handler[SetSendingPolicy](h.SetSendingPolicy) })
	return out
}
