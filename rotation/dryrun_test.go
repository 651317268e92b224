package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/vault"
)

// The dry run is the policy applied to a copy of the state, so for any
// state it predicts exactly what the rotation then does: the orphans it
// deletes, the keys it deletes to make room, the keys it retires and
// when, the revoke, and what the retire pass after it deletes at once.
func TestDryRunPredictsTheRotation(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 16; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			e := newEnv(t, envConfig{})
			r := rand.New(rand.NewPCG(seed, 0x5eed))
			e.mustRotate(rotation.Options{})
			for range 2 + r.IntN(6) {
				switch r.IntN(5) {
				case 0, 1:
					if _, err := e.rotate(rotation.Options{Emergency: r.IntN(4) == 0, Manual: true}); err != nil && !errors.Is(err, rotation.ErrNoRoom) {
						t.Fatalf("set-up rotation: %v", err)
					}
				case 2:
					e.clock.Advance(time.Duration(r.Int64N(int64(2 * grace))))
				case 3:
					if len(e.activeKeys()) < 9 {
						e.portal(fmt.Sprintf("person-%d", r.IntN(1000)))
					}
				case 4:
					// A crash's leftover: a key with the target's name shape
					// that the state does not know.
					if len(e.activeKeys()) < 9 {
						raw := codat.Secret(e.mustServe().Data[vault.FieldAPIKey])
						k, err := e.client.WithKey(raw).Create(context.Background(), e.names().New(e.clock.Now()))
						if err != nil {
							t.Fatalf("create an orphan: %v", err)
						}
						e.raw.add(k.APIKey.Reveal())
					}
				}
			}
			opts := rotation.Options{Manual: true}
			if r.IntN(3) == 0 {
				opts.Emergency = true
				served := e.mustServe().Data[vault.FieldKeyID]
				var others []string
				for id := range e.activeKeys() {
					if id != served {
						others = append(others, id)
					}
				}
				slices.Sort(others)
				if len(others) > 0 && r.IntN(2) == 0 {
					opts.Revoke = others[r.IntN(len(others))]
				}
			}

			p, err := e.plan(opts)
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			seq := e.lastSeq()
			res, err := e.rotate(opts)
			if p.Blocked != "" {
				if err == nil {
					t.Fatalf("the dry run said blocked (%s), the rotation succeeded", p.Blocked)
				}
				if countOps(e.eventsSince(seq), emulator.OpCreate) != 0 {
					t.Errorf("a blocked rotation created a key")
				}
				return
			}
			if err != nil {
				t.Fatalf("the dry run saw no obstacle, the rotation failed: %v\nplan: %+v", err, p)
			}
			var want []string
			want = append(want, p.Orphans...)
			for _, k := range p.MakeRoom {
				want = append(want, k.ID)
			}
			if p.Revoke != "" {
				want = append(want, p.Revoke)
			}
			want = append(want, p.RetireNow...)
			var got []string
			for _, ev := range e.eventsSince(seq) {
				if ev.Op == emulator.OpDelete && ev.Status/100 == 2 {
					got = append(got, ev.Path[strings.LastIndex(ev.Path, "/")+1:])
				}
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("deleted %v, the dry run predicted %v\nplan: %+v", got, want, p)
			}
			gotR, wantR := map[string]time.Time{}, map[string]time.Time{}
			for _, k := range res.Retiring {
				gotR[k.ID] = k.DeleteAfter
			}
			for _, k := range p.Retire {
				wantR[k.ID] = k.DeleteAfter
			}
			if fmt.Sprint(gotR) != fmt.Sprint(wantR) {
				t.Errorf("retiring %v, the dry run predicted %v", gotR, wantR)
			}
			e.checkInvariants()
		})
	}
}
