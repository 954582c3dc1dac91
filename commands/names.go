package commands

// Command is a command that can travel on the command bus. CommandName is its stable, explicit
// name on the bus (the message's "name" metadata and its topic); it never changes and never
// comes from reflection, so a renamed Go type does not cut queued commands off.
type Command interface {
	CommandName() string
}

// Stable command names. Never change one: brokers hold messages carrying them.
const (
	NameRegisterConnection     = "waqueue.RegisterConnection"
	NameSetOnBanPolicy         = "waqueue.SetOnBanPolicy"
	NamePairingSucceeded       = "waqueue.PairingSucceeded"
	NameSessionInvalidated     = "waqueue.SessionInvalidated"
	NameReportBan              = "waqueue.ReportBan"
	NameLiftBan                = "waqueue.LiftBan"
	NameEnqueueMessage         = "waqueue.EnqueueMessage"
	NameStartBroadcast         = "waqueue.StartBroadcast"
	NameDispatchNext           = "waqueue.DispatchNext" // not served by the bus (see Handlers)
	NameRecordSent             = "waqueue.RecordSent"
	NameRecordDelivered        = "waqueue.RecordDelivered"
	NameRecordRead             = "waqueue.RecordRead"
	NameRecordFailed           = "waqueue.RecordFailed"
	NameRecordOutcomeUnknown   = "waqueue.RecordOutcomeUnknown"
	NameExpireMessage          = "waqueue.ExpireMessage"
	NameHoldQueue              = "waqueue.HoldQueue"
	NameResumeQueue            = "waqueue.ResumeQueue"
	NameRequestClear           = "waqueue.RequestClear"
	NameCompleteClear          = "waqueue.CompleteClear"
	NameRecordTransportProblem = "waqueue.RecordTransportProblem"
	NameDeferSend              = "waqueue.DeferSend" // not served by the bus (see Handlers)
	NameRetrySend              = "waqueue.RetrySend" // not served by the bus (see Handlers)
	NameCancelMessage          = "waqueue.CancelMessage"
	NameSetSendingPolicy       = "waqueue.SetSendingPolicy"
)

// BusCommandNames returns the commands the command processor serves, in a stable order: those
// an API key may issue. Transport-originated commands (pairing, session loss, bans, dispatch,
// outcomes, expiry, clear completion, transport problems) are never among them: only the node's
// own transport, dispatcher and processes issue those, in process, as SystemPrincipal.
func BusCommandNames() []string {
	return []string{NameRegisterConnection, NameSetOnBanPolicy, NameEnqueueMessage, NameStartBroadcast,
		NameHoldQueue, NameResumeQueue, NameRequestClear, NameCancelMessage, NameSetSendingPolicy}
}

func (RegisterConnection) CommandName() string     { return NameRegisterConnection }
func (SetOnBanPolicy) CommandName() string         { return NameSetOnBanPolicy }
func (CancelMessage) CommandName() string          { return NameCancelMessage }
func (SetSendingPolicy) CommandName() string       { return NameSetSendingPolicy }
func (PairingSucceeded) CommandName() string       { return NamePairingSucceeded }
func (SessionInvalidated) CommandName() string     { return NameSessionInvalidated }
func (ReportBan) CommandName() string              { return NameReportBan }
func (LiftBan) CommandName() string                { return NameLiftBan }
func (EnqueueMessage) CommandName() string         { return NameEnqueueMessage }
func (StartBroadcast) CommandName() string         { return NameStartBroadcast }
func (DispatchNext) CommandName() string           { return NameDispatchNext }
func (RecordSent) CommandName() string             { return NameRecordSent }
func (RecordDelivered) CommandName() string        { return NameRecordDelivered }
func (RecordRead) CommandName() string             { return NameRecordRead }
func (RecordFailed) CommandName() string           { return NameRecordFailed }
func (RecordOutcomeUnknown) CommandName() string   { return NameRecordOutcomeUnknown }
func (ExpireMessage) CommandName() string          { return NameExpireMessage }
func (HoldQueue) CommandName() string              { return NameHoldQueue }
func (ResumeQueue) CommandName() string            { return NameResumeQueue }
func (RequestClear) CommandName() string           { return NameRequestClear }
func (CompleteClear) CommandName() string          { return NameCompleteClear }
func (RecordTransportProblem) CommandName() string { return NameRecordTransportProblem }
func (DeferSend) CommandName() string              { return NameDeferSend }
func (RetrySend) CommandName() string              { return NameRetrySend }
