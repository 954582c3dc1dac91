package connection_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

func ptr[T any](v T) *T { return &v }

func setPolicy(pt connection.SendingPolicyPatch) func(*connection.Connection) ([]connection.Event, error) {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.ChangeSendingPolicy(connection.SetSendingPolicy{Patch: pt, Actor: "op"}, at(1))
	}
}

func wantField(code connection.Code, field string) func(*testing.T, *connection.Connection, error) {
	return func(t *testing.T, _ *connection.Connection, err error) {
		t.Helper()
		ve := asError[*connection.ValidationError](t, err)
		if ve.Code != code || ve.Field != field {
			t.Fatalf("error %q on %q, want %q on %q (%v)", ve.Code, ve.Field, code, field, err)
		}
	}
}

// A partial change keeps the other settings; the event carries the whole policy; a change that
// changes nothing records nothing; every bound is enforced and a refusal records nothing.
func TestSendingPolicyDecisions(t *testing.T) {
	def := connection.DefaultSendingPolicy()
	withCap := def
	withCap.DailyCap = 200
	quiet := &connection.QuietHours{Start: 22 * 60, End: 7 * 60}
	berlinQuiet := withCap
	berlinQuiet.TimeZone, berlinQuiet.QuietHours = "Europe/Berlin", quiet
	changed := func(p connection.SendingPolicy) []connection.Event {
		return []connection.Event{connection.SendingPolicyChanged{Policy: p, ChangedBy: "op", ChangedAt: at(1)}}
	}
	given := history(base, changed(withCap))
	bad := connection.CodeInvalidSendingPolicy
	runDecisions(t, []decision{
		{name: "cap only", given: base, when: setPolicy(connection.SendingPolicyPatch{DailyCap: ptr(200)}), then: changed(withCap),
			check: func(t *testing.T, c *connection.Connection, _ error) {
				if got := c.SendingPolicy(); !got.Equal(withCap) {
					t.Fatalf("policy after apply = %+v, want %+v", got, withCap)
				}
			}},
		{name: "partial keeps the rest", given: given,
			when: setPolicy(connection.SendingPolicyPatch{TimeZone: ptr("Europe/Berlin"), QuietHours: quiet}), then: changed(berlinQuiet)},
		{name: "quiet hours removed", given: history(given, changed(berlinQuiet)),
			when: setPolicy(connection.SendingPolicyPatch{NoQuietHours: true}),
			then: changed(func() connection.SendingPolicy { p := berlinQuiet; p.QuietHours = nil; return p }())},
		{name: "same values are a no-op", given: given, when: setPolicy(connection.SendingPolicyPatch{DailyCap: ptr(200), MinInterval: ptr(3 * time.Second)}), then: nil},
		{name: "defaults again on a new connection are a no-op", given: base, when: setPolicy(connection.SendingPolicyPatch{DailyCap: ptr(connection.DefaultDailyCap)}), then: nil},
		{name: "empty patch", given: base, when: setPolicy(connection.SendingPolicyPatch{}), err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy")},
		{name: "interval below the floor", given: base, when: setPolicy(connection.SendingPolicyPatch{MinInterval: ptr(999 * time.Millisecond)}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.min_interval_seconds")},
		{name: "interval above the ceiling", given: base, when: setPolicy(connection.SendingPolicyPatch{MinInterval: ptr(connection.MaxMinInterval + time.Second)}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.min_interval_seconds")},
		{name: "negative jitter", given: base, when: setPolicy(connection.SendingPolicyPatch{Jitter: ptr(-time.Second)}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.jitter_seconds")},
		{name: "jitter above the ceiling", given: base, when: setPolicy(connection.SendingPolicyPatch{Jitter: ptr(connection.MaxJitter + time.Second)}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.jitter_seconds")},
		{name: "cap zero", given: base, when: setPolicy(connection.SendingPolicyPatch{DailyCap: ptr(0)}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.daily_cap")},
		{name: "cap above the ceiling", given: base, when: setPolicy(connection.SendingPolicyPatch{DailyCap: ptr(connection.MaxDailyCap + 1)}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.daily_cap")},
		{name: "time zone malformed", given: base, when: setPolicy(connection.SendingPolicyPatch{TimeZone: ptr("../etc/passwd")}),
			err: connection.ErrInvalidCommand, check: wantField(connection.CodeInvalidTimeZone, "sending_policy.time_zone")},
		{name: "time zone empty", given: base, when: setPolicy(connection.SendingPolicyPatch{TimeZone: ptr("")}),
			err: connection.ErrInvalidCommand, check: wantField(connection.CodeInvalidTimeZone, "sending_policy.time_zone")},
		{name: "quiet hours empty window", given: base, when: setPolicy(connection.SendingPolicyPatch{QuietHours: &connection.QuietHours{Start: 60, End: 60}}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.quiet_hours")},
		{name: "quiet hours out of the day", given: base, when: setPolicy(connection.SendingPolicyPatch{QuietHours: &connection.QuietHours{Start: 60, End: 24 * 60}}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.quiet_hours")},
		{name: "quiet hours set and removed", given: base, when: setPolicy(connection.SendingPolicyPatch{QuietHours: quiet, NoQuietHours: true}),
			err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.quiet_hours")},
		{name: "missing actor", given: base, when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.ChangeSendingPolicy(connection.SetSendingPolicy{Patch: connection.SendingPolicyPatch{DailyCap: ptr(5)}}, at(1))
		}, err: connection.ErrInvalidCommand},
		{name: "not registered", when: setPolicy(connection.SendingPolicyPatch{DailyCap: ptr(5)}), err: connection.ErrNotRegistered},
		{name: "at registration", when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Register(connection.RegisterConnection{ConnectionID: connID, TenantID: tenant, Phone: ownNum, Actor: "op",
				SendingPolicy: &connection.SendingPolicyPatch{DailyCap: ptr(200)}}, at(1))
		}, then: []connection.Event{
			connection.ConnectionRegistered{ConnectionID: connID, TenantID: tenant, Phone: ownNum, OnBan: connection.OnBanHold, RegisteredBy: "op", RegisteredAt: at(1)},
			connection.SendingPolicyChanged{Policy: withCap, ChangedBy: "op", ChangedAt: at(1)},
		}},
		{name: "invalid at registration registers nothing", when: func(c *connection.Connection) ([]connection.Event, error) {
			return c.Register(connection.RegisterConnection{ConnectionID: connID, TenantID: tenant, Phone: ownNum, Actor: "op",
				SendingPolicy: &connection.SendingPolicyPatch{DailyCap: ptr(-1)}}, at(1))
		}, err: connection.ErrInvalidCommand, check: wantField(bad, "sending_policy.daily_cap")},
	})
}

// The bounds themselves are accepted: floor and ceilings are inclusive.
func TestSendingPolicyBoundsInclusive(t *testing.T) {
	for _, pt := range []connection.SendingPolicyPatch{
		{MinInterval: ptr(connection.MinMinInterval)}, {MinInterval: ptr(connection.MaxMinInterval)},
		{Jitter: ptr(time.Duration(0))}, {Jitter: ptr(connection.MaxJitter)},
		{DailyCap: ptr(1)}, {DailyCap: ptr(connection.MaxDailyCap)},
		{TimeZone: ptr("America/Argentina/Buenos_Aires")}, {TimeZone: ptr("Etc/GMT+5")},
		{QuietHours: &connection.QuietHours{Start: 0, End: 24*60 - 1}},
	} {
		if _, err := pt.Apply(connection.DefaultSendingPolicy()); err != nil {
			t.Errorf("%+v refused: %v", pt, err)
		}
	}
}

// The policy survives a snapshot and the stored JSON uses explicit units.
func TestSendingPolicySnapshotAndJSON(t *testing.T) {
	p := connection.SendingPolicy{MinInterval: 10 * time.Second, Jitter: 0, DailyCap: 50, TimeZone: "Asia/Kolkata",
		QuietHours: &connection.QuietHours{Start: 21*60 + 30, End: 6 * 60}}
	c := load(t, history(base, connection.SendingPolicyChanged{Policy: p, ChangedBy: "op", ChangedAt: t0}))
	snap, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := connection.Restore(snap)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.SendingPolicy(); !reflect.DeepEqual(got, p) {
		t.Fatalf("restored policy %+v, want %+v", got, p)
	}
	if got := load(t, history(base)).SendingPolicy(); !reflect.DeepEqual(got, connection.DefaultSendingPolicy()) {
		t.Fatalf("policy without an event %+v, want the defaults", got)
	}
	b, _ := json.Marshal(p)
	if want := `{"min_interval_ms":10000,"jitter_ms":0,"daily_cap":50,"time_zone":"Asia/Kolkata","quiet_hours":{"start":"21:30","end":"06:00"}}`; string(b) != want {
		t.Fatalf("json %s, want %s", b, want)
	}
}

func TestQuietUntil(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no tz database:", err)
	}
	overnight := connection.SendingPolicy{QuietHours: &connection.QuietHours{Start: 22 * 60, End: 7 * 60}}
	daytime := connection.SendingPolicy{QuietHours: &connection.QuietHours{Start: 12 * 60, End: 13*60 + 30}}
	local := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, berlin) }
	for _, tc := range []struct {
		name  string
		p     connection.SendingPolicy
		now   time.Time
		until time.Time // zero: not quiet
	}{
		{"before the window", overnight, local(10, 21, 59), time.Time{}},
		{"at the start", overnight, local(10, 22, 0), local(11, 7, 0)},
		{"after midnight", overnight, local(11, 3, 0), local(11, 7, 0)},
		{"at the end", overnight, local(11, 7, 0), time.Time{}},
		{"daytime inside", daytime, local(10, 13, 29), local(10, 13, 30)},
		{"daytime outside", daytime, local(10, 13, 30), time.Time{}},
		// 2026-03-29: Berlin skips 02:00–03:00; the window still ends at 07:00 local (one hour less).
		{"across the DST change", overnight, local(28, 23, 0), local(29, 7, 0)},
		{"no quiet hours", connection.DefaultSendingPolicy(), local(10, 3, 0), time.Time{}},
		// The instant is judged in the zone, not in UTC: 21:30 UTC is 22:30 in Berlin (winter).
		{"judged in the zone", overnight, time.Date(2026, 3, 10, 21, 30, 0, 0, time.UTC), local(11, 7, 0)},
	} {
		until, quiet := tc.p.QuietUntil(tc.now, berlin)
		if quiet != !tc.until.IsZero() || !until.Equal(tc.until) {
			t.Errorf("%s: QuietUntil(%s) = %s, %v; want %s", tc.name, tc.now, until, quiet, tc.until)
		}
	}
	start, next := connection.Day(local(29, 12, 0), berlin)
	if !start.Equal(local(29, 0, 0)) || next.Sub(start) != 23*time.Hour {
		t.Fatalf("Day on the DST change = %s–%s, want a 23-hour day from local midnight", start, next)
	}
}

func TestParseClockTime(t *testing.T) {
	for s, want := range map[string]connection.ClockTime{"00:00": 0, "07:30": 450, "23:59": 1439} {
		if got, err := connection.ParseClockTime(s); err != nil || got != want {
			t.Errorf("ParseClockTime(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "7:30", "24:00", "12:60", "12-30", "ab:cd", "-1:00", "12:3x"} {
		if _, err := connection.ParseClockTime(s); err == nil {
			t.Errorf("ParseClockTime(%q) accepted", s)
		}
	}
}
