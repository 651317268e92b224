#!/usr/bin/env bash
# Rotate one Codat API key the way it is done without codat-rotator:
# curl, jq and the Vault CLI. It is the baseline of docs/benchmarks.md,
# not a tool: no journal, no retry, no grace, no cap beyond a count.
#
# Needs CODAT_URL, VAULT_ADDR, VAULT_TOKEN, MOUNT and SECRET_PATH; the
# secret must hold api_key and key_id. VAULT names the vault binary.
set -euo pipefail
vault=${VAULT:-vault}
codat=${CODAT_URL%/}
basic() { printf 'Basic %s' "$(printf '%s' "$1" | base64 -w0)"; }

# 1. The key Vault serves, to call Codat with.
current=$("$vault" kv get -format=json -mount="$MOUNT" "$SECRET_PATH")
old_key=$(jq -r '.data.data.api_key' <<<"$current")
old_id=$(jq -r '.data.data.key_id' <<<"$current")

# 2. List the keys: is there room?
count=$(curl -fsS -H "Authorization: $(basic "$old_key")" "$codat/apiKeys" | jq '.results | length')
if [ "$count" -ge 10 ]; then
  echo "no room: codat holds $count keys" >&2
  exit 1
fi

# 3. Create.
name="script-$(date -u +%Y%m%dT%H%M%SZ)-$RANDOM"
new=$(curl -fsS -X POST -H "Authorization: $(basic "$old_key")" -H 'Content-Type: application/json' \
  -d "$(jq -n --arg name "$name" '{name: $name}')" "$codat/apiKeys")
new_key=$(jq -r .apiKey <<<"$new")
new_id=$(jq -r .id <<<"$new")

# 4. Verify: the new key authenticates and sees itself.
curl -fsS -H "Authorization: $(basic "$new_key")" "$codat/apiKeys" |
  jq -e --arg id "$new_id" 'any(.results[]; .id == $id)' >/dev/null

# 5. Publish (the key on stdin, not on the command line) and read back.
jq -n --arg key "$new_key" --arg header "$(basic "$new_key")" --arg id "$new_id" --arg name "$name" \
  --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg prev "$old_id" \
  '{api_key: $key, authorization_header: $header, key_id: $id, key_name: $name, rotated_at: $at, previous_key_id: $prev}' |
  "$vault" kv put -mount="$MOUNT" "$SECRET_PATH" - >/dev/null
served=$("$vault" kv get -mount="$MOUNT" -field=key_id "$SECRET_PATH")
if [ "$served" != "$new_id" ]; then
  echo "read back: vault serves $served, not $new_id" >&2
  exit 1
fi

# 6. Delete the old key, at once (no grace).
curl -fsS -X DELETE -H "Authorization: $(basic "$new_key")" "$codat/apiKeys/$old_id"
