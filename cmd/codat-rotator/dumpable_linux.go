package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// setNonDumpable makes this process non-dumpable, as ssh-agent does: no
// core dump of its memory (which holds Codat keys and the Vault token),
// no ptrace and no /proc/<pid>/mem, environ or fd by another process of
// the same user; the kernel makes its /proc/<pid> files root's.
func setNonDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
