package notify

import (
	"context"
	"log/slog"
	"strconv"
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

// Reloading opens a config reload; Ready closes it. MONOTONIC_USEC is
// the time of the request on CLOCK_MONOTONIC: systemd ≥ 253 wants it
// with RELOADING=1 (and Type=notify-reload needs it), 252 ignores it.
// The unit's ExecReload (`codat-rotator reload`) waits for the daemon's
// answer, so `systemctl reload` ends when the reload does on both.
func (n Systemd) Reloading() {
	msg := daemon.SdNotifyReloading
	if usec, ok := monotonicUsec(); ok {
		msg += "\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10)
	}
	n.send(msg + "\nSTATUS=reloading the config")
}

// Watchdog feeds systemd's watchdog (WatchdogSec=) at half its
// interval, the one timer it keeps, while check answers nil within
// CheckTimeout (or a quarter of the interval if shorter): a wedged
// scheduler gets the service restarted. It returns at once when no
// watchdog is configured, so outside systemd it costs no wake-up.
func (n Systemd) Watchdog(ctx context.Context, check func(context.Context) error) {
	interval := WatchdogInterval()
	if interval <= 0 {
		return
	}
	timeout := min(CheckTimeout, interval/4)
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			cctx, cancel := context.WithTimeout(ctx, timeout)
			err := check(cctx)
			cancel()
			if err == nil {
				n.send(daemon.SdNotifyWatchdog)
			} else if ctx.Err() == nil {
				n.Log.Error("scheduler wedged; not feeding the watchdog", "error", err)
			}
		}
	}
}

// CheckTimeout is how long a liveness probe waits for the scheduler to
// answer before it calls it wedged.
const CheckTimeout = 2 * time.Second

// WatchdogInterval is systemd's WatchdogSec (0 when none is set).
func WatchdogInterval() time.Duration {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return interval
}
