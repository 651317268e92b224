package sentinel_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/codat-rotator/codat-rotator/internal/sentinel"
)

func TestSentinel(t *testing.T) {
	outage, refused := sentinel.Retryable("outage"), sentinel.Permanent("refused")
	if got := outage.Error(); got != "outage" {
		t.Errorf("Error() = %q, want %q", got, "outage")
	}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{outage, true},
		{refused, false},
		{errors.New("plain"), true},
		{nil, true},
		{fmt.Errorf("wrapped: %w", refused), true}, // only the sentinel itself answers
	} {
		if got := sentinel.IsRetryable(tt.err); got != tt.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if !errors.Is(fmt.Errorf("op: %w", refused), refused) || errors.Is(refused, sentinel.Permanent("refused")) {
		t.Error("a sentinel must match itself through wrapping, and only itself")
	}
}
