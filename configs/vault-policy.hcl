# The least privilege codat-rotator needs, for targets whose secrets live
# under secret/codat/* (the example config's vault.mount and vault.path).
# Change "secret" to your KV v2 mount and "codat" to your path prefix.
#
#   vault policy write codat-rotator configs/vault-policy.hcl

# Publish each target's key with check-and-set and read it back.
path "secret/data/codat/*" {
  capabilities = ["create", "read", "update"]
}

# Set the custom metadata (managed-by, target) on each secret, and read
# the current version of a secret whose latest version was deleted.
path "secret/metadata/codat/*" {
  capabilities = ["read", "patch"]
}

# Keep the daemon's own token alive (also in Vault's "default" policy;
# listed here for tokens created without it).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Let `codat-rotator check` ask which of the capabilities above the token
# holds, so that a missing one is found before a rotation needs it (also
# in Vault's "default" policy).
path "sys/capabilities-self" {
  capabilities = ["update"]
}
