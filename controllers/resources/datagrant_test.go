package resources

import (
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
)

// TestDataGrantRenewDue: a grant is due for re-signing once less than
// DataGrantRenewFraction of its life is left, and after it expired.
func TestDataGrantRenewDue(t *testing.T) {
	op, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dc, err := identity.NewDataCredentials(op, 100*time.Hour, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{0, false},
		{50 * time.Hour, false},
		{79 * time.Hour, false},
		{81 * time.Hour, true},
		{100 * time.Hour, true},
		{200 * time.Hour, true},
	} {
		if got := DataGrantRenewDue(dc.Grant, start.Add(tc.at)); got != tc.want {
			t.Errorf("at %s of a 100h grant: due %v, want %v", tc.at, got, tc.want)
		}
	}
}
