package connection

import "strings"

// Reason is a ban or logout reason in words: a stable code for programs and a plain description
// for people. The transport reports bare numbers (WhatsApp's temporary-ban codes 101–106, its
// logout and connect-failure codes 401–406); ExplainBan and ExplainLogout translate them.
type Reason struct {
	// Code is stable: API clients match on it; it never changes once released.
	Code string `json:"code"`
	// Description says what happened in plain words. It may be reworded; match on Code.
	Description string `json:"description"`
}

// Stable reason codes of bans and logouts.
const (
	// Temporary bans (WhatsApp's TempBanReason, as go.mau.fi/whatsmeow names them).
	ReasonSentToTooManyPeople    = "sent_to_too_many_people"    // 101
	ReasonBlockedByUsers         = "blocked_by_users"           // 102
	ReasonCreatedTooManyGroups   = "created_too_many_groups"    // 103
	ReasonSentTooManySameMessage = "sent_too_many_same_message" // 104
	ReasonBroadcastList          = "broadcast_list"             // 106
	// ReasonUnspecifiedBan: a ban code WhatsApp gave without a known meaning (105 among them:
	// whatsmeow knows no meaning for it either) or none at all.
	ReasonUnspecifiedBan = "unspecified_ban"
	// ReasonAccountBanned: a permanent ban (WhatsApp's logout code 406, "BANNED" in WhatsApp Web).
	ReasonAccountBanned = "account_banned"

	// Logouts (WhatsApp's connect-failure codes).
	ReasonLoggedOut      = "logged_out"       // 401
	ReasonMainDeviceGone = "main_device_gone" // 403
	// ReasonUnspecifiedLogout: a logout code without a known meaning, or none.
	ReasonUnspecifiedLogout = "unspecified_logout"
	// ReasonUnpaired: an operator logged the session out through the API (Unpair); the
	// transport reason recorded is LogoutUnpaired.
	ReasonUnpaired = "unpaired"
)

// LogoutUnpaired is the SessionInvalidated.Reason of an operator's logout (Unpair).
const LogoutUnpaired = "unpaired"

var banReasons = map[string]Reason{
	"101": {ReasonSentToTooManyPeople, "Too many messages went to people who do not have this number in their address book."},
	"102": {ReasonBlockedByUsers, "Too many people blocked this number."},
	"103": {ReasonCreatedTooManyGroups, "Too many groups were created with people who do not have this number in their address book."},
	"104": {ReasonSentTooManySameMessage, "The same message went to too many people."},
	"106": {ReasonBroadcastList, "Too many messages went to a broadcast list."},
	"406": {ReasonAccountBanned, "WhatsApp banned the number and logged it out (code 406)."},
}

var logoutReasons = map[string]Reason{
	"401":          {ReasonLoggedOut, "The session was logged out, from the phone or another linked device."},
	"403":          {ReasonMainDeviceGone, "The phone's WhatsApp was logged out or reinstalled; this also happens with some bans."},
	"406":          {ReasonAccountBanned, "WhatsApp banned the number and logged it out (code 406)."},
	LogoutUnpaired: {ReasonUnpaired, "An operator logged the session out (unpaired the number) through the API; pair it again to send."},
}

var (
	unspecifiedBan    = Reason{ReasonUnspecifiedBan, "WhatsApp gave no known reason; it may be a violation of its terms of service."}
	unspecifiedLogout = Reason{ReasonUnspecifiedLogout, "WhatsApp gave no known reason for the logout."}
)

// ExplainBan returns the reason of a ban with the transport's reason code (a temporary-ban code
// such as "101", or "406" for a permanent ban). An unknown or empty code is unspecified_ban,
// except that a permanent ban without a known code is account_banned. It is pure.
func ExplainBan(kind BanKind, reasonCode string) Reason {
	if r, ok := banReasons[strings.TrimSpace(reasonCode)]; ok {
		return r
	}
	if kind == BanPermanent {
		return banReasons["406"]
	}
	return unspecifiedBan
}

// ExplainLogout returns the reason of a session loss with the transport's reason code ("401",
// "403", ...); an unknown or empty code is unspecified_logout. It is pure.
func ExplainLogout(reasonCode string) Reason {
	if r, ok := logoutReasons[strings.TrimSpace(reasonCode)]; ok {
		return r
	}
	return unspecifiedLogout
}

// ReasonCodes returns every stable reason code ExplainBan and ExplainLogout can return.
func ReasonCodes() []string {
	return []string{ReasonSentToTooManyPeople, ReasonBlockedByUsers, ReasonCreatedTooManyGroups,
		ReasonSentTooManySameMessage, ReasonBroadcastList, ReasonUnspecifiedBan, ReasonAccountBanned,
		ReasonLoggedOut, ReasonMainDeviceGone, ReasonUnspecifiedLogout, ReasonUnpaired}
}
