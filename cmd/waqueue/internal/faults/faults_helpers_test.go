//go:build faults

package faults

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
)

// ack returns the Seq of a message event and whether it is a MessageDispatched or an event that
// acknowledges one (sent, failed or outcome unknown); both are false for any other event.
func ack(ev connection.Event) (seq uint64, isDispatch, isAck bool) {
	switch e := ev.(type) {
	case connection.MessageDispatched:
		return e.Seq, true, false
	case connection.MessageSent:
		return e.Seq, false, true
	case connection.MessageFailed:
		return e.Seq, false, true
	case connection.MessageOutcomeUnknown:
		return e.Seq, false, true
	}
	return 0, false, false
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// errorLines returns up to n distinct "error" values of a JSON log, for failure messages.
func errorLines(logs string, n int) string {
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Error == "" {
			continue
		}
		k := rec.Msg + ": " + rec.Error
		if !seen[k] && len(out) < n {
			seen[k] = true
			out = append(out, k)
		}
	}
	return strings.Join(out, "\n")
}

// unacknowledged lists the messages of h dispatched and never acknowledged, with the time of
// their MessageDispatched, for failure messages.
func unacknowledged(h []recorded) string {
	open := map[uint64]recorded{}
	for _, e := range h {
		if seq, d, a := ack(e.Event); d {
			open[seq] = e
		} else if a {
			delete(open, seq)
		}
	}
	var out []string
	for seq, e := range open {
		out = append(out, fmt.Sprintf("seq %d (revision %d, recorded %s)", seq, e.Revision, e.RecordedAt.Format(time.RFC3339Nano)))
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// count returns how many events of h have type typ.
func count(h []recorded, typ string) int {
	n := 0
	for _, e := range h {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// terminal are the message statuses the API reports for a message that reached an end.
var terminal = map[string]bool{"sent": true, "delivered": true, "read": true, "failed": true,
	"purged": true, "expired": true, "unknown": true}
