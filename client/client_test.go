package client

import (
	"errors"
	"fmt"
	"testing"
)

func TestProblemError(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{Title: "Conflict", Status: 409, Code: "queue_clearing", Detail: "the queue is being cleared"}, "Conflict: the queue is being cleared (queue_clearing)"},
		{Problem{Title: "Unprocessable Entity", Status: 422, Code: "invalid_phone", Field: "recipient", Detail: "not a phone number"}, "Unprocessable Entity: recipient: not a phone number (invalid_phone)"},
		{Problem{Status: 401, Code: "unauthorized"}, "Unauthorized (unauthorized)"},
	} {
		if got := tc.p.Error(); got != tc.want {
			t.Errorf("%+v.Error() = %q, want %q", tc.p, got, tc.want)
		}
	}
	err := fmt.Errorf("wrapped: %w", &Problem{Code: "not_found", Status: 404})
	if !IsCode(err, "not_found") || IsCode(err, "conflict") || IsCode(errors.New("x"), "not_found") {
		t.Fatal("IsCode does not see the code through wrapping, or sees one that is not there")
	}
}

func TestNewRejectsBadServerURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://host", "http://", "http://[::1"} {
		if _, err := New(u, "", nil); err == nil {
			t.Errorf("New(%q) accepted the URL", u)
		}
	}
	c, err := New("http://127.0.0.1:8080/base/", "k", nil)
	if err != nil || c.base.String() != "http://127.0.0.1:8080/base" {
		t.Fatalf("New with a path: %v, base %v", err, c)
	}
}
