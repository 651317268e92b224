// Command vault builds the HashiCorp Vault CLI and server from a pinned
// module version, so tests and the demo have a real `vault server -dev`
// on machines where no vault binary is installed. It lives in its own
// module so that Vault's large dependency graph never enters the
// product's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
