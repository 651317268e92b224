package notify

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Systemd speaks systemd's sd_notify protocol when NOTIFY_SOCKET is set
// (Type=notify); otherwise every call does nothing.
type Systemd struct {
	Log *slog.Logger
}

func (n Systemd) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.Log.Warn("sd_notify failed", "state", state, "error", err)
	}
}

// Ready tells systemd that start-up is done.
func (n Systemd) Ready(status string) { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }

// Stopping tells systemd that shutdown began.
func (n Systemd) Stopping() { n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping") }

// Reloading brackets a config reload.
func (n Systemd) Reloading() { n.send(daemon.SdNotifyReloading) }

// Watchdog feeds systemd's watchdog (WatchdogSec=) at half its interval
// while alive() holds, so a wedged scheduler gets the service restarted.
// It returns at once when no watchdog is configured.
func (n Systemd) Watchdog(ctx context.Context, alive func(max time.Duration) bool, heartbeat time.Duration) {
	interval := WatchdogInterval()
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// Allow a few heartbeats of age.
			if alive(max(interval, 3*heartbeat)) {
				n.send(daemon.SdNotifyWatchdog)
			} else {
				n.Log.Error("scheduler loop stalled; not feeding the watchdog")
			}
		}
	}
}

// WatchdogInterval is systemd's WatchdogSec (0 when none is set).
func WatchdogInterval() time.Duration {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return interval
}

// HeartbeatFor picks the scheduler's heartbeat: a third of the watchdog
// interval (at least 1 s), at most 10 s. Waking less often is what keeps
// an idle daemon's CPU near zero.
func HeartbeatFor(watchdog time.Duration) time.Duration {
	if watchdog <= 0 {
		return 10 * time.Second
	}
	return min(max(watchdog/3, time.Second), 10*time.Second)
}
