//go:build !linux

package notify

// monotonicUsec: systemd runs only on Linux.
func monotonicUsec() (uint64, bool) { return 0, false }
