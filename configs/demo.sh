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

if ! command -v curl >/dev/null; then
  echo "demo: curl is needed to talk to Vault and the emulator; install it (e.g. apt-get install curl) and run make demo again" >&2
  exit 1
fi

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
secret_key_id() { curl -s -H "X-Vault-Token: $VAULT_TOKEN" "$VAULT_ADDR/v1/secret/data/codat/demo" | sed -n 's/.*"key_id":"\([^"]*\)".*/\1/p'; }

step "a dry run: what the first rotation would do"
"$BIN" rotate --config configs/demo.yaml --dry-run --log-level warn

step "starting the daemon: codat-rotator run --config configs/demo.yaml (log: $DEMO_DIR/daemon.log)"
"$BIN" run --config configs/demo.yaml --log-format text >"$DEMO_DIR/daemon.log" 2>&1 &
pids+=($!)
# It never rotated, so it catches up at once: bootstrap, then a rotation.
for _ in $(seq 100); do [ -n "$(secret_key_id)" ] && [ -S "$DEMO_DIR/admin.sock" ] && break; sleep 0.1; done
[ -n "$(secret_key_id)" ] || { echo "demo: the daemon did not publish a key:"; cat "$DEMO_DIR/daemon.log"; exit 1; }
sleep 0.5

step "codat-rotator status (through the daemon's admin socket)"
"$BIN" status --config configs/demo.yaml

step "what consumers read: vault kv get secret/codat/demo"
"$VAULT" kv get secret/codat/demo | sed -E 's/^(api_key|authorization_header)( +)(.{12}).*/\1\2\3… (cut here)/'

step "a manual rotation through the running daemon: codat-rotator rotate"
"$BIN" rotate --config configs/demo.yaml

step "codat-rotator keys"
"$BIN" keys --config configs/demo.yaml

step "metrics: curl -s 127.0.0.1:19464/metrics | grep codat_rotator_rotations_total"
curl -s http://127.0.0.1:19464/metrics | grep '^codat_rotator_rotations_total' || true

step "the emulator's record: violations of the invariants"
curl -s http://127.0.0.1:$CODAT_PORT/_emulator/violations

if [ "$DEMO_WAIT" = 0 ]; then exit 0; fi
cat <<MSG

The daemon rotates every 20 s. Where to look, in another shell:
  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=$VAULT_TOKEN DEMO_DIR=$DEMO_DIR
  ./bin/codat-rotator status --config configs/demo.yaml
  ./bin/codat-rotator rotate --config configs/demo.yaml --emergency
  GOTOOLCHAIN=go1.27.3 go run ./examples/consumer -codat-url http://127.0.0.1:$CODAT_PORT -vault-path codat/demo -interval 5s -every 2s
  vault kv get -field=authorization_header secret/codat/demo
  curl -s 127.0.0.1:19464/metrics | grep codat_rotator_
  tail -f $DEMO_DIR/daemon.log
Press Ctrl-C to stop everything.
MSG
tail -f "$DEMO_DIR/daemon.log" &
pids+=($!)
while true; do sleep 3600; done
