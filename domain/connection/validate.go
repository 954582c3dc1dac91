package connection

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// Limits of commands.
const (
	// MaxTextRunes is the longest message text, in Unicode code points.
	MaxTextRunes = 4096
	// MaxRecipients is the largest broadcast.
	MaxRecipients = 100_000
	// MaxTTL is the longest message TTL.
	MaxTTL = 30 * 24 * time.Hour
	// MaxIDLen is the longest connection or tenant id.
	MaxIDLen = 64
	// MaxKeyLen is the longest idempotency key.
	MaxKeyLen = 255
	// MaxInFlight bounds the messages dispatched and not yet acknowledged on one connection,
	// and so the aggregate's in-flight set (WhatsApp sends one message at a time per client).
	MaxInFlight = 256
	// MaxReceiptRanges bounds the ranges of queue positions the aggregate remembers as handed
	// over, for delivered and read receipts (see Connection).
	MaxReceiptRanges = 1024
	// MaxNoteLen is the longest free text (reason, note, actor).
	MaxNoteLen = 1024
)

// Code is a stable validation error code, usable by the HTTP layer as the error code of a 400.
type Code string

// Validation error codes. Never change one: API clients match on them.
const (
	CodeInvalidID             Code = "invalid_id"
	CodeInvalidPhone          Code = "invalid_phone"
	CodeTextEmpty             Code = "text_empty"
	CodeTextTooLong           Code = "text_too_long"
	CodeInvalidText           Code = "invalid_text"
	CodeInvalidTTL            Code = "invalid_ttl"
	CodeNoRecipients          Code = "no_recipients"
	CodeTooManyRecipients     Code = "too_many_recipients"
	CodeDuplicateRecipient    Code = "duplicate_recipient"
	CodeMissingActor          Code = "missing_actor"
	CodeMissingReason         Code = "missing_reason"
	CodeTooLong               Code = "too_long"
	CodeMissingIdempotencyKey Code = "missing_idempotency_key"
	CodeInvalidBan            Code = "invalid_ban"
	CodeInvalidPolicy         Code = "invalid_policy"
	CodeMissingMessage        Code = "missing_message"
	CodeInvalidProblemKind    Code = "invalid_problem_kind"
	// CodeInvalidThen: a clear's "then" is not keep, hold or resume.
	CodeInvalidThen Code = "invalid_then"
	// CodeInvalidSendingPolicy: a sending policy setting out of its bounds (see SendingPolicy).
	CodeInvalidSendingPolicy Code = "invalid_sending_policy"
	// CodeInvalidTimeZone: a sending policy's time zone is not an IANA name that loads.
	CodeInvalidTimeZone Code = "invalid_time_zone"
)

// ValidationError is a command that failed validation. errors.Is(err, ErrInvalidCommand).
type ValidationError struct {
	Code Code
	// Field names the offending command field ("recipient", "text", "recipients", ...).
	Field string
	// Recipient is the 1-based position of the offending recipient in a broadcast's list; 0
	// when the error is not about one broadcast recipient.
	Recipient int
	// Detail explains the error for humans.
	Detail string
}

func (e *ValidationError) Error() string {
	if e.Recipient > 0 {
		return fmt.Sprintf("connection: invalid command: %s: recipient %d: %s (%s)", e.Field, e.Recipient, e.Detail, e.Code)
	}
	return fmt.Sprintf("connection: invalid command: %s: %s (%s)", e.Field, e.Detail, e.Code)
}

// Is makes errors.Is(err, ErrInvalidCommand) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidCommand }

func invalid(code Code, field, format string, args ...any) *ValidationError {
	return &ValidationError{Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// ValidateID checks a connection or tenant id: 1 to MaxIDLen characters out of ASCII letters,
// digits, '-', '_' and '.'.
func ValidateID(field, id string) error {
	if id == "" || len(id) > MaxIDLen {
		return invalid(CodeInvalidID, field, "must be 1 to %d characters", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return invalid(CodeInvalidID, field, "invalid character %q", c)
		}
	}
	return nil
}

// NormalizePhone validates raw as a phone number and returns it in E.164. A number without a
// leading '+' is read as a national number of defaultRegion (an ISO 3166-1 alpha-2 code such
// as "DE"; "" accepts only international numbers). Errors are *ValidationError with
// CodeInvalidPhone.
func NormalizePhone(field, raw, defaultRegion string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" || len(s) > 64 {
		return "", invalid(CodeInvalidPhone, field, "must be a phone number")
	}
	if e164, ok := e164Fast(s); ok {
		return e164, nil
	}
	if defaultRegion == "" {
		defaultRegion = "ZZ"
	}
	n, err := phonenumbers.Parse(s, defaultRegion)
	if err != nil {
		return "", invalid(CodeInvalidPhone, field, "%q is not a phone number: %v", raw, err)
	}
	if !phonenumbers.IsValidNumber(n) {
		return "", invalid(CodeInvalidPhone, field, "%q is not a valid phone number", raw)
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

// regionOf returns the region of an E.164 number, or "" if unknown.
func regionOf(e164 string) string {
	n, err := phonenumbers.Parse(e164, "ZZ")
	if err != nil {
		return ""
	}
	r := phonenumbers.GetRegionCodeForNumber(n)
	if r == "ZZ" {
		return ""
	}
	return r
}

// ValidateText checks a message text: valid UTF-8, not blank, at most MaxTextRunes code points.
func ValidateText(text string) error {
	if !utf8.ValidString(text) {
		return invalid(CodeInvalidText, "text", "must be valid UTF-8")
	}
	if strings.TrimSpace(text) == "" {
		return invalid(CodeTextEmpty, "text", "must not be empty")
	}
	if n := utf8.RuneCountInString(text); n > MaxTextRunes {
		return invalid(CodeTextTooLong, "text", "has %d characters, at most %d allowed", n, MaxTextRunes)
	}
	return nil
}

// ValidateTTL checks a message TTL: zero (never expires) or positive up to MaxTTL.
func ValidateTTL(ttl time.Duration) error {
	if ttl < 0 || ttl > MaxTTL {
		return invalid(CodeInvalidTTL, "ttl", "must be between 0 (none) and %s", MaxTTL)
	}
	return nil
}

func validateActor(actor string) error {
	if strings.TrimSpace(actor) == "" {
		return invalid(CodeMissingActor, "actor", "must name who acts")
	}
	if len(actor) > MaxNoteLen {
		return invalid(CodeTooLong, "actor", "at most %d bytes", MaxNoteLen)
	}
	return nil
}

func validateNote(field, s string, required bool) error {
	if required && strings.TrimSpace(s) == "" {
		return invalid(CodeMissingReason, field, "must not be empty")
	}
	if len(s) > MaxNoteLen || !utf8.ValidString(s) {
		return invalid(CodeTooLong, field, "at most %d bytes of UTF-8", MaxNoteLen)
	}
	return nil
}

// RegionOf returns the ISO 3166-1 region of an E.164 number ("" if unknown): the region
// NormalizePhone reads national numbers of a connection's recipients in.
func RegionOf(e164 string) string { return regionOf(e164) }
