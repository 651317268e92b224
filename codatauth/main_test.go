package codatauth_test

import (
	"os"
	"testing"

	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// TestMain stops the Vault dev server the tests started, if any.
func TestMain(m *testing.M) {
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}
