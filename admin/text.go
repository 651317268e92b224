package admin

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/printable"
)

// The reports as the commands print them for a person. Key names and
// error messages come from outside (anyone holding a key can name one):
// every report is written through printable.Writer, so that a control
// character in them is shown, not acted on by the terminal.

// WriteText prints the status of each target.
func (r StatusReport) WriteText(w io.Writer) {
	w = printable.Writer(w) // names and messages from Codat reach a terminal
	for i, t := range r.Targets {
		if i > 0 {
			fmt.Fprintln(w)
		}
		state := "ok"
		switch {
		case t.Blocked != "":
			state = "BLOCKED since " + fmtTime(t.BlockedSince) + ": " + t.Blocked
		case t.Halted:
			state = "HALTED: " + t.HaltReason + " (run `codat-rotator resume --target " + t.Name + "`)"
		case t.WaitingSince != nil:
			state = fmt.Sprintf("waiting for a rotation slot since %s (%d of max_concurrent_rotations %d running, %d waiting)",
				fmtTime(t.WaitingSince), r.Rotations.Running, r.Rotations.Limit, r.Rotations.Waiting)
		case t.Retry != nil:
			state = fmt.Sprintf("retrying: attempt %d of %d at %s, after: %s", t.Retry.Attempt, t.Retry.Attempts, fmtTime(&t.Retry.At), t.Retry.Error)
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
		next := fmtTime(t.NextRotation)
		switch {
		case !r.Daemon:
			next = "none: no daemon is running (the daemon plans it when it starts)"
		case t.Halted:
			next += " (skipped while halted)"
		}
		fmt.Fprintf(w, "  next rotation:  %s\n", next)
		fmt.Fprintf(w, "  last success:   %s\n", fmtTime(t.LastSuccess))
		fmt.Fprintf(w, "  keys:           %d of %d used (%d reserved for emergencies)\n", t.KeysUsed, t.MaxKeys, t.ReserveSlots)
		if len(t.SharesClientWith) > 0 {
			fmt.Fprintf(w, "  shared client:  %s\n", SharedClientText(t.SharesClientWith, t.MaxKeys, t.ReserveSlots))
		}
		if t.CapNote != "" {
			fmt.Fprintf(w, "  cap:            %s\n", t.CapNote)
		}
		if t.ServedDoubt != "" {
			fmt.Fprintf(w, "  served key:     IN DOUBT: %s\n", t.ServedDoubt)
		}
		if t.Unclaimed != "" {
			fmt.Fprintf(w, "  owner:          NOT RECORDED, so nothing stops a second daemon on this target: %s (give the Vault policy patch on the metadata path)\n", t.Unclaimed)
		}
	}
}

// SharedClientText says what sharing a Codat client with others means
// for the cap.
func SharedClientText(others []string, maxKeys, reserve int) string {
	return fmt.Sprintf("the Codat client is shared with %s: their keys count as foreign toward the one cap of %d, and routine rotations of all of them together keep %d slot(s) free for an emergency",
		strings.Join(others, ", "), maxKeys, reserve)
}

// WriteText prints each target's keys, or why they could not be listed.
func (r KeysReport) WriteText(w io.Writer) {
	w = printable.Writer(w) // names and messages from Codat reach a terminal
	for _, t := range r.Targets {
		fmt.Fprintf(w, "%s\n", t.Name)
		if len(t.SharesClientWith) > 0 {
			fmt.Fprintf(w, "  note: %s\n", SharedClientText(t.SharesClientWith, t.MaxKeys, t.ReserveSlots))
		}
		if t.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", t.Error)
			continue
		}
		if t.ServedDoubt != "" {
			fmt.Fprintf(w, "  served key in doubt: %s\n", t.ServedDoubt)
		}
		for _, k := range t.Keys {
			served := ""
			if k.Served {
				served = "  (served by vault)"
			}
			fmt.Fprintf(w, "  %-36s  %-8s  %-9s %-40s %s%s\n", k.ID, k.Marking, k.State, k.Name, fmtTime(k.Created), served)
		}
	}
}

// WriteText prints what a takeover found and did.
func (r TakeoverReport) WriteText(w io.Writer) {
	w = printable.Writer(w) // names and messages from Codat reach a terminal
	prev := r.PreviousOwner
	if prev == "" {
		prev = "no recorded owner"
	}
	fmt.Fprintf(w, "%s: taken over from %s; now owned by %s\n", r.Target, prev, r.Owner)
	fmt.Fprintf(w, "  read %d version(s) of the secret\n", r.Versions)
	for _, k := range r.Rebuilt {
		switch {
		case k.DeleteAfter != nil:
			fmt.Fprintf(w, "  took on %s  %s  retires after %s\n", k.ID, k.Name, fmtTime(k.DeleteAfter))
		default:
			fmt.Fprintf(w, "  took on %s  %s  (served by vault)\n", k.ID, k.Name)
		}
	}
	if len(r.Foreign) > 0 {
		fmt.Fprintf(w, "  left as foreign (not attributable to this target): %s\n", strings.Join(r.Foreign, ", "))
	}
}

// Failed names the targets whose keys could not be listed.
func (r KeysReport) Failed() []string {
	var failed []string
	for _, t := range r.Targets {
		if t.Error != "" {
			failed = append(failed, t.Name)
		}
	}
	return failed
}

// WriteText prints what each rotation did, or each plan.
func (r RotateReport) WriteText(w io.Writer) {
	w = printable.Writer(w) // names and messages from Codat reach a terminal
	for _, e := range r.Results {
		if e.Plan != nil {
			e.Plan.writeText(w, e.Target, e.Vault)
		}
		if e.Result != nil || e.Error != "" {
			var res RotationResult
			if e.Result != nil {
				res = *e.Result
			}
			res.writeText(w, e.Target, e.Vault, e.Error)
		}
	}
}

// ConfigError reports whether a target failed on its configuration.
func (r RotateReport) ConfigError() bool {
	for _, e := range r.Results {
		if e.ConfigError {
			return true
		}
	}
	return false
}

// Failed names the targets whose rotation (or plan) failed.
func (r RotateReport) Failed() []string {
	var failed []string
	for _, e := range r.Results {
		if !e.Succeeded {
			failed = append(failed, e.Target)
		}
	}
	return failed
}

func (res RotationResult) writeText(w io.Writer, name, vaultPath, errText string) {
	if res.Bootstrapped {
		fmt.Fprintf(w, "%s: bootstrap key published to %s and adopted\n", name, vaultPath)
	}
	if k := res.NewKey; k != nil {
		how := "rotated"
		if res.Recovered {
			how = "finished the rotation a crash interrupted"
		}
		fmt.Fprintf(w, "%s: %s: key %s (%s) published to %s\n", name, how, k.ID, k.Name, vaultPath)
	}
	deleted := map[string]bool{}
	for _, id := range res.Deleted {
		deleted[id] = true
	}
	for _, k := range res.Retiring {
		if !deleted[k.ID] {
			fmt.Fprintf(w, "%s: retiring key %s, to be deleted after %s\n", name, k.ID, fmtTime(k.DeleteAfter))
		}
	}
	for _, id := range res.Deleted {
		fmt.Fprintf(w, "%s: deleted key %s\n", name, id)
	}
	if errText != "" {
		fmt.Fprintf(w, "%s: failed: %s\n", name, errText)
	}
}

func (p RotationPlan) writeText(w io.Writer, name, vaultPath string) {
	fmt.Fprintf(w, "%s: dry run, nothing changed\n", name)
	if p.Journal != nil {
		fmt.Fprintf(w, "  an interrupted rotation (%s, step %s) would be resumed or rolled back first\n", p.Journal.RotationID, p.Journal.Step)
	}
	if p.Bootstrap {
		fmt.Fprintf(w, "  %s holds no secret: the bootstrap key (%s) would be published and adopted\n", vaultPath, p.ServedKeyID)
	} else {
		fmt.Fprintf(w, "  %s serves key %s\n", vaultPath, p.ServedKeyID)
	}
	fmt.Fprintf(w, "  codat holds %d keys (%d foreign); this rotation may hold %d\n", p.CodatKeys, p.Foreign, p.Limit)
	for _, id := range p.Orphans {
		fmt.Fprintf(w, "  would delete orphan key %s (it has this target's name shape and its state does not know it)\n", id)
	}
	for _, k := range p.MakeRoom {
		fmt.Fprintf(w, "  would delete key %s to make room\n", k.ID)
	}
	fmt.Fprintf(w, "  would create key %s\n", p.NewKeyName)
	for _, k := range p.Retire {
		fmt.Fprintf(w, "  would retire key %s, deleted after %s\n", k.ID, fmtTime(k.DeleteAfter))
	}
	if p.Revoke != "" {
		fmt.Fprintf(w, "  would revoke key %s\n", p.Revoke)
	}
	for _, id := range p.RetireNow {
		fmt.Fprintf(w, "  would then delete key %s: its grace is over\n", id)
	}
	if p.Blocked != "" {
		fmt.Fprintf(w, "  blocked: %s\n", p.Blocked)
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
