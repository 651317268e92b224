#!/bin/sh
# The Vault side of deploy/kubernetes, run once by a Vault admin with the
# vault CLI (VAULT_ADDR and a privileged VAULT_TOKEN set). kustomize does
# not apply it. Adjust the secret paths to your targets' vault.mount and
# vault.path in config.yaml.
set -eu

# A KV version 2 engine at secret/ (skip if you have one).
vault secrets list -format=json | grep -q '"secret/"' ||
	vault secrets enable -path=secret -version=2 kv

# What the daemon does with each target's secret: read it, write new
# versions with check-and-set, read the metadata to learn the current
# version, and set its custom metadata (managed-by, target).
vault policy write codat-rotator - <<'POLICY'
path "secret/data/codat/production" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/codat/production" {
  capabilities = ["read", "patch"]
}
POLICY

# Kubernetes auth: Vault checks the pod's service-account token with the
# cluster's API server. KUBERNETES_HOST is that server as Vault reaches it
# (https://kubernetes.default.svc when Vault runs in the cluster); a Vault
# outside the cluster also needs kubernetes_ca_cert and token_reviewer_jwt
# (see Vault's Kubernetes auth documentation). Unset: leave the existing
# configuration alone.
vault auth list -format=json | grep -q '"kubernetes/"' ||
	vault auth enable kubernetes
if [ -n "${KUBERNETES_HOST:-}" ]; then
	vault write auth/kubernetes/config kubernetes_host="$KUBERNETES_HOST"
fi

# The role the pod logs in with: its ServiceAccount in its namespace.
vault write auth/kubernetes/role/codat-rotator \
	bound_service_account_names=codat-rotator \
	bound_service_account_namespaces=codat-rotator \
	policies=codat-rotator \
	ttl=1h
