package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// The documents the admin socket serves and the commands print. They are
// built the same way in the daemon and in-process, and never carry a
// raw key.

// statusDoc is `status --json`.
type statusDoc struct {
	Daemon  bool           `json:"daemon"` // answered by a running daemon
	Targets []targetStatus `json:"targets"`
}

type targetStatus struct {
	Name         string       `json:"name"`
	Vault        string       `json:"vault"`
	CurrentKey   *keyStatus   `json:"current_key"`
	Retiring     []keyStatus  `json:"retiring"`
	NextRotation *time.Time   `json:"next_rotation,omitempty"`
	LastResult   string       `json:"last_result,omitempty"`
	LastError    string       `json:"last_error,omitempty"`
	LastSuccess  *time.Time   `json:"last_success,omitempty"`
	LastAttempt  *time.Time   `json:"last_attempt,omitempty"`
	KeysUsed     int          `json:"keys_used"`
	MaxKeys      int          `json:"max_keys"`
	ReserveSlots int          `json:"reserve_slots"`
	Halted       bool         `json:"halted"`
	HaltReason   string       `json:"halt_reason,omitempty"`
	Journal      *journalInfo `json:"rotation_in_flight,omitempty"`
}

type keyStatus struct {
	ID          string     `json:"id"`
	Name        string     `json:"name,omitempty"`
	Origin      string     `json:"origin"`
	Created     *time.Time `json:"created,omitempty"`
	Published   *time.Time `json:"published,omitempty"`
	AgeSeconds  int64      `json:"age_seconds,omitempty"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
}

type journalInfo struct {
	RotationID string    `json:"rotation_id"`
	Step       string    `json:"step"`
	Started    time.Time `json:"started"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// buildStatus reads the state of every target. next gives the next
// scheduled rotation.
func buildStatus(load func(string) (store.Target, error), targets []rotation.Target, next func(string) time.Time, now time.Time) (statusDoc, error) {
	doc := statusDoc{Targets: []targetStatus{}}
	for _, t := range targets {
		st, err := load(t.Name)
		if err != nil {
			return doc, err
		}
		ts := targetStatus{
			Name: t.Name, Vault: t.Vault.String(), Retiring: []keyStatus{},
			NextRotation: timePtr(next(t.Name)), LastResult: st.LastResult, LastError: st.LastError,
			LastSuccess: timePtr(st.LastSuccess), LastAttempt: timePtr(st.LastAttempt),
			KeysUsed: st.CodatKeys, MaxKeys: t.MaxKeys, ReserveSlots: t.ReserveSlots,
			Halted: st.Halted, HaltReason: st.HaltReason,
		}
		if st.Journal != nil {
			ts.Journal = &journalInfo{RotationID: st.Journal.RotationID, Step: string(st.Journal.Step), Started: st.Journal.Started}
		}
		for _, k := range st.Keys {
			ks := keyStatus{ID: k.ID, Name: k.Name, Origin: string(k.Origin), Created: timePtr(k.Created), Published: timePtr(k.Published), DeleteAfter: timePtr(k.DeleteAfter)}
			switch k.State {
			case store.KeyActive:
				if !k.Published.IsZero() {
					ks.AgeSeconds = int64(now.Sub(k.Published) / time.Second)
				}
				ks := ks
				ts.CurrentKey = &ks
			case store.KeyRetiring:
				ts.Retiring = append(ts.Retiring, ks)
			}
		}
		sort.Slice(ts.Retiring, func(i, j int) bool { return ts.Retiring[i].DeleteAfter.Before(*ts.Retiring[j].DeleteAfter) })
		doc.Targets = append(doc.Targets, ts)
	}
	return doc, nil
}

func printStatus(w io.Writer, doc statusDoc) {
	for i, t := range doc.Targets {
		if i > 0 {
			fmt.Fprintln(w)
		}
		state := "ok"
		switch {
		case t.Halted:
			state = "HALTED: " + t.HaltReason + " (run `codat-rotator resume --target " + t.Name + "`)"
		case t.Journal != nil:
			state = fmt.Sprintf("rotating (rotation %s, step %s)", t.Journal.RotationID, t.Journal.Step)
		case t.LastResult == "failed":
			state = "last rotation failed: " + t.LastError
		}
		fmt.Fprintf(w, "%s  (%s)\n", t.Name, t.Vault)
		fmt.Fprintf(w, "  state:          %s\n", state)
		if k := t.CurrentKey; k != nil {
			fmt.Fprintf(w, "  current key:    %s  %s  age %s\n", k.ID, k.Name, (time.Duration(k.AgeSeconds) * time.Second).String())
		} else {
			fmt.Fprintf(w, "  current key:    none yet\n")
		}
		for _, k := range t.Retiring {
			fmt.Fprintf(w, "  retiring:       %s  %s  deleted after %s\n", k.ID, k.Name, fmtTime(k.DeleteAfter))
		}
		fmt.Fprintf(w, "  next rotation:  %s\n", fmtTime(t.NextRotation))
		fmt.Fprintf(w, "  last success:   %s\n", fmtTime(t.LastSuccess))
		fmt.Fprintf(w, "  keys:           %d of %d used (%d reserved for emergencies)\n", t.KeysUsed, t.MaxKeys, t.ReserveSlots)
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// keysDoc is `keys`: what Codat holds, marked, never raw values.
type keysDoc struct {
	Targets []targetKeys `json:"targets"`
}

type targetKeys struct {
	Name  string     `json:"name"`
	Keys  []keyEntry `json:"keys"`
	Error string     `json:"error,omitempty"`
}

type keyEntry struct {
	ID      string     `json:"id"`
	Name    string     `json:"name,omitempty"`
	Created *time.Time `json:"created,omitempty"`
	// Marking is managed, adopted or foreign (unknown: not in the state).
	Marking string `json:"marking"`
	State   string `json:"state,omitempty"`
	Served  bool   `json:"served"`
}

// buildKeys lists each target's keys at Codat with the key Vault serves.
func buildKeys(ctx context.Context, a *app, targets []rotation.Target) keysDoc {
	doc := keysDoc{Targets: []targetKeys{}}
	for _, t := range targets {
		tk := targetKeys{Name: t.Name, Keys: []keyEntry{}}
		if err := listKeys(ctx, a, t, &tk); err != nil {
			tk.Error = err.Error()
		}
		doc.Targets = append(doc.Targets, tk)
	}
	return doc
}

func listKeys(ctx context.Context, a *app, t rotation.Target, tk *targetKeys) error {
	cur, err := a.vault.Read(ctx, t.Vault)
	if err != nil {
		return err
	}
	if cur.Secret == nil {
		return fmt.Errorf("%s holds no secret yet: nothing to list the keys with", t.Vault)
	}
	keys, err := a.engine.Codat(t.Name, cur.Secret.APIKey).List(ctx)
	if err != nil {
		return err
	}
	st, err := a.engine.Store.Load(t.Name)
	if err != nil {
		return err
	}
	for _, k := range keys {
		e := keyEntry{ID: k.ID, Name: k.Name, Created: timePtr(k.Created), Served: k.ID == cur.Secret.KeyID, Marking: "unknown"}
		if rec := st.Key(k.ID); rec != nil {
			e.State = string(rec.State)
			switch rec.Origin {
			case store.OriginCreated:
				e.Marking = "managed"
			default:
				e.Marking = string(rec.Origin)
			}
		} else if !rotation.OwnName(t.Prefix, k.Name) {
			e.Marking = "foreign"
		}
		tk.Keys = append(tk.Keys, e)
	}
	return nil
}

func printKeys(w io.Writer, doc keysDoc) error {
	var failed []string
	for _, t := range doc.Targets {
		fmt.Fprintf(w, "%s\n", t.Name)
		if t.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", t.Error)
			failed = append(failed, t.Name)
			continue
		}
		for _, k := range t.Keys {
			served := ""
			if k.Served {
				served = "  (served by vault)"
			}
			fmt.Fprintf(w, "  %-36s  %-8s  %-9s %-40s %s%s\n", k.ID, k.Marking, k.State, k.Name, fmtTime(k.Created), served)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not list keys of: %s", strings.Join(failed, ", "))
	}
	return nil
}

// rotateRequest is POST /v1/rotate.
type rotateRequest struct {
	Target    string `json:"target,omitempty"`
	Emergency bool   `json:"emergency,omitempty"`
	Revoke    string `json:"revoke,omitempty"`
	DryRun    bool   `json:"dry_run,omitempty"`
}

// rotateDoc is its answer: one entry per target.
type rotateDoc struct {
	Results []rotateEntry `json:"results"`
}

type rotateEntry struct {
	Target    string           `json:"target"`
	Result    *rotation.Result `json:"result,omitempty"`
	Plan      *rotation.Plan   `json:"plan,omitempty"`
	Error     string           `json:"error,omitempty"`
	Vault     string           `json:"vault"`
	Succeeded bool             `json:"succeeded"`
}

// printRotate prints a rotate answer and returns an error naming the
// targets that failed.
func printRotate(w io.Writer, doc rotateDoc) error {
	var failed []string
	for _, e := range doc.Results {
		t := rotation.Target{Name: e.Target}
		if e.Plan != nil {
			printPlan(w, e.Vault, *e.Plan)
		}
		if e.Result != nil || e.Error != "" {
			var res rotation.Result
			if e.Result != nil {
				res = *e.Result
			}
			var err error
			if e.Error != "" {
				err = errors.New(e.Error)
			}
			printResult(w, t.Name, e.Vault, res, err)
		}
		if !e.Succeeded {
			failed = append(failed, e.Target)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}
