package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// binary is the real program, built once for the whole-binary tests.
var binary string

func TestMain(m *testing.M) {
	if path := os.Getenv(loadChildEnv); path != "" {
		os.Exit(loadChild(path)) // a benchmark's child (bench_config_test.go)
	}
	dir, err := os.MkdirTemp("", "codat-rotator-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "codat-rotator")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build codat-rotator:", err)
		os.Exit(1)
	}
	code := m.Run()
	vaulttest.StopShared()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the binary to completion and returns its exit code and output.
func run(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	}
	if err != nil {
		tb.Fatal(err)
	}
	return 0, o.String(), e.String()
}

func TestUsageErrors(t *testing.T) {
	shortKey := filepath.Join(t.TempDir(), "short-key")
	if err := os.WriteFile(shortKey, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no command", nil, "usage: codat-rotator <command>"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"emulator", "--nope"}, "flag provided but not defined: -nope"},
		{"listen without port", []string{"emulator", "--listen", "localhost"}, `--listen "localhost": want host:port`},
		{"listen on a busy port", []string{"emulator", "--listen", busy.Addr().String()}, "address already in use"},
		{"listen on a foreign address", []string{"emulator", "--listen", "192.0.2.1:0", "--allow-remote"}, "cannot assign requested address"},
		{"listen beyond loopback", []string{"emulator", "--listen", "0.0.0.0:0"}, `--listen "0.0.0.0:0": not a loopback address; the emulator makes and lists raw keys for anyone who reaches it`},
		{"listen on every address", []string{"emulator", "--listen", ":0"}, `--listen ":0": not a loopback address`},
		{"listen on localhost.", []string{"emulator", "--listen", "localhost.:0"}, `--listen "localhost.:0": not a loopback address`},
		{"initial key in the arguments", []string{"emulator", "--listen", "127.0.0.1:0", "--initial-key", "abcdefgh12345678"}, "--initial-key: a key in the arguments is visible to every user in ps; put it in a file (--initial-key-file FILE) or in $CODAT_EMULATOR_INITIAL_KEY"},
		{"initial key file missing", []string{"emulator", "--listen", "127.0.0.1:0", "--initial-key-file", "/nonexistent/key"}, "--initial-key-file: open /nonexistent/key: no such file or directory"},
		{"bad faults", []string{"emulator", "--faults", `{"create":{"fail_rate":2}}`}, "create.fail_rate: 2 is not between 0 and 1"},
		{"unknown fault", []string{"emulator", "--faults", `{"create":{"explode":1}}`}, `unknown field "explode"`},
		{"stray argument", []string{"emulator", "now"}, `unexpected argument "now"`},
		{"bad log level", []string{"emulator", "--listen", "127.0.0.1:0", "--log-level", "loud"}, `log level "loud"`},
		{"short initial key", []string{"emulator", "--listen", "127.0.0.1:0", "--initial-key-file", shortKey}, "initial key: want 8 to 256 characters"},
		{"negative fleet", []string{"emulator", "--listen", "127.0.0.1:0", "--fleet", "-1"}, "--fleet -1: must be between 1 and 100000 (0 or unset: one client)"},
		{"fleet with a given key", []string{"emulator", "--listen", "127.0.0.1:0", "--fleet", "2", "--initial-key-file", shortKey}, "--fleet: each client of a fleet generates its own first key, printed on stdout; --initial-key-file and $CODAT_EMULATOR_INITIAL_KEY are for one client"},
		{"ip limit without a fleet", []string{"emulator", "--listen", "127.0.0.1:0", "--ip-limit", "5"}, "--ip-limit needs --fleet"},
		{"negative ip limit", []string{"emulator", "--listen", "127.0.0.1:0", "--fleet", "2", "--ip-limit", "-5"}, "--ip-limit -5: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit code: got %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr: want %q in\n%s", tt.want, stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, stdout, _ := run(t, "help")
	if code != 0 || !strings.Contains(stdout, "emulator") || !strings.Contains(stdout, "version") {
		t.Fatalf("help: exit %d, stdout:\n%s", code, stdout)
	}
	code, _, stderr := run(t, "emulator", "-h")
	if code != 0 || !strings.Contains(stderr, "-listen address") || !strings.Contains(stderr, `(default "127.0.0.1:8484")`) {
		t.Fatalf("emulator -h: exit %d, stderr:\n%s", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "codat-rotator ") || !strings.Contains(stdout, "go: go1.") {
		t.Fatalf("version: exit %d, stdout:\n%s", code, stdout)
	}
}

// TestEveryCommandTakesConfig: the README says all commands take
// --config; version and the emulator accept it and read nothing.
func TestEveryCommandTakesConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if code, stdout, stderr := run(t, "version", "--config", missing); code != 0 || !strings.HasPrefix(stdout, "codat-rotator ") {
		t.Errorf("version --config: exit %d\n%s%s", code, stdout, stderr)
	}
	cmd := exec.Command(binary, "emulator", "--config", missing, "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "CODAT_EMULATOR_INITIAL_KEY=abcdefgh12345678")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("emulator --config exited early: %v\n%s", err, out.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("emulator --config: %v\n%s", err, out.String())
	}
	for _, c := range commands {
		if code, stdout, stderr := run(t, c.name, "-h"); code != 0 || !strings.Contains(stdout+stderr, "-config file") {
			t.Errorf("%s -h: exit %d, no -config in:\n%s%s", c.name, code, stdout, stderr)
		}
	}
}

func TestEmulatorCommand(t *testing.T) {
	cmd := exec.Command(binary, "emulator", "--listen", "127.0.0.1:0", "--log-format", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// stdout's one line is the generated key, ready for a script.
	key, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	key = strings.TrimSpace(key)
	if len(key) != 40 {
		t.Fatalf("printed key %q: want 40 characters", key)
	}
	var addr string
	logs := bufio.NewScanner(stderr)
	var logged bytes.Buffer
	for logs.Scan() {
		logged.WriteString(logs.Text() + "\n")
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", logs.Text())
		}
		if rec.Msg == "emulator listening" {
			addr = rec.Addr
			break
		}
	}
	if addr == "" {
		t.Fatalf("no address logged:\n%s", logged.String())
	}
	go func() { _, _ = io.Copy(&logged, stderr) }()

	req, _ := http.NewRequest("GET", "http://"+addr+"/apiKeys", nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(key)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), key) {
		t.Fatalf("list with the printed key: %d %s", resp.StatusCode, body)
	}

	// Faults can be set while it runs.
	resp, err = http.Post("http://"+addr+"/_emulator/faults", "application/json", strings.NewReader(`{"list":{"fail":1,"fail_status":503}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("set faults: %d", resp.StatusCode)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("after the fault: got %d, want 503", resp.StatusCode)
	}

	// SIGTERM stops it cleanly.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("emulator did not stop on SIGTERM")
	}
}

// TestEmulatorFleet: --fleet N serves N clients behind one address,
// each with its own first key on stdout's line i+1, and --ip-limit
// counts the requests of all of them, as Codat counts one IP.
func TestEmulatorFleet(t *testing.T) {
	cmd := exec.Command(binary, "emulator", "--listen", "127.0.0.1:0", "--log-format", "json", "--fleet", "3", "--ip-limit", "4")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	out := bufio.NewReader(stdout)
	var keys []string
	for range 3 {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if key := strings.TrimSpace(line); len(key) != 40 || slices.Contains(keys, key) {
			t.Fatalf("printed key %q: want 40 characters, one key per client (so far %q)", key, keys)
		}
		keys = append(keys, strings.TrimSpace(line))
	}
	logs := bufio.NewScanner(stderr)
	var rec struct {
		Msg, Addr  string
		ClientURLs string `json:"client_urls"`
		Clients    int
	}
	var logged strings.Builder
	for logs.Scan() {
		logged.WriteString(logs.Text() + "\n")
		if json.Unmarshal(logs.Bytes(), &rec) == nil && rec.Msg == "emulator listening" {
			break
		}
	}
	if rec.Addr == "" {
		t.Fatalf("no address logged:\n%s", logged.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stderrReader(logs)) }()
	root := "http://" + rec.Addr
	if want := root + "/clients/0 to " + root + "/clients/2"; rec.Clients != 3 || rec.ClientURLs != want {
		t.Errorf("logged %d clients at %q, want 3 at %q", rec.Clients, rec.ClientURLs, want)
	}
	list := func(client int, key string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", root+"/clients/"+strconv.Itoa(client)+"/apiKeys", nil)
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(key)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, want := range []int{200, 200, 200} {
		if got := list(i, keys[i]); got != want {
			t.Errorf("client %d with its own key: %d, want %d", i, got, want)
		}
	}
	if got := list(1, keys[0]); got != 401 {
		t.Errorf("client 1 with client 0's key: %d, want 401", got)
	}
	if got := list(2, keys[2]); got != 429 {
		t.Errorf("the fifth request of the fleet in a minute, over --ip-limit 4: %d, want 429", got)
	}
	resp, err := http.Get(root + "/_emulator/rate")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rate struct {
		MaxIn60s int `json:"max_in_any_60s"`
		IPLimit  int `json:"ip_limit"`
	}
	if err := json.Unmarshal(body, &rate); err != nil {
		t.Fatalf("rate: %v: %s", err, body)
	}
	if rate.MaxIn60s != 5 || rate.IPLimit != 4 {
		t.Errorf("rate: %s; want 5 requests of all clients in 60 s and the limit 4", body)
	}
}

// TestEmulatorInitialKey: the first key comes from a file or the
// environment, never the arguments (which ps shows every user).
func TestEmulatorInitialKey(t *testing.T) {
	const key = "ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, how := range map[string]func(*exec.Cmd){
		"file":        func(c *exec.Cmd) { c.Args = append(c.Args, "--initial-key-file", file) },
		"environment": func(c *exec.Cmd) { c.Env = append(os.Environ(), "CODAT_EMULATOR_INITIAL_KEY="+key) },
	} {
		t.Run(name, func(t *testing.T) { testEmulatorInitialKey(t, key, how) })
	}
}

func testEmulatorInitialKey(t *testing.T, key string, how func(*exec.Cmd)) {
	cmd := exec.Command(binary, "emulator", "--listen", "127.0.0.1:0", "--log-format", "json")
	how(cmd)
	if strings.Contains(strings.Join(cmd.Args, " "), key) {
		t.Fatal("the key is in the arguments")
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	logs := bufio.NewScanner(stderr)
	addr := ""
	var logged strings.Builder
	for addr == "" && logs.Scan() {
		logged.WriteString(logs.Text() + "\n")
		var rec struct {
			Msg, Addr string
		}
		if json.Unmarshal(logs.Bytes(), &rec) == nil && rec.Msg == "emulator listening" {
			addr = rec.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no address logged:\n%s", logged.String())
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/apiKeys", nil)
	req.Header.Set("Authorization", "Basic enRIUUd2bkM0WE4yQ2dVaGFEV0VHNHlTTFVKcVdqcDd6a2Jaa0dIZA==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("list with the given key: got %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(&logged, stderrReader(logs))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout: got %q, want nothing when the key is given", stdout.String())
	}
	if strings.Contains(logged.String(), key) {
		t.Errorf("the given key appears in the log:\n%s", logged.String())
	}
}

// stderrReader drains what a scanner has not read yet.
func stderrReader(s *bufio.Scanner) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for s.Scan() {
			_, _ = pw.Write(append(s.Bytes(), '\n'))
		}
		pw.Close()
	}()
	return pr
}
