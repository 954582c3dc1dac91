package transport_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/transport"
)

func TestWAMessageIDRoundTrip(t *testing.T) {
	for range 100 {
		id := uuid.New()
		wa := transport.WAMessageID(id)
		if len(wa) != 36 || !strings.HasPrefix(wa, "3EB0") || strings.ToUpper(wa) != wa {
			t.Fatalf("WAMessageID(%v) = %q, want 3EB0 + 32 upper hex digits", id, wa)
		}
		back, ok := transport.ParseWAMessageID(wa)
		if !ok || back != id {
			t.Fatalf("ParseWAMessageID(%q) = %v, %v, want %v", wa, back, ok, id)
		}
	}
}

func TestParseWAMessageIDRefusesForeignIDs(t *testing.T) {
	id := transport.WAMessageID(uuid.New())
	for _, s := range []string{
		"", "3EB0", "3EB0ABCDEF", // too short
		"3EB0C767D26A1B2B0C3F5D0E9E2D7A8B9C0D1E2F", // whatsmeow's own 40-char id
		strings.ToLower(id),                        // lower case
		"ABCD" + id[4:],                            // other prefix
		id[:35] + "G",                              // not hex
	} {
		if got, ok := transport.ParseWAMessageID(s); ok {
			t.Errorf("ParseWAMessageID(%q) = %v, true; want false", s, got)
		}
	}
}

func TestPhoneDigits(t *testing.T) {
	good := map[string]string{"+4915112345678": "4915112345678", "+12025550123": "12025550123"}
	for in, want := range good {
		if got, err := transport.PhoneDigits(in); err != nil || got != want {
			t.Errorf("PhoneDigits(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "4915112345678", "+0151123456", "+49 151 123", "+123456", "+1234567890123456", "+49151abc"} {
		if got, err := transport.PhoneDigits(in); err == nil {
			t.Errorf("PhoneDigits(%q) = %q, nil; want an error", in, got)
		}
	}
}

func TestSendErrorMatchesItsKindOnly(t *testing.T) {
	cause := errors.New("socket closed")
	kinds := []error{transport.ErrRateLimited, transport.ErrNotConnected, transport.ErrRejected, transport.ErrOutcomeUnknown}
	for _, kind := range kinds {
		err := fmt.Errorf("dispatch: %w", &transport.SendError{Kind: kind, ConnectionID: "c1", MessageID: uuid.New(), Err: cause})
		for _, other := range kinds {
			if errors.Is(err, other) != (other == kind) {
				t.Errorf("errors.Is(%v, %v) = %v", err, other, !(other == kind))
			}
		}
		if !errors.Is(err, cause) {
			t.Errorf("%v does not unwrap to its cause", err)
		}
		wantRetry := kind == transport.ErrRateLimited || kind == transport.ErrNotConnected
		if transport.Retryable(err) != wantRetry {
			t.Errorf("Retryable(%v) = %v, want %v", err, !wantRetry, wantRetry)
		}
		if !strings.Contains(err.Error(), "c1") || !strings.Contains(err.Error(), "socket closed") {
			t.Errorf("error %q lacks the connection id or the cause", err)
		}
	}
}

func TestEventQueueDeliversInOrderAfterHandlerIsSet(t *testing.T) {
	q := transport.NewEventQueue()
	defer q.Close()
	const n = 500
	for i := range n {
		q.Emit(transport.ConnectFailure{Reason: i})
	}
	var mu sync.Mutex
	var got []int
	done := make(chan struct{})
	q.SetHandler(func(e transport.Event) {
		mu.Lock()
		got = append(got, e.(transport.ConnectFailure).Reason)
		if len(got) == n {
			close(done)
		}
		mu.Unlock()
	})
	<-done
	for i, r := range got {
		if r != i {
			t.Fatalf("event %d has reason %d: delivered out of order", i, r)
		}
	}
}
