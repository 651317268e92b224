package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// Whole-binary tests of the process's own protections: non-dumpable
// while it may hold a key, and an admin socket that only the daemon's
// user and root may use. Both need processes of other users, so the
// tests run as root and start the binary with SysProcAttr.Credential.

const (
	daemonUID = 65534 // nobody: the daemon's user in these tests
	otherUID  = 65533 // a user who is neither the daemon's nor root
)

// requireRoot: without root the binary cannot be started as other
// users. Under CI that is a failure: these tests must run there.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test starts processes as other users and needs root (uid %d)", os.Getuid())
	}
	t.Skipf("needs root to start processes as other users (uid %d)", os.Getuid())
}

func as(uid uint32) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
}

// userWorld is a daemonEnv whose binary, config, state file and admin
// socket live in a directory of daemonUID's that every user can enter,
// so the binary can run as daemonUID and as otherUID.
type userWorld struct {
	*daemonEnv
	bin, config string
}

func newUserWorld(t *testing.T) *userWorld {
	t.Helper()
	requireRoot(t)
	e := newDaemonEnv(t, "@every 1h", "1s")
	dir, err := os.MkdirTemp("", "cr") // short: a socket path holds ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &userWorld{daemonEnv: e, bin: filepath.Join(dir, "codat-rotator"), config: filepath.Join(dir, "config.yaml")}

	// The test binary's directory is root's 0700: a copy the other users
	// can read and run. (Readable matters: exec of a binary its user
	// cannot read leaves the process non-dumpable on its own, and the
	// non-dumpable test would prove nothing.)
	copyFile(t, binary, w.bin, 0o755)
	cfg := strings.NewReplacer(e.statePath(), filepath.Join(dir, "state.db"), e.sock, filepath.Join(dir, "admin.sock")).
		Replace(mustRead(t, e.config))
	if err := os.WriteFile(w.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.sock = filepath.Join(dir, "admin.sock")
	for _, p := range []string{dir, w.bin, w.config} {
		if err := os.Chown(p, daemonUID, daemonUID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

func copyFile(tb testing.TB, from, to string, mode os.FileMode) {
	tb.Helper()
	src, err := os.Open(from)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		tb.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		tb.Fatal(err)
	}
}

// command is the binary running args with w's config, as uid.
func (w *userWorld) command(uid uint32, args ...string) *exec.Cmd {
	cmd := exec.Command(w.bin, append(args[:1:1], append([]string{"--config", w.config}, args[1:]...)...)...)
	cmd.Env = w.env()
	cmd.SysProcAttr = as(uid)
	return cmd
}

// dumpable reports whether the process pid, which runs as wantUID, is
// dumpable. /proc/<pid>/status has no such line, and prctl answers only
// for the caller; the outside signal is the owner of the /proc/<pid>
// files: the kernel (task_dump_owner, fs/proc/base.c) gives them the
// process's uid while it is dumpable and root once it is not. That is
// what stops a same-user ptrace or read of /proc/<pid>/mem and environ.
// It says something only for a process that does not run as root,
// hence wantUID, checked against the status's real uid.
func dumpable(t *testing.T, pid int, wantUID uint32) bool {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var uid string
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			uid = f[1]
		}
	}
	if uid != strconv.Itoa(int(wantUID)) {
		t.Fatalf("pid %d runs as uid %q, want %d: the owner of its /proc files would say nothing", pid, uid, wantUID)
	}
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	switch owner := fi.Sys().(*syscall.Stat_t).Uid; owner {
	case wantUID:
		return true
	case 0:
		return false
	default:
		t.Fatalf("/proc/%d/environ is owned by uid %d, want %d or root", pid, owner, wantUID)
		return false
	}
}

// TestNonDumpable: `run` and an in-process `rotate` are non-dumpable
// while they hold keys; the emulator, which holds none, stays dumpable,
// which shows the check tells the two apart.
func TestNonDumpable(t *testing.T) {
	w := newUserWorld(t)

	t.Run("emulator stays dumpable", func(t *testing.T) {
		cmd := exec.Command(w.bin, "emulator", "--listen", "127.0.0.1:0", "--log-format", "json")
		cmd.SysProcAttr = as(daemonUID)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		// Its first log line comes after Main chose the command.
		if _, err := bufio.NewReader(stderr).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		if !dumpable(t, cmd.Process.Pid, daemonUID) {
			t.Error("the emulator is not dumpable: the check would pass for any process")
		}
	})

	d := w.startCmd(t, w.command(daemonUID, "run"))
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1)
	if dumpable(t, d.cmd.Process.Pid, daemonUID) {
		t.Error("run: the daemon is dumpable")
	}
	if strings.Contains(d.logs.String(), "non-dumpable") {
		t.Errorf("run warned that it could not become non-dumpable:\n%s", d.logs.String())
	}
	d.stop(t)

	// An in-process rotate, held inside its create request.
	if err := w.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(20 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	rot := w.command(daemonUID, "rotate")
	var out syncBuffer
	rot.Stdout, rot.Stderr = &out, &out
	if err := rot.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rot.Process.Kill(); _ = rot.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for w.emu.InFlight() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rotate sent no create request within 15s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dumpable(t, rot.Process.Pid, daemonUID) {
		t.Error("rotate: the process is dumpable while it rotates")
	}
}

// TestAdminSocketPeerCheck: with the socket's mode opened to everyone,
// the daemon (as daemonUID) still answers only its own user and root;
// another user is refused with the reason, and the daemon logs who.
func TestAdminSocketPeerCheck(t *testing.T) {
	w := newUserWorld(t)
	d := w.startCmd(t, w.command(daemonUID, "run"))
	d.waitRunning(t)
	if err := os.Chmod(w.sock, 0o666); err != nil { // past the file mode
		t.Fatal(err)
	}

	status := func(uid uint32) (cmd *exec.Cmd, code int, out string) {
		t.Helper()
		cmd = w.command(uid, "status")
		b, err := cmd.CombinedOutput()
		w.output.Write(b)
		code = cmd.ProcessState.ExitCode()
		if err != nil && code <= 0 {
			t.Fatalf("status as uid %d: %v", uid, err)
		}
		return cmd, code, string(b)
	}

	cmd, code, out := status(otherUID)
	want := fmt.Sprintf("codat-rotator status: admin socket %s: refused: the admin socket accepts only uid %d (the daemon's user) or root; run as that user or with sudo\n", w.sock, daemonUID)
	if code != exitError || out != want {
		t.Errorf("status as uid %d: exit %d\ngot  %q\nwant %q", otherUID, code, out, want)
	}
	pid := float64(cmd.Process.Pid)
	d.waitLog(t, 5*time.Second, 1, "the refusal naming the peer", func(r logRecord) bool {
		return r.str("msg") == "admin socket: refused a peer of another user" && r["peer_uid"] == float64(otherUID) && r["peer_pid"] == pid
	})

	for _, uid := range []uint32{daemonUID, 0} {
		if _, code, out := status(uid); code != 0 || !strings.Contains(out, "crash") {
			t.Errorf("status as uid %d (allowed): exit %d\n%s", uid, code, out)
		}
	}
	if n := d.count(msgIs("admin socket: refused a peer of another user")); n != 1 {
		t.Errorf("the daemon refused %d peers, want 1 (the other user's)", n)
	}
}

// TestAdminSocketPermissionDenied (issue 16): with the socket as shipped
// (0600, the daemon's), another user's status, keys and rotate are told
// that the socket refused them and how to run instead, not that the
// state file cannot be opened.
func TestAdminSocketPermissionDenied(t *testing.T) {
	w := newUserWorld(t)
	d := w.startCmd(t, w.command(daemonUID, "run"))
	d.waitRunning(t)
	for _, args := range [][]string{{"status"}, {"keys"}, {"rotate", "--target", "crash"}, {"resume", "--target", "crash"}} {
		cmd := w.command(otherUID, args...)
		b, _ := cmd.CombinedOutput()
		w.output.Write(b)
		want := fmt.Sprintf("codat-rotator %s: admin socket %s: permission denied: it accepts only the daemon's user (uid %d) and root; run this command as that user or with sudo\n",
			args[0], w.sock, daemonUID)
		if code := cmd.ProcessState.ExitCode(); code != exitError || string(b) != want {
			t.Errorf("%s as uid %d: exit %d\ngot  %q\nwant %q", args[0], otherUID, code, b, want)
		}
	}
}
