package connection

import (
	"encoding/json"
	"fmt"
	"time"
)

// Sending-policy defaults. WhatsApp publishes no sending limits for linked devices (the
// unofficial multi-device protocol whatsmeow speaks); these are conservative heuristics from the
// ban-avoidance practice reported by operators of such clients — a few seconds between
// messages, randomised so that the rhythm does not look machine-made, and a daily ceiling well
// below what gets young numbers restricted — not numbers WhatsApp has published. See
// docs/operations.md, "Sending policy".
const (
	// DefaultMinInterval is the default least time between two messages of one connection.
	DefaultMinInterval = 3 * time.Second
	// DefaultJitter is the default largest random pause added to DefaultMinInterval.
	DefaultJitter = 2 * time.Second
	// DefaultDailyCap is the default most messages dispatched per connection and local day.
	DefaultDailyCap = 1000
	// DefaultTimeZone is the default IANA time zone of a connection: its day for the daily cap
	// and its quiet hours.
	DefaultTimeZone = "UTC"
)

// Sending-policy bounds. A policy outside them is refused (CodeInvalidSendingPolicy): the
// floor keeps a connection from being driven at machine speed, the ceilings keep a typo from
// lifting every limit.
const (
	// MinMinInterval is the floor of SendingPolicy.MinInterval.
	MinMinInterval = time.Second
	// MaxMinInterval is the ceiling of SendingPolicy.MinInterval.
	MaxMinInterval = time.Hour
	// MaxJitter is the ceiling of SendingPolicy.Jitter.
	MaxJitter = time.Hour
	// MaxDailyCap is the ceiling of SendingPolicy.DailyCap (which is at least 1).
	MaxDailyCap = 10_000
	// MaxTimeZoneLen is the longest IANA time zone name accepted.
	MaxTimeZoneLen = 64
)

// SendingPolicy is how the dispatcher paces one connection. The zero value reads as
// DefaultSendingPolicy (a connection whose history records no SendingPolicyChanged).
type SendingPolicy struct {
	// MinInterval is the least time between two messages handed to the transport.
	MinInterval time.Duration
	// Jitter is the largest random pause added to MinInterval (drawn uniformly in [0, Jitter]).
	Jitter time.Duration
	// DailyCap is the most messages dispatched per local day (midnight to midnight in TimeZone).
	DailyCap int
	// TimeZone is an IANA time zone name ("Europe/Berlin"): the day of DailyCap and the clock of
	// QuietHours. The domain checks its form; that it loads is checked by the commands (loading
	// the zone database is I/O).
	TimeZone string
	// QuietHours, when set, is a local time window in which nothing is dispatched: messages wait,
	// they do not fail.
	QuietHours *QuietHours
}

// QuietHours is a daily window of local time, [Start, End) in minutes after midnight. A window
// with Start > End spans midnight (22:00–07:00). Start == End is refused.
type QuietHours struct {
	Start, End ClockTime
}

// ClockTime is a time of day in minutes after midnight (0 to 1439), written "HH:MM".
type ClockTime int

// DefaultSendingPolicy returns the policy of a connection that never recorded one.
func DefaultSendingPolicy() SendingPolicy {
	return SendingPolicy{MinInterval: DefaultMinInterval, Jitter: DefaultJitter, DailyCap: DefaultDailyCap, TimeZone: DefaultTimeZone}
}

// orDefault returns p, or the default policy for the zero value.
func (p SendingPolicy) orDefault() SendingPolicy {
	if p.IsZero() {
		return DefaultSendingPolicy()
	}
	return p
}

// IsZero reports whether p is the zero SendingPolicy.
func (p SendingPolicy) IsZero() bool {
	return p.MinInterval == 0 && p.Jitter == 0 && p.DailyCap == 0 && p.TimeZone == "" && p.QuietHours == nil
}

// Equal reports whether p and q are the same policy.
func (p SendingPolicy) Equal(q SendingPolicy) bool {
	if p.MinInterval != q.MinInterval || p.Jitter != q.Jitter || p.DailyCap != q.DailyCap || p.TimeZone != q.TimeZone {
		return false
	}
	if (p.QuietHours == nil) != (q.QuietHours == nil) {
		return false
	}
	return p.QuietHours == nil || *p.QuietHours == *q.QuietHours
}

// Validate checks p against the bounds; the error is a *ValidationError with
// CodeInvalidSendingPolicy naming the field (in the API's terms: min_interval_seconds,
// jitter_seconds, daily_cap, time_zone, quiet_hours).
func (p SendingPolicy) Validate() error {
	const field = "sending_policy."
	switch {
	case p.MinInterval < MinMinInterval || p.MinInterval > MaxMinInterval || p.MinInterval%time.Second != 0:
		return invalid(CodeInvalidSendingPolicy, field+"min_interval_seconds", "must be whole seconds from %d to %d",
			int(MinMinInterval/time.Second), int(MaxMinInterval/time.Second))
	case p.Jitter < 0 || p.Jitter > MaxJitter || p.Jitter%time.Second != 0:
		return invalid(CodeInvalidSendingPolicy, field+"jitter_seconds", "must be whole seconds from 0 to %d", int(MaxJitter/time.Second))
	case p.DailyCap < 1 || p.DailyCap > MaxDailyCap:
		return invalid(CodeInvalidSendingPolicy, field+"daily_cap", "must be 1 to %d", MaxDailyCap)
	}
	if err := ValidateTimeZoneName(p.TimeZone); err != nil {
		return err
	}
	if q := p.QuietHours; q != nil {
		if !q.Start.Valid() || !q.End.Valid() {
			return invalid(CodeInvalidSendingPolicy, field+"quiet_hours", "start and end must be times of day, HH:MM")
		}
		if q.Start == q.End {
			return invalid(CodeInvalidSendingPolicy, field+"quiet_hours", "start and end must differ")
		}
	}
	return nil
}

// ValidateTimeZoneName checks the form of an IANA time zone name: 1 to MaxTimeZoneLen
// characters out of ASCII letters, digits, '/', '_', '+' and '-', not starting with '/', and not
// "Local" (the server's zone: not a zone of the connection). Whether the zone exists is for the caller to check (time.LoadLocation);
// both failures are CodeInvalidTimeZone.
func ValidateTimeZoneName(tz string) error {
	const field = "sending_policy.time_zone"
	if tz == "" || len(tz) > MaxTimeZoneLen || tz[0] == '/' || tz == "Local" {
		return invalid(CodeInvalidTimeZone, field, "must be an IANA time zone name such as Europe/Berlin")
	}
	for i := 0; i < len(tz); i++ {
		c := tz[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '_' || c == '+' || c == '-'
		if !ok {
			return invalid(CodeInvalidTimeZone, field, "invalid character %q in time zone name", c)
		}
	}
	return nil
}

// Valid reports whether t is a time of day (0 to 23:59).
func (t ClockTime) Valid() bool { return t >= 0 && t < 24*60 }

// String returns t as "HH:MM".
func (t ClockTime) String() string { return fmt.Sprintf("%02d:%02d", int(t)/60, int(t)%60) }

// ParseClockTime parses "HH:MM" (00:00 to 23:59).
func ParseClockTime(s string) (ClockTime, error) {
	digit := func(i int) (int, bool) { return int(s[i] - '0'), s[i] >= '0' && s[i] <= '9' }
	if len(s) == 5 && s[2] == ':' {
		h1, ok1 := digit(0)
		h2, ok2 := digit(1)
		m1, ok3 := digit(3)
		m2, ok4 := digit(4)
		h, m := h1*10+h2, m1*10+m2
		if ok1 && ok2 && ok3 && ok4 && h < 24 && m < 60 {
			return ClockTime(h*60 + m), nil
		}
	}
	return 0, fmt.Errorf("time of day %q: want HH:MM from 00:00 to 23:59", s)
}

// MarshalText implements encoding.TextMarshaler ("HH:MM").
func (t ClockTime) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *ClockTime) UnmarshalText(b []byte) error {
	v, err := ParseClockTime(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// String returns the window as "HH:MM–HH:MM".
func (q QuietHours) String() string { return q.Start.String() + "–" + q.End.String() }

// MarshalJSON writes {"start":"HH:MM","end":"HH:MM"}.
func (q QuietHours) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Start ClockTime `json:"start"`
		End   ClockTime `json:"end"`
	}{q.Start, q.End})
}

// UnmarshalJSON reads {"start":"HH:MM","end":"HH:MM"}.
func (q *QuietHours) UnmarshalJSON(b []byte) error {
	var v struct {
		Start ClockTime `json:"start"`
		End   ClockTime `json:"end"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	q.Start, q.End = v.Start, v.End
	return nil
}

// sendingPolicyJSON is the stored form of a SendingPolicy: explicit units, never Go's
// nanosecond durations.
type sendingPolicyJSON struct {
	MinIntervalMS int64       `json:"min_interval_ms"`
	JitterMS      int64       `json:"jitter_ms"`
	DailyCap      int         `json:"daily_cap"`
	TimeZone      string      `json:"time_zone"`
	QuietHours    *QuietHours `json:"quiet_hours,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (p SendingPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(sendingPolicyJSON{MinIntervalMS: p.MinInterval.Milliseconds(), JitterMS: p.Jitter.Milliseconds(),
		DailyCap: p.DailyCap, TimeZone: p.TimeZone, QuietHours: p.QuietHours})
}

// UnmarshalJSON implements json.Unmarshaler.
func (p *SendingPolicy) UnmarshalJSON(b []byte) error {
	var v sendingPolicyJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = SendingPolicy{MinInterval: time.Duration(v.MinIntervalMS) * time.Millisecond, Jitter: time.Duration(v.JitterMS) * time.Millisecond,
		DailyCap: v.DailyCap, TimeZone: v.TimeZone, QuietHours: v.QuietHours}
	return nil
}

// SendingPolicyPatch changes some settings of a SendingPolicy; nil fields keep the current
// value. It is what a partial update (PATCH) and a registration carry.
type SendingPolicyPatch struct {
	MinInterval *time.Duration `json:"min_interval,omitempty"`
	Jitter      *time.Duration `json:"jitter,omitempty"`
	DailyCap    *int           `json:"daily_cap,omitempty"`
	TimeZone    *string        `json:"time_zone,omitempty"`
	// QuietHours sets the quiet hours; NoQuietHours removes them (both set is refused).
	QuietHours   *QuietHours `json:"quiet_hours,omitempty"`
	NoQuietHours bool        `json:"no_quiet_hours,omitempty"`
}

// IsZero reports whether the patch changes nothing.
func (pt SendingPolicyPatch) IsZero() bool {
	return pt.MinInterval == nil && pt.Jitter == nil && pt.DailyCap == nil && pt.TimeZone == nil && pt.QuietHours == nil && !pt.NoQuietHours
}

// Apply returns p with the patch applied and validated (see SendingPolicy.Validate).
func (pt SendingPolicyPatch) Apply(p SendingPolicy) (SendingPolicy, error) {
	p = p.orDefault()
	if pt.MinInterval != nil {
		p.MinInterval = *pt.MinInterval
	}
	if pt.Jitter != nil {
		p.Jitter = *pt.Jitter
	}
	if pt.DailyCap != nil {
		p.DailyCap = *pt.DailyCap
	}
	if pt.TimeZone != nil {
		p.TimeZone = *pt.TimeZone
	}
	switch {
	case pt.QuietHours != nil && pt.NoQuietHours:
		return SendingPolicy{}, invalid(CodeInvalidSendingPolicy, "sending_policy.quiet_hours", "set and removed at once")
	case pt.QuietHours != nil:
		q := *pt.QuietHours
		p.QuietHours = &q
	case pt.NoQuietHours:
		p.QuietHours = nil
	}
	if err := p.Validate(); err != nil {
		return SendingPolicy{}, err
	}
	return p, nil
}

// Day returns the local day of now in loc (the day of the daily cap): its first instant and the
// first instant of the next day (23 or 25 hours later across a daylight-saving change).
func Day(now time.Time, loc *time.Location) (start, next time.Time) {
	y, m, d := now.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc), time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

// QuietUntil reports whether now falls in the policy's quiet hours in loc and, if so, when they
// end (the first instant at or after the window's local end; a local end skipped by a
// daylight-saving change is the instant the clock jumps past it).
func (p SendingPolicy) QuietUntil(now time.Time, loc *time.Location) (time.Time, bool) {
	q := p.QuietHours
	if q == nil || q.Start == q.End {
		return time.Time{}, false
	}
	local := now.In(loc)
	m := ClockTime(local.Hour()*60 + local.Minute())
	y, mo, d := local.Date()
	endOn := func(day int) time.Time { return time.Date(y, mo, day, int(q.End)/60, int(q.End)%60, 0, 0, loc) }
	if q.Start < q.End {
		if m >= q.Start && m < q.End {
			return endOn(d), true
		}
		return time.Time{}, false
	}
	switch {
	case m >= q.Start:
		return endOn(d + 1), true
	case m < q.End:
		return endOn(d), true
	}
	return time.Time{}, false
}

// SetSendingPolicy changes some settings of the connection's sending policy.
type SetSendingPolicy struct {
	Patch SendingPolicyPatch
	Actor string
}

// ChangeSendingPolicy decides SendingPolicyChanged with the whole resulting policy. The patch
// is applied to the current policy and the result validated (*ValidationError,
// CodeInvalidSendingPolicy or CodeInvalidTimeZone); an empty patch is refused. A patch that
// changes nothing is a no-op: no events and no error.
func (c *Connection) ChangeSendingPolicy(cmd SetSendingPolicy, now time.Time) ([]Event, error) {
	if err := c.mustBeRegistered("set sending policy"); err != nil {
		return nil, err
	}
	if cmd.Patch.IsZero() {
		return nil, invalid(CodeInvalidSendingPolicy, "sending_policy", "names no setting to change")
	}
	if err := validateActor(cmd.Actor); err != nil {
		return nil, err
	}
	cur := c.SendingPolicy()
	p, err := cmd.Patch.Apply(cur)
	if err != nil {
		return nil, err
	}
	if p.Equal(cur) {
		return nil, nil
	}
	return []Event{SendingPolicyChanged{Policy: p, ChangedBy: cmd.Actor, ChangedAt: now.UTC()}}, nil
}

// SendingPolicy returns the connection's sending policy (DefaultSendingPolicy until a
// SendingPolicyChanged is recorded).
func (c *Connection) SendingPolicy() SendingPolicy {
	p := c.sending.orDefault()
	if p.QuietHours != nil {
		q := *p.QuietHours
		p.QuietHours = &q
	}
	return p
}
