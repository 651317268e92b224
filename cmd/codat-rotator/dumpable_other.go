//go:build !linux

package main

import "errors"

// setNonDumpable is Linux only (prctl PR_SET_DUMPABLE).
func setNonDumpable() error {
	return errors.New("not supported on this system (Linux only)")
}
