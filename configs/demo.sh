#!/usr/bin/env bash
# The README's first command (make demo): a local Vault dev server, the
# Codat emulator, and codat-rotator rotating against them. Ctrl-C stops
# everything it started. DEMO_WAIT=0 exits after the rotations (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=./bin/codat-rotator
VAULT=${VAULT_BIN:-$(command -v vault || echo ./bin/vault)}
VAULT_PORT=18200
CODAT_PORT=18484
DEMO_WAIT=${DEMO_WAIT:-1}

for port in $VAULT_PORT $CODAT_PORT; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo: port $port is busy (another demo running?)" >&2
    exit 1
  fi
done

DEMO_DIR=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

export VAULT_ADDR=http://127.0.0.1:$VAULT_PORT
export VAULT_TOKEN=demo-root-$RANDOM$RANDOM
"$VAULT" server -dev -dev-listen-address=127.0.0.1:$VAULT_PORT -dev-root-token-id="$VAULT_TOKEN" -dev-no-store-token \
  >"$DEMO_DIR/vault.log" 2>&1 &
pids+=($!)
"$BIN" emulator --listen 127.0.0.1:$CODAT_PORT --log-format text >"$DEMO_DIR/codat-key" 2>"$DEMO_DIR/emulator.log" &
pids+=($!)

# Ready when the dev server's KV v2 engine at secret/ answers.
for _ in $(seq 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/secret/config" || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
[ "$code" = 200 ] || { echo "demo: vault did not start:"; cat "$DEMO_DIR/vault.log"; exit 1; }
for _ in $(seq 50); do [ -s "$DEMO_DIR/codat-key" ] && break; sleep 0.1; done
export CODAT_BOOTSTRAP_API_KEY=$(head -1 "$DEMO_DIR/codat-key")
export DEMO_DIR
[ -n "$CODAT_BOOTSTRAP_API_KEY" ] || { echo "demo: the emulator did not start:"; cat "$DEMO_DIR/emulator.log"; exit 1; }

step() { echo; echo "== $*"; }
step "a dry run: what the first rotation would do"
"$BIN" rotate --config configs/demo.yaml --dry-run --log-level warn
step "first rotation: publish the emulator's first key to Vault, then rotate it"
"$BIN" rotate --config configs/demo.yaml
step "what consumers read"
"$VAULT" kv get secret/codat/demo
step "the header, as an application would fetch it"
echo "vault kv get -field=authorization_header secret/codat/demo"
echo "  → $("$VAULT" kv get -field=authorization_header secret/codat/demo | cut -c1-14)… (redacted here)"
step "an emergency rotation: the old keys go at once"
"$BIN" rotate --config configs/demo.yaml --emergency
step "keys at the emulator"
curl -s http://127.0.0.1:$CODAT_PORT/_emulator/keys
curl -s http://127.0.0.1:$CODAT_PORT/_emulator/violations

if [ "$DEMO_WAIT" = 0 ]; then exit 0; fi
cat <<MSG

The Vault dev server and the Codat emulator keep running. In another shell:
  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=$VAULT_TOKEN DEMO_DIR=$DEMO_DIR CODAT_BOOTSTRAP_API_KEY=unused
  ./bin/codat-rotator rotate --config configs/demo.yaml
  vault kv get secret/codat/demo
Press Ctrl-C to stop everything.
MSG
while true; do sleep 3600; done
