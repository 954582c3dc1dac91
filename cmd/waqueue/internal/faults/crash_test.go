//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/pgcluster/pgtest"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/internal/testwait"
)

// buildBinary builds the real waqueue binary into a directory of t's.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "waqueue")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/waqueue/waqueue/cmd/waqueue").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a `waqueue serve` process.
type proc struct {
	cmd  *exec.Cmd
	logs *logBuffer
	api  *api
	done chan struct{}
}

// serve starts `waqueue serve` on dataDir and db ("" for the SQLite default in dataDir) and waits
// until /readyz answers 200. The process is killed when t ends, if still running.
func serve(t *testing.T, ctx context.Context, bin, dataDir, db string) *proc {
	t.Helper()
	addr := freeAddr(t)
	// --rate-limit 0: the workers enqueue as fast as they can; a 429 is not what is tested here.
	args := []string{"serve", "--data-dir", dataDir, "--listen", addr, "--metrics-listen", "127.0.0.1:0", "--no-pacing", "--log-level", "warn", "--rate-limit", "0"}
	if db != "" {
		args = append(args, "--db", db)
	}
	p := &proc{cmd: exec.Command(bin, args...), logs: &logBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(t) })
	base := "http://" + addr
	waitFor(t, ctx, "waqueue serve ready", func() bool {
		select {
		case <-p.done:
			t.Fatalf("waqueue serve exited: %v\n%s", p.cmd.ProcessState, p.logs)
		default:
		}
		res, err := newAPI(base, "").call(ctx, "GET", "/readyz", nil, nil)
		return err == nil && res.Status == http.StatusOK
	})
	key, err := os.ReadFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	p.api = newAPI(base, strings.TrimSpace(string(key)))
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Logf("kill: %v", err)
	}
	<-p.done
}

func engines(t *testing.T) map[string]func() string {
	return map[string]func() string{
		"sqlite":   func() string { return "" },
		"postgres": func() string { return pgtest.URL(t) },
	}
}

// TestKillMidBroadcast kills `waqueue serve` with SIGKILL while it works a broadcast and 8 clients
// enqueue 1:1 messages, restarts it on the same data, retries every request that got no answer
// with its Idempotency-Key, and checks from the history and the API: every accepted message
// exists once and ends in exactly one state, no message was dispatched twice (the dispatch is
// recorded before the transport is called, so one MessageDispatched per message means at most
// one hand-over), and every message in flight at the crash ended unknown with cause "restart".
func TestKillMidBroadcast(t *testing.T) {
	bin := buildBinary(t)
	for engine, db := range engines(t) {
		t.Run(engine, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(8*time.Minute))
			defer cancel()
			dir, dbURL := t.TempDir(), db()
			p := serve(t, ctx, bin, dir, dbURL)
			const id, total = "crash-b", 3000
			p.api.register(t, ctx, id, "+491701000001")
			recipients := make([]string, total)
			for i := range recipients {
				recipients[i] = fmt.Sprintf("+4917198%05d", i)
			}
			p.api.must(t, ctx, "POST", "/v1/connections/"+id+"/broadcasts", map[string]any{"recipients": recipients, "text": "sale"},
				map[string]string{"Idempotency-Key": "bc-1"}, http.StatusAccepted, nil)

			// 8 clients enqueue until the kill; each key is accepted (202), refused, or unanswered.
			var (
				mu           sync.Mutex
				accepted     = map[string]uuid.UUID{} // key -> message id
				keyRecipient = map[string]string{}    // key -> the recipient its request named
				unanswered   []string
				wg           sync.WaitGroup
			)
			stop := make(chan struct{})
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						key := fmt.Sprintf("w%d-%d", w, i)
						rcpt := fmt.Sprintf("+4917297%02d%03d", w, i%1000)
						res, err := p.api.call(ctx, "POST", "/v1/connections/"+id+"/messages",
							map[string]any{"recipient": rcpt, "text": "hi"},
							map[string]string{"Idempotency-Key": key})
						mu.Lock()
						keyRecipient[key] = rcpt
						switch {
						case err != nil:
							unanswered = append(unanswered, key)
						case res.Status == http.StatusAccepted:
							var m struct {
								MessageID uuid.UUID `json:"message_id"`
							}
							if err := res.decode(&m); err != nil {
								t.Error(err)
							}
							accepted[key] = m.MessageID
						default:
							t.Errorf("enqueue %s: status %d: %s", key, res.Status, res.Body)
						}
						mu.Unlock()
						if err != nil {
							return // the server is gone
						}
						time.Sleep(20 * time.Millisecond) // a steady trickle, not a flood
					}
				}()
			}
			under, cancelUnder := context.WithTimeout(ctx, 3*time.Minute)
			var last card
			// Progress is what left the queue: everything queued (broadcast plus accepted keys) minus
			// what the card still counts pending.
			progressed := func() bool {
				mu.Lock()
				queued := uint64(total + len(accepted))
				mu.Unlock()
				last = p.api.card(t, ctx, id)
				return last.Pending+200 <= queued
			}
			ok := progressed()
			for ; !ok && under.Err() == nil; ok = progressed() {
				time.Sleep(50 * time.Millisecond)
			}
			cancelUnder()
			if !ok {
				close(stop)
				t.Fatalf("the broadcast did not get under way in 3 minutes: card %+v\nlogs:\n%s", last, tail(p.logs.String(), 4000))
			}
			p.kill(t)
			close(stop)
			wg.Wait()
			restartedAt := time.Now()
			t.Logf("killed mid-broadcast: %d keys accepted, %d unanswered", len(accepted), len(unanswered))

			p = serve(t, ctx, bin, dir, dbURL)
			// A retry with the same key and the same request after the crash answers the first
			// message, or queues it now (another request under the key would be 422).
			for _, key := range unanswered {
				var m struct {
					MessageID uuid.UUID `json:"message_id"`
				}
				p.api.must(t, ctx, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": keyRecipient[key], "text": "hi"},
					map[string]string{"Idempotency-Key": key}, http.StatusAccepted, &m)
				accepted[key] = m.MessageID
			}
			// So does a retry of a key whose answer arrived: the same message, not a second one.
			n := 0
			for key, want := range accepted {
				if n++; n > 20 {
					break
				}
				var m struct {
					MessageID uuid.UUID `json:"message_id"`
				}
				p.api.must(t, ctx, "POST", "/v1/connections/"+id+"/messages", map[string]any{"recipient": keyRecipient[key], "text": "hi"},
					map[string]string{"Idempotency-Key": key}, http.StatusAccepted, &m)
				if m.MessageID != want {
					t.Errorf("retry of %s after the crash answered message %s, want %s", key, m.MessageID, want)
				}
			}
			waitFor(t, ctx, "queue drained after restart", func() bool {
				c := p.api.card(t, ctx, id)
				return c.Pending == 0 && c.InFlight == 0
			})

			h := p.api.history(t, ctx, id)
			rep := check(t, id, h, nil)
			if err := settled(rep); err != nil {
				t.Errorf("after restart: %v", err)
			}
			if want := total + len(accepted); rep.Queued != want {
				t.Errorf("queued %d messages, want %d (broadcast %d + accepted keys %d)", rep.Queued, want, total, len(accepted))
			}
			checkCrashInFlight(t, h, restartedAt)
			perKey := map[string]int{}
			for _, e := range h {
				if q, ok := e.Event.(connection.MessageQueued); ok && q.IdempotencyKey != "" {
					perKey[q.IdempotencyKey]++
				}
			}
			for key, msgID := range accepted {
				if perKey[key] != 1 {
					t.Errorf("key %s queued %d messages, want 1", key, perKey[key])
				}
				var m struct {
					Status string `json:"status"`
				}
				p.api.must(t, ctx, "GET", "/v1/messages/"+msgID.String(), nil, nil, http.StatusOK, &m)
				if !terminal[m.Status] {
					t.Errorf("message %s (key %s) is %q after the queue drained", msgID, key, m.Status)
				}
			}
		})
	}
}

// checkCrashInFlight checks that every message dispatched and not acknowledged by the killed
// process (events recorded before restartedAt) was recorded unknown with cause "restart" by the
// next one, and logs how many there were.
func checkCrashInFlight(t *testing.T, h []recorded, restartedAt time.Time) {
	t.Helper()
	open := map[uint64]bool{}
	for _, e := range h {
		if !e.RecordedAt.Before(restartedAt) {
			break
		}
		if seq, d, a := ack(e.Event); d {
			open[seq] = true
		} else if a {
			delete(open, seq)
		}
	}
	restart := map[uint64]string{}
	for _, e := range h {
		if u, ok := e.Event.(connection.MessageOutcomeUnknown); ok && !e.RecordedAt.Before(restartedAt) {
			restart[u.Seq] = u.Cause
		}
	}
	for seq := range open {
		if cause, ok := restart[seq]; !ok || cause != "restart" {
			t.Errorf("message seq %d was in flight at the crash; after restart: unknown=%v cause %q", seq, ok, cause)
		}
	}
	t.Logf("%d messages in flight at the crash, each recorded unknown after restart", len(open))
}

// TestKillMidClear bans a connection (the queue holds), queues a broadcast, sends a clear and
// kills `waqueue serve` with SIGKILL while the clear request is in flight or just answered,
// restarts it on the same data and retries the clear with the same Idempotency-Key. Whether the
// kill landed before the request was durable, between request and report, or after, the history
// holds exactly one ClearQueueRequested and one QueueCleared for the clear, the report purges
// exactly the broadcast, and nothing was dispatched.
func TestKillMidClear(t *testing.T) {
	bin := buildBinary(t)
	for engine, db := range engines(t) {
		for _, delay := range []time.Duration{0, 5 * time.Millisecond, 50 * time.Millisecond} {
			t.Run(fmt.Sprintf("%s/kill-after-%s", engine, delay), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), testwait.AtLeast(6*time.Minute))
				defer cancel()
				dir, dbURL := t.TempDir(), db()
				p := serve(t, ctx, bin, dir, dbURL)
				const id, phone, total = "crash-c", "+491701000002", 5000
				p.api.register(t, ctx, id, phone)
				p.api.must(t, ctx, "POST", "/v1/connections/"+id+"/simulator/ban", map[string]any{"kind": "temporary", "expires_in": "2h"}, nil, http.StatusOK, nil)
				waitFor(t, ctx, "queue held", func() bool { return p.api.card(t, ctx, id).QueueStatus == "held" })
				recipients := make([]string, total)
				for i := range recipients {
					recipients[i] = fmt.Sprintf("+4917398%05d", i)
				}
				p.api.must(t, ctx, "POST", "/v1/connections/"+id+"/broadcasts", map[string]any{"recipients": recipients, "text": "sale"},
					map[string]string{"Idempotency-Key": "bc-1"}, http.StatusAccepted, nil)

				body := map[string]any{"reason": "banned mid-broadcast", "confirm": phone}
				hdr := map[string]string{"Idempotency-Key": "clear-1"}
				answered := make(chan response, 1)
				go func() {
					res, err := p.api.call(ctx, "POST", "/v1/connections/"+id+"/queue/clear", body, hdr)
					if err == nil {
						answered <- res
					}
					close(answered)
				}()
				time.Sleep(delay)
				p.kill(t)
				first, ok := <-answered
				t.Logf("clear answered before the kill: %v (status %d)", ok, first.Status)
				restartedAt := time.Now()

				p = serve(t, ctx, bin, dir, dbURL)
				var clr struct {
					ClearID uuid.UUID `json:"clear_id"`
				}
				clrRes := p.api.must(t, ctx, "POST", "/v1/connections/"+id+"/queue/clear", body, hdr, http.StatusAccepted, &clr)
				// Read the report at least at the clear's position: the answer comes once the
				// request is durable, before the read models have it (docs/api.md).
				atClear := map[string]string{"Waqueue-Min-Position": clrRes.Header.Get("Waqueue-Position")}
				if ok && first.Status == http.StatusAccepted {
					var before struct {
						ClearID uuid.UUID `json:"clear_id"`
					}
					if err := first.decode(&before); err != nil {
						t.Fatal(err)
					}
					if before.ClearID != clr.ClearID {
						t.Errorf("retry after the crash answered clear %s, the first answer was %s", clr.ClearID, before.ClearID)
					}
				}
				var report struct {
					Status string `json:"status"`
					Report struct {
						PurgedCount uint64 `json:"purged_count"`
					} `json:"report"`
				}
				waitFor(t, ctx, "clear done", func() bool {
					// A 404 here means the restarted node's clears read model has not caught up
					// with the request within the bounded read-your-writes wait (its catch-up after
					// the restart may take longer than Limits.ReadYourWrites on a busy machine).
					// Before the fix of the in-progress replay (it answered no Waqueue-Position,
					// so this read did not wait at all) it was seen at once.
					res, err := p.api.call(ctx, "GET", "/v1/connections/"+id+"/clears/"+clr.ClearID.String(), nil, atClear)
					if err != nil {
						t.Fatalf("GET clear report: %v", err)
					}
					if res.Status == http.StatusNotFound {
						return false
					}
					if res.Status != http.StatusOK {
						t.Fatalf("GET clear report: status %d: %s", res.Status, res.Body)
					}
					if err := res.decode(&report); err != nil {
						t.Fatal(err)
					}
					return report.Status == "done"
				})
				if report.Report.PurgedCount != total {
					t.Errorf("report purged %d, want %d", report.Report.PurgedCount, total)
				}
				h := p.api.history(t, ctx, id)
				rep := check(t, id, h, nil)
				if err := settled(rep); err != nil {
					t.Errorf("after restart: %v", err)
				}
				requests, reports := 0, 0
				for _, e := range h {
					switch ev := e.Event.(type) {
					case connection.ClearQueueRequested:
						if ev.ClearID == clr.ClearID {
							requests++
						}
					case connection.QueueCleared:
						if ev.ClearID == clr.ClearID {
							reports++
						}
					}
				}
				if requests != 1 || reports != 1 || count(h, connection.TypeClearQueueRequested) != 1 || count(h, connection.TypeQueueCleared) != 1 {
					t.Errorf("clear %s: %d requests and %d reports (all clears: %d requested, %d cleared), want exactly one each",
						clr.ClearID, requests, reports, count(h, connection.TypeClearQueueRequested), count(h, connection.TypeQueueCleared))
				}
				landed := "before the request was durable"
				for _, e := range h {
					if e.RecordedAt.Before(restartedAt) && e.Type == connection.TypeClearQueueRequested {
						landed = "after the request, before the report"
					}
					if e.RecordedAt.Before(restartedAt) && e.Type == connection.TypeQueueCleared {
						landed = "after the report"
					}
				}
				t.Logf("the kill landed %s", landed)
				if n := count(h, connection.TypeMessageDispatched); n != 0 {
					t.Errorf("%d messages dispatched from a held queue", n)
				}
				if rep.Purged != total {
					t.Errorf("%d purged, want %d", rep.Purged, total)
				}
			})
		}
	}
}
