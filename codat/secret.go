package codat

import "github.com/codat-rotator/codat-rotator/secret"

// Secret is a raw Codat API key that redacts itself; see secret.Value.
// The type lives in the leaf package secret so that vault/ can hold keys
// without importing this package.
type Secret = secret.Value
