package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/waqueue/waqueue/adapters/transport"
	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

type checkNumbersRequest struct {
	Numbers []string `json:"numbers"`
}

// numberView is one number's answer.
type numberView struct {
	// Number is the number as given; Phone is it in E.164.
	Number     string `json:"number"`
	Phone      string `json:"phone"`
	OnWhatsApp bool   `json:"on_whatsapp"`
	JID        string `json:"jid,omitempty"`
}

type checkNumbersResponse struct {
	ConnectionID  string       `json:"connection_id"`
	Numbers       []numberView `json:"numbers"`
	OnWhatsApp    int          `json:"on_whatsapp"`
	NotOnWhatsApp int          `json:"not_on_whatsapp"`
}

// checkNumbers answers which of up to transport.MaxCheckNumbers numbers have a WhatsApp
// account, asked through the connection's session (POST …/contacts/check).
func (s *server) checkNumbers(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	_, b, err := readBody(w, r, s.d.Limits.MaxJSONBody, "application/json")
	if err != nil {
		return err
	}
	var req checkNumbersRequest
	if err := decodeJSON(b, &req, false); err != nil {
		return err
	}
	switch {
	case len(req.Numbers) == 0:
		return invalid("numbers", "must list at least one number")
	case len(req.Numbers) > transport.MaxCheckNumbers:
		return &Problem{Status: http.StatusUnprocessableEntity, Code: CodeTooManyNumbers, Field: "numbers",
			Detail: fmt.Sprintf("at most %d numbers per check", transport.MaxCheckNumbers)}
	}
	c, err := s.card(r, id)
	if err != nil {
		return err
	}
	phones, err := normalizeNumbers(req.Numbers, "numbers", c.Phone)
	if err != nil {
		return err
	}
	found, err := s.lookUp(r.Context(), connKey(r), c, phones)
	if err != nil {
		return err
	}
	out := checkNumbersResponse{ConnectionID: id, Numbers: make([]numberView, 0, len(phones))}
	for i, p := range phones {
		nc := found[p]
		out.Numbers = append(out.Numbers, numberView{Number: req.Numbers[i], Phone: p, OnWhatsApp: nc.OnWhatsApp, JID: nc.JID})
		if nc.OnWhatsApp {
			out.OnWhatsApp++
		} else {
			out.NotOnWhatsApp++
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// normalizeNumbers returns numbers in E.164, national ones read in the region of the
// connection's own phone; a bad one is a 422 invalid_phone naming it (field[i]).
func normalizeNumbers(numbers []string, field, ownPhone string) ([]string, error) {
	region := connection.RegionOf(ownPhone)
	out := make([]string, len(numbers))
	for i, n := range numbers {
		p, err := connection.NormalizePhone(fmt.Sprintf("%s[%d]", field, i), n, region)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// lookUp asks the transport about phones (E.164) through the connection key, after paying
// one token per distinct number from the connection's bucket (429 rate_limited with
// Retry-After when it is empty), in calls of at most transport.MaxCheckNumbers. A retired
// connection is refused (409 connection_retired).
func (s *server) lookUp(ctx context.Context, key string, c projections.Card, phones []string) (map[string]transport.NumberCheck, error) {
	if c.LinkStatus == connection.LinkStatusRetired {
		return nil, &connection.Error{Op: "check numbers", ConnectionID: c.ConnectionID, Err: connection.ErrConnectionRetired}
	}
	seen := make(map[string]bool, len(phones))
	var distinct []string
	for _, p := range phones {
		if !seen[p] {
			seen[p] = true
			distinct = append(distinct, p)
		}
	}
	if len(distinct) > s.d.Limits.NumberCheckBurst {
		return nil, &Problem{Status: http.StatusUnprocessableEntity, Code: CodeTooManyNumbers,
			Detail: fmt.Sprintf("at most %d distinct numbers can be checked at once", s.d.Limits.NumberCheckBurst)}
	}
	if ok, wait := s.checks.take(key, len(distinct), s.d.Now()); !ok {
		return nil, &Problem{Status: http.StatusTooManyRequests, Code: CodeRateLimited, retryAfter: wait,
			Detail: fmt.Sprintf("the connection's number checks are used up for now (%d a minute); retry after %s",
				s.d.Limits.NumberChecksPerMinute, wait.Round(1e9))}
	}
	found := make(map[string]transport.NumberCheck, len(distinct))
	for start := 0; start < len(distinct); start += transport.MaxCheckNumbers {
		batch := distinct[start:min(start+transport.MaxCheckNumbers, len(distinct))]
		res, err := s.d.Transport.CheckNumbers(ctx, key, batch)
		if errors.Is(err, transport.ErrNotConnected) {
			// WhatsApp was not asked: the numbers not asked yet cost nothing.
			s.checks.refund(key, len(distinct)-start)
		}
		if err != nil {
			return nil, transportErr(err)
		}
		for _, nc := range res {
			found[nc.Phone] = nc
		}
	}
	return found, nil
}

// onlyOnWhatsApp checks a broadcast's recipients before the command (check_recipients): it
// returns those on WhatsApp (in E.164, in the order given) and, each once, those not on it. The
// domain decides on the filtered list as on any other; an empty one is its no_recipients.
func (s *server) onlyOnWhatsApp(r *http.Request, id string, recipients []string) ([]string, *[]string, error) {
	c, err := s.card(r, id)
	if err != nil {
		return nil, nil, err
	}
	phones, err := normalizeNumbers(recipients, "recipients", c.Phone)
	if err != nil {
		return nil, nil, err
	}
	found, err := s.lookUp(r.Context(), connKey(r), c, phones)
	if err != nil {
		return nil, nil, err
	}
	keep := make([]string, 0, len(phones))
	notOn := []string{}
	listed := map[string]bool{}
	for _, p := range phones {
		switch {
		case found[p].OnWhatsApp:
			keep = append(keep, p)
		case !listed[p]:
			listed[p] = true
			notOn = append(notOn, p)
		}
	}
	return keep, &notOn, nil
}
