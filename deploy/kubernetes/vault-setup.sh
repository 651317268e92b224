#!/bin/sh
# The Vault side of deploy/kubernetes, run by a Vault admin with the vault
# CLI (VAULT_ADDR and a privileged VAULT_TOKEN set). kustomize does not
# apply it. It can run again at any time: each step sets the same state.
# Adjust the secret paths to your targets' vault.mount and vault.path in
# config.yaml.
#
# How Vault reaches the cluster's API server, to check the pod's token
# with a TokenReview (KUBERNETES_HOST unset: leave an existing
# configuration of the auth mount alone):
#
#   Vault outside the cluster (a central Vault):
#     KUBERNETES_HOST=https://api.example:6443 \
#     KUBERNETES_CA_CERT=ca.crt \
#     TOKEN_REVIEWER_JWT_FILE=reviewer.jwt \
#       sh deploy/kubernetes/vault-setup.sh
#   where ca.crt is the API server's CA and reviewer.jwt the token of a
#   service account bound to system:auth-delegator (vault-reviewer.yaml
#   makes one; docs/operations.md shows how to get its token). Without
#   TOKEN_REVIEWER_JWT_FILE, Vault reviews each login with the logging-in
#   pod's own token: that token must then be accepted by the API server
#   (AUDIENCE set to the API server's audience, in statefulset.yaml too)
#   and its service account bound to system:auth-delegator.
#
#   Vault inside the same cluster:
#     KUBERNETES_HOST=https://kubernetes.default.svc sh deploy/kubernetes/vault-setup.sh
#   Vault then uses its own pod's CA and token as the reviewer.
#
# Other settings, with their defaults: AUDIENCE=vault (the audience of
# the projected token in statefulset.yaml: the role accepts no other),
# NAMESPACE=codat-rotator, SERVICE_ACCOUNT=codat-rotator,
# ROLE=codat-rotator, AUTH_MOUNT=kubernetes.
set -eu

AUDIENCE=${AUDIENCE:-vault}
NAMESPACE=${NAMESPACE:-codat-rotator}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-codat-rotator}
ROLE=${ROLE:-codat-rotator}
AUTH_MOUNT=${AUTH_MOUNT:-kubernetes}

fail() {
	echo "vault-setup.sh: $*" >&2
	exit 2
}

# Check what was given before changing anything.
if [ -n "${KUBERNETES_HOST:-}" ]; then
	if [ -n "${KUBERNETES_CA_CERT:-}" ] && [ ! -r "$KUBERNETES_CA_CERT" ]; then
		fail "KUBERNETES_CA_CERT=$KUBERNETES_CA_CERT: not a readable file (the API server's CA certificate, PEM)"
	fi
	if [ -n "${TOKEN_REVIEWER_JWT_FILE:-}" ]; then
		[ -n "${KUBERNETES_CA_CERT:-}" ] ||
			fail "TOKEN_REVIEWER_JWT_FILE is set but KUBERNETES_CA_CERT is not: a Vault outside the cluster needs the API server's CA"
		[ -s "$TOKEN_REVIEWER_JWT_FILE" ] ||
			fail "TOKEN_REVIEWER_JWT_FILE=$TOKEN_REVIEWER_JWT_FILE: not a readable, non-empty file (the reviewer service account's token)"
	fi
elif [ -n "${KUBERNETES_CA_CERT:-}${TOKEN_REVIEWER_JWT_FILE:-}" ]; then
	fail "KUBERNETES_CA_CERT or TOKEN_REVIEWER_JWT_FILE is set without KUBERNETES_HOST: set the API server's URL as Vault reaches it"
fi

# A KV version 2 engine at secret/ (left alone if there is one).
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

vault auth list -format=json | grep -q "\"$AUTH_MOUNT/\"" ||
	vault auth enable -path="$AUTH_MOUNT" kubernetes

# The whole configuration is written each time, so a run with other
# settings replaces the previous ones (a reviewer token dropped here is
# dropped in Vault too).
if [ -n "${KUBERNETES_HOST:-}" ]; then
	if [ -n "${KUBERNETES_CA_CERT:-}" ]; then
		# Outside the cluster: no local CA or token to fall back on.
		if [ -n "${TOKEN_REVIEWER_JWT_FILE:-}" ]; then
			vault write "auth/$AUTH_MOUNT/config" \
				kubernetes_host="$KUBERNETES_HOST" \
				kubernetes_ca_cert=@"$KUBERNETES_CA_CERT" \
				token_reviewer_jwt=@"$TOKEN_REVIEWER_JWT_FILE" \
				disable_local_ca_jwt=true
		else
			vault write "auth/$AUTH_MOUNT/config" \
				kubernetes_host="$KUBERNETES_HOST" \
				kubernetes_ca_cert=@"$KUBERNETES_CA_CERT" \
				token_reviewer_jwt= \
				disable_local_ca_jwt=true
		fi
	else
		# Inside the cluster: Vault reads its own pod's CA and token.
		vault write "auth/$AUTH_MOUNT/config" \
			kubernetes_host="$KUBERNETES_HOST" \
			kubernetes_ca_cert= \
			token_reviewer_jwt= \
			disable_local_ca_jwt=false
	fi
fi

# The role the pod logs in with: its ServiceAccount in its namespace,
# with a token minted for AUDIENCE (the projected token of
# statefulset.yaml); a token of any other audience is refused.
vault write "auth/$AUTH_MOUNT/role/$ROLE" \
	bound_service_account_names="$SERVICE_ACCOUNT" \
	bound_service_account_namespaces="$NAMESPACE" \
	audience="$AUDIENCE" \
	policies=codat-rotator \
	ttl=1h
