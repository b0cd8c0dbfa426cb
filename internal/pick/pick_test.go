package pick_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/spreadlb/spread/internal/pick"
)

func TestKinds(t *testing.T) {
	perm := &pick.PermissionError{Command: "SCARD {servers}:down", Reply: "NOPERM no"}
	for _, c := range []struct {
		err                  error
		unavailable, refused bool
	}{
		{pick.ErrUnavailable, true, false},
		{fmt.Errorf("%w: dial unix: refused", pick.ErrUnavailable), true, false},
		{context.DeadlineExceeded, true, false},
		{context.Canceled, false, false},
		{perm, false, true},
		{pick.ErrMisconfigured, false, true},
		{pick.ErrNoBackends, false, false},
		{pick.ErrAllDown, false, false},
	} {
		if got := pick.Unavailable(c.err); got != c.unavailable {
			t.Errorf("Unavailable(%v): got %v, want %v", c.err, got, c.unavailable)
		}
		if got := pick.Refused(c.err); got != c.refused {
			t.Errorf("Refused(%v): got %v, want %v", c.err, got, c.refused)
		}
	}
	if !errors.Is(perm, pick.ErrNoPermission) || perm.Name() != "SCARD" {
		t.Errorf("PermissionError: Is ErrNoPermission %v, Name %q; want true, SCARD", errors.Is(perm, pick.ErrNoPermission), perm.Name())
	}
	if got, want := perm.Error(), "the redis user lacks a permission to run SCARD {servers}:down: NOPERM no"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
}
