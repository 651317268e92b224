package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's sd_notify protocol when NOTIFY_SOCKET is set
// (Type=notify); otherwise every call does nothing.
type notifier struct {
	log *slog.Logger
}

func (n notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "error", err)
	}
}

// Ready tells systemd that start-up is done.
func (n notifier) Ready(status string) { n.send(daemon.SdNotifyReady + "\nSTATUS=" + status) }

// Stopping tells systemd that shutdown began.
func (n notifier) Stopping() { n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping") }

// Reloading brackets a config reload.
func (n notifier) Reloading() { n.send(daemon.SdNotifyReloading) }

// Watchdog feeds systemd's watchdog (WatchdogSec=) at half its interval
// while alive() holds, so a wedged scheduler gets the service restarted.
// It returns at once when no watchdog is configured.
func (n notifier) Watchdog(ctx context.Context, alive func(max time.Duration) bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// The heartbeat ticks every second: allow a few of them.
			if alive(max(interval, 3*time.Second)) {
				n.send(daemon.SdNotifyWatchdog)
			} else {
				n.log.Error("scheduler loop stalled; not feeding the watchdog")
			}
		}
	}
}
