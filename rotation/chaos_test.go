package rotation_test

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// The chaos simulation: every schedule is a seed that decides a short
// sequence of steps on one target (rotations, emergencies, retire
// passes, clock jumps, Portal keys appearing and vanishing, an operator
// publishing a Portal key by hand) and, per step, the faults Codat and
// Vault show and whether (and where) the process crashes, and whether
// the operator reruns the command that died. After every step the
// invariants of docs/design.md#invariants are checked from the outside: the emulator's
// records, Vault's versions and the state file. All randomness comes
// from the seed; the clocks are fake; only a hung Codat request costs
// real time (chaosCodatTimeout).
var (
	chaosN     = flag.Int("chaos.n", 500, "number of chaos schedules to run")
	chaosSeed  = flag.Uint64("chaos.seed", 0, "replay only the chaos schedule with this seed")
	chaosSeeds = flag.String("chaos.seeds", "", "run only the chaos schedules with these comma-separated seeds")
	chaosFirst = flag.Uint64("chaos.first", 1, "seed of the first chaos schedule")
	chaosSteps = flag.Int("chaos.steps", 10, "most steps in one chaos schedule (at least 4)")
	chaosTrace = flag.Bool("chaos.trace", false, "print every step of every chaos schedule")
	chaosState = flag.Bool("chaos.state", false, "with -chaos.trace, also print the target's state and the secret after every step")
	chaosLogs  = flag.Bool("chaos.logs", false, "with -chaos.trace, also print the engine's log lines at the end of the schedule")
)

// Timeouts of the clients in the simulation. A hung Codat request costs
// chaosCodatTimeout of real time; everything else runs on the fake clock.
const (
	chaosCodatTimeout = 300 * time.Millisecond
	chaosVaultTimeout = 5 * time.Second
	chaosTarget       = "chaos"
	chaosMaxKeys      = 10
	chaosReserve      = 1
	// chaosEmuCap lets the emulator accept keys beyond Codat's cap, so
	// that an overshoot is recorded as over_cap rather than refused.
	chaosEmuCap = 20
)

// TestChaos runs -chaos.n schedules (seeds -chaos.first on) over a
// worker pool, one Vault mount for all, and prints a summary of what was
// exercised and a last line "schedules: N violations: V". A failure
// names its seed; -chaos.seed=N -chaos.trace replays that one schedule.
func TestChaos(t *testing.T) {
	if *chaosSteps < 4 {
		t.Fatalf("-chaos.steps=%d: want at least 4", *chaosSteps)
	}
	vsrv := vaulttest.Shared(t)
	sh := &chaosShared{vsrv: vsrv, root: vsrv.Client(t), mount: vsrv.NewKV(t), dir: t.TempDir(), start: time.Now().UTC().Truncate(time.Second)}
	up, err := url.Parse(vsrv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	sh.upstream = up

	var seeds []uint64
	switch {
	case *chaosSeed != 0:
		seeds = []uint64{*chaosSeed}
	case *chaosSeeds != "":
		for f := range strings.SplitSeq(*chaosSeeds, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("-chaos.seeds: %q is not a seed", f)
			}
			seeds = append(seeds, n)
		}
	default:
		for i := range *chaosN {
			seeds = append(seeds, *chaosFirst+uint64(i))
		}
	}
	type outcome struct {
		seed       uint64
		violations []string
		trace      []string
		stats      map[string]int
	}
	results := make([]outcome, len(seeds))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(len(seeds), 4*runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for i := range work {
				s := newChaosRun(sh, seeds[i])
				s.run()
				results[i] = outcome{seed: seeds[i], violations: s.violations, trace: s.trace, stats: s.stats}
			}
		})
	}
	for i := range seeds {
		work <- i
	}
	close(work)
	wg.Wait()

	violations := 0
	total := map[string]int{}
	for _, r := range results {
		violations += len(r.violations)
		for k, n := range r.stats {
			total[k] += n
		}
		if *chaosTrace || (len(seeds) == 1 && len(r.violations) > 0) {
			fmt.Printf("seed %d:\n  %s\n", r.seed, strings.Join(r.trace, "\n  "))
		}
		if len(r.violations) > 0 {
			t.Errorf("seed %d: %s\n\treplay: go test -v -run TestChaos ./rotation/ -args -chaos.seed=%d -chaos.steps=%d -chaos.trace",
				r.seed, strings.Join(r.violations, "\n\t"), r.seed, *chaosSteps)
		}
	}
	// What the schedules exercised, so that a quiet run is seen to
	// have done something.
	var counts []string
	for _, k := range slices.Sorted(maps.Keys(total)) {
		counts = append(counts, fmt.Sprintf("%s=%d", k, total[k]))
	}
	fmt.Printf("chaos: %s\n", strings.Join(counts, " "))
	fmt.Printf("schedules: %d violations: %d\n", len(seeds), violations)
}

// chaosShared is what every schedule shares: the dev server and one KV
// mount; each schedule has its own path under it.
type chaosShared struct {
	vsrv     *vaulttest.Server
	root     *api.Client
	upstream *url.URL
	mount    string
	dir      string
	// start is where every schedule's fake clock begins: the real time,
	// since Vault stamps each version it writes with its own clock.
	start time.Time
}

// Step kinds.
const (
	stepRotate    = "rotate"
	stepEmergency = "emergency"
	stepRetire    = "retire"
	stepJump      = "clock-jump"
	stepPortalAdd = "portal-add"
	stepPortalDel = "portal-delete"
	stepResume    = "resume"
	stepOperator  = "operator-publish"
	stepRollback  = "operator-rollback"
	stepReload    = "reload"
	// A second target on the same Codat client, rotated alone or at the
	// same moment as the first.
	stepSibling    = "sibling-rotate"
	stepConcurrent = "concurrent-rotate"
	// A second daemon with its own state file tries the target; the
	// target moves to it (a migration); the state file is lost; the
	// state file is snapshotted, then restored from that backup.
	stepInstance  = "second-instance"
	stepMigrate   = "migrate"
	stepStateLoss = "state-loss"
	stepRestore   = "state-restore"
	// The identity families (docs/design.md#key-names, #served-by-value,
	// #shared-keys): a second deployment (its own state file and path)
	// on the same client, with the same target name or another; one
	// target's secret copied into the other's path, and fixed later; an
	// operator's patch of api_key alone (a hand rollback) or with a wrong
	// key_id; the target renamed in the config; the secret's metadata
	// deleted and rewritten by hand (versions restart); a copy of the
	// state file running beside the original.
	stepNeighbour  = "neighbour"
	stepCopySecret = "secret-copy"
	stepPatch      = "operator-patch"
	stepRename     = "rename"
	stepMetaDelete = "metadata-delete"
	stepStateCopy  = "state-copy"
)

// chaosRun is one schedule.
type chaosRun struct {
	sh    *chaosShared
	seed  uint64
	rng   *rand.Rand
	clock *fakeClock
	path  string

	emu      *emulator.Server
	front    *chaosFront
	emuSrv   *httptest.Server
	client   *codat.Client // the engine's, through the faults
	checker  *codat.Client // the checks', used with faults off
	tr       *http.Transport
	proxy    *chaosVault
	proxySrv *httptest.Server
	vault    *vault.Client
	dbPath   string
	db       *store.DB
	logs     *syncBuffer
	raw      *rawKeys
	target   rotation.Target

	said       []string
	trace      []string
	violations []string
	stats      map[string]int
	reported   map[string]bool
	omitRaw    bool

	// What the harness knows from outside.
	portal        map[string]bool // ids of keys made in the Portal
	portalRaw     map[string]string
	adopted       map[string]bool      // portal keys an operator published to Vault
	portalDeleted map[string]bool      // deleted by the harness, as a person
	revoked       map[string]bool      // named by an emergency --revoke
	exempt        map[string]bool      // keys alive when an emergency was asked
	emergencyOpen bool                 // an emergency may still be unfinished
	nviolations   int                  // emulator violations already reported
	ncreates      int                  // creates already checked
	versions      []chaosVersion       // Vault's versions of the secret, read so far
	opWrites      map[int]chaosVersion // versions an operator wrote by hand
	graces        []chaosGrace         // the target's grace over time (reloads)
	step          int
	stepDesc      string

	// The world beyond one target and one state file.
	sib         *chaosSibling   // a second target on the same Codat client, in some schedules
	otherDB     *store.DB       // a second instance's state file, its own identity
	otherPath   string          // where it lives
	snapshot    []byte          // a copy of the state file, to restore as from a backup
	recoverable map[string]bool // keys the last takeover could attribute to the target
	nevents     int             // emulator events already attributed
	initial     string          // the emulator's initial key: the target's bootstrap key

	vbase  int             // versions of the secret before its metadata was last deleted
	nb     *chaosNeighbour // a second deployment on the same client, in some schedules
	copied *chaosCopy      // a secret copied into another target's path, not yet fixed
	tags   map[string]bool // every tag the target's keys were made with
}

// chaosNeighbour is a second deployment: its own state file, its own
// path, its own target (named as the first one, or not), on the same
// Codat client. It starts from a key made in the Portal.
type chaosNeighbour struct {
	target   rotation.Target
	db       *store.DB
	dbPath   string
	bootID   string
	versions []chaosVersion
}

// chaosCopy is a secret an operator copied from one target's path into
// the other's: the victim's path serves the other target's key.
type chaosCopy struct {
	// sib: the victim is the other target on the client (else the
	// target); victim() gives its definition as it is now (a reload or
	// rename since the copy changes it).
	sib bool
	// before is what the victim's path served before the copy.
	before chaosVersion
}

// chaosSibling is a second target on the same Codat client: another
// application's key, published to its own path, rotated by the same
// daemon. It starts from a key made in the Portal.
type chaosSibling struct {
	target   rotation.Target
	path     string
	bootID   string
	versions []chaosVersion
	opWrites map[int]chaosVersion
}

type chaosVersion struct {
	keyID, apiKey string
	rotatedAt     time.Time
	// copied: an operator copied another target's secret here. The
	// daemon keeps the key while the copy is served, but the copy's
	// consumers are the operator's to move: no grace is owed to them
	// once the copy is replaced, and the key stays its owner's.
	copied bool
}

// chaosGrace is a grace in force from a time on (a reload changes it).
type chaosGrace struct {
	from  time.Time
	grace time.Duration
}

// graceBetween is the shortest grace in force between two times: a key
// superseded at from and deleted at to must have lived at least that.
func (s *chaosRun) graceBetween(from, to time.Time) time.Duration {
	g := time.Duration(-1)
	for i, c := range s.graces {
		end := to
		if i+1 < len(s.graces) {
			end = s.graces[i+1].from
		}
		if end.Before(from) || c.from.After(to) {
			continue
		}
		if g < 0 || c.grace < g {
			g = c.grace
		}
	}
	if g < 0 {
		return grace
	}
	return g
}

func newChaosRun(sh *chaosShared, seed uint64) *chaosRun {
	return &chaosRun{
		sh: sh, seed: seed,
		rng:   rand.New(rand.NewPCG(seed, 0x636f646174)),
		clock: &fakeClock{t: sh.start},
		path:  fmt.Sprintf("chaos/s%d", seed),
		logs:  &syncBuffer{},
		raw:   &rawKeys{},
		stats: map[string]int{}, reported: map[string]bool{},
		portal: map[string]bool{}, portalRaw: map[string]string{}, adopted: map[string]bool{}, portalDeleted: map[string]bool{}, revoked: map[string]bool{}, exempt: map[string]bool{},
		opWrites: map[int]chaosVersion{}, graces: []chaosGrace{{from: sh.start, grace: grace}}, tags: map[string]bool{},
	}
}

func (s *chaosRun) violate(format string, args ...any) {
	what := fmt.Sprintf(format, args...)
	if s.reported[what] {
		return // seen after an earlier step already
	}
	s.reported[what] = true
	msg := fmt.Sprintf("step %d (%s): ", s.step, s.stepDesc) + what
	s.violations = append(s.violations, msg)
	s.trace = append(s.trace, "  VIOLATION "+msg)
}

func (s *chaosRun) note(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf(format, args...))
}

// setup starts the emulator, the Vault proxy and the state file.
func (s *chaosRun) setup() error {
	// A quarter of the schedules run against a Codat whose listings
	// leave the raw keys out: a lost create cannot be recovered then.
	omit := s.rng.IntN(4) == 0
	s.omitRaw = omit
	if omit {
		s.stats["list-omits-raw-keys"]++
	}
	emu, err := emulator.New(emulator.Options{Now: s.clock.Now, MaxKeys: chaosEmuCap, Seed: s.rng.Uint64() | 1, ListOmitsRawKeys: omit})
	if err != nil {
		return err
	}
	s.emu = emu
	s.raw.add(emu.InitialKey())
	s.front = &chaosFront{next: &keyCapture{next: emu, keys: s.raw}, emu: emu}
	s.emuSrv = httptest.NewServer(s.front)
	s.tr = http.DefaultTransport.(*http.Transport).Clone()
	sleeps := &sleepRecorder{}
	// The daemon's Codat budget is on: every request waits its turn
	// (at once on this clock), and an IP-limit 429 narrows it.
	budget := codat.NewBudget(60, codat.BudgetOptions{Now: s.clock.Now, Sleep: sleeps.Sleep})
	s.client, err = codat.New(codat.Secret(emu.InitialKey()), codat.Options{
		BaseURL: s.emuSrv.URL, HTTPClient: &http.Client{Transport: s.tr}, MaxAttempts: 3,
		RequestTimeout: chaosCodatTimeout, Now: s.clock.Now, Sleep: sleeps.Sleep, Budget: budget,
	})
	if err != nil {
		return err
	}
	s.checker, err = codat.New(codat.Secret(emu.InitialKey()), codat.Options{
		BaseURL: s.emuSrv.URL, HTTPClient: &http.Client{Transport: s.tr}, MaxAttempts: 1,
		RequestTimeout: 10 * time.Second, Now: s.clock.Now, Sleep: sleeps.Sleep,
	})
	if err != nil {
		return err
	}
	s.proxy = &chaosVault{rp: httputil.NewSingleHostReverseProxy(s.sh.upstream), root: s.sh.root, mount: s.sh.mount, path: s.path,
		rng: rand.New(rand.NewPCG(s.rng.Uint64(), 0x7661756c74))}
	s.proxySrv = httptest.NewServer(s.proxy)
	s.vault, err = vault.New(vault.Config{Address: s.proxySrv.URL, Token: codat.Secret(s.sh.vsrv.RootToken), Timeout: chaosVaultTimeout})
	if err != nil {
		return err
	}
	s.dbPath = filepath.Join(s.sh.dir, fmt.Sprintf("s%d.db", s.seed))
	if s.db, err = store.Open(s.dbPath, store.Options{}); err != nil {
		return err
	}
	s.target = rotation.Target{
		Name:         chaosTarget,
		Vault:        rotation.Location{Mount: s.sh.mount, Path: s.path},
		Prefix:       prefix,
		MaxKeys:      chaosMaxKeys,
		ReserveSlots: chaosReserve,
		Grace:        grace,
		Bootstrap:    func() (codat.Secret, error) { return codat.Secret(emu.InitialKey()), nil },
		NextRotation: func(t time.Time) time.Time { return t.Add(7 * 24 * time.Hour) },
	}
	if s.rng.IntN(3) == 0 {
		// Another application's target on the same Codat client.
		id, raw, err := emu.AddPortalKey("given to the second application")
		if err != nil {
			return err
		}
		s.raw.add(raw)
		s.adopted[id] = true // published by its own target, not a person's spare
		sib := &chaosSibling{target: s.target, path: s.path + "-b", bootID: id, opWrites: map[int]chaosVersion{}}
		sib.target.Name, sib.target.Vault.Path = chaosTarget+"-b", sib.path
		sib.target.Bootstrap = func() (codat.Secret, error) { return codat.Secret(raw), nil }
		s.sib = sib
		s.stats["shared-client"]++
	}
	s.otherPath = filepath.Join(s.sh.dir, fmt.Sprintf("s%d-other.db", s.seed))
	if s.rng.IntN(3) == 0 {
		// A second deployment on the same client: half the time with the
		// same target name (two clusters from one base, a migration).
		id, raw, err := emu.AddPortalKey("given to the second deployment")
		if err != nil {
			return err
		}
		s.raw.add(raw)
		s.adopted[id] = true
		nb := &chaosNeighbour{target: s.target, bootID: id, dbPath: filepath.Join(s.sh.dir, fmt.Sprintf("s%d-nb.db", s.seed))}
		nb.target.Vault.Path = s.path + "-n"
		if s.rng.IntN(2) == 0 {
			nb.target.Name = chaosTarget + "-n"
		} else {
			s.stats["neighbour-same-name"]++
		}
		nb.target.Bootstrap = func() (codat.Secret, error) { return codat.Secret(raw), nil }
		if nb.db, err = store.Open(nb.dbPath, store.Options{}); err != nil {
			return err
		}
		s.nb = nb
		s.stats["neighbour"]++
	}
	return nil
}

func (s *chaosRun) teardown() {
	if s.emu != nil {
		for _, ev := range s.emu.Events(0) {
			if ev.Fault != "" {
				s.stats["codat-fault:"+ev.Fault]++
			}
		}
	}
	if s.proxy != nil {
		s.proxy.mu.Lock()
		for k, n := range s.proxy.injected {
			s.stats["vault-fault:"+k] += n
		}
		s.proxy.mu.Unlock()
	}
	logs := s.logs.String()
	if *chaosTrace && *chaosLogs {
		fmt.Print(logs)
	}
	for _, m := range []string{"deleting orphan key", "rolling back the new key", "resuming a rotation left by a crash",
		"create outcome unknown; looking the key up by name", "deleting a key past its grace to make room", "deleting retired key", "revoking key"} {
		if n := strings.Count(logs, `"msg":"`+m+`"`); n > 0 {
			s.stats["log:"+strings.ReplaceAll(m, " ", "-")] += n
		}
	}
	if s.db != nil {
		_ = s.db.Close()
	}
	if s.otherDB != nil {
		_ = s.otherDB.Close()
	}
	_ = os.Remove(s.otherPath)
	if s.nb != nil {
		if s.nb.db != nil {
			_ = s.nb.db.Close()
		}
		_ = os.Remove(s.nb.dbPath)
		_ = s.sh.root.KVv2(s.sh.mount).DeleteMetadata(context.Background(), s.nb.target.Vault.Path)
	}
	if s.sib != nil {
		_ = s.sh.root.KVv2(s.sh.mount).DeleteMetadata(context.Background(), s.sib.path)
	}
	if s.emu != nil {
		s.emu.Close()
	}
	if s.emuSrv != nil {
		s.emuSrv.Close()
	}
	if s.proxySrv != nil {
		s.proxySrv.Close()
	}
	if s.tr != nil {
		s.tr.CloseIdleConnections()
	}
	_ = s.sh.root.KVv2(s.sh.mount).DeleteMetadata(context.Background(), s.path)
	_ = os.Remove(s.dbPath)
}

// newEngine is a freshly started process on the state file; with c set,
// its Codat clients and Vault crash on cue.
func (s *chaosRun) newEngine(c *crasher) *rotation.Engine {
	return s.engineOn(s.db, c)
}

// engineOn is a process on the state file db, which owns what db's
// identity owns.
func (s *chaosRun) engineOn(db *store.DB, c *crasher) *rotation.Engine {
	sleeps := &sleepRecorder{}
	id, _ := db.Identity()
	inc, _ := db.Incarnation()
	eng := &rotation.Engine{
		Owner:  rotation.Owner{ID: id, Host: "chaos", Incarnation: inc, Known: db.KnownIncarnation},
		Salt:   db.Salt(),
		Store:  db,
		Vault:  adapt.Vault(s.vault),
		Codat:  func(_ string, key codat.Secret) rotation.Codat { return adapt.Codat(s.client.WithKey(key)) },
		Logger: slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    s.clock.Now,
		Sleep:  sleeps.Sleep,

		Attempts:        3,
		RetryBackoff:    retryBackoff,
		VerifyAttempts:  2,
		VerifyInterval:  time.Second,
		PublishAttempts: 2,
	}
	if c != nil {
		eng.Codat = func(_ string, key codat.Secret) rotation.Codat {
			return &crashingCodat{inner: adapt.Codat(s.client.WithKey(key)), c: c}
		}
		eng.Vault = &crashingVault{inner: adapt.Vault(s.vault), c: c}
	}
	// A process knows every target of its config (the daemon, a CLI).
	if db != nil && (s.nb == nil || db != s.nb.db) {
		_ = eng.Know(s.targets()...)
	}
	return eng
}

// names is how the named target names its keys: with the tag its state
// holds, or the one its secret's metadata records (a state file that
// lost it takes that one back).
func (s *chaosRun) names(target string) rotation.Names {
	tg := s.target
	path := s.path
	if s.sib != nil && target == s.sib.target.Name {
		tg, path = s.sib.target, s.sib.path
	}
	tags := map[string]bool{}
	if s.db != nil {
		if st, err := s.db.Load(target); err == nil && st.Tag != "" {
			tags[st.Tag] = true
		}
	}
	if md, err := s.sh.root.KVv2(s.sh.mount).GetMetadata(context.Background(), path); err == nil {
		if tag, _ := md.CustomMetadata[rotation.MetadataKeyTag].(string); tag != "" {
			tags[tag] = true
		}
	}
	if target == s.target.Name {
		for tag := range tags {
			s.tags[tag] = true
		}
	}
	for tag := range tags {
		return rotation.NamesOf(tg, tag)
	}
	return rotation.NamesOf(tg, "")
}

// own reports whether name is in the shape of a key the target made,
// under any tag it has had (a lost state file's, a renamed target's).
func (s *chaosRun) own(name string) bool {
	s.names(s.target.Name) // picks up the current tag
	for tag := range s.tags {
		if rotation.NamesOf(s.target, tag).Own(name) {
			return true
		}
	}
	return false
}

// traceState notes the target's keys as its state holds them, and the
// key the secret serves (by value), for -chaos.state.
func (s *chaosRun) traceState() {
	if s.db == nil {
		return
	}
	st, err := s.db.Load(s.target.Name)
	if err != nil {
		s.note("    state: %v", err)
		return
	}
	s.note("    state of %s: tag=%q vault version %d", s.target.Name, st.Tag, st.VaultVersion)
	for _, k := range st.Keys {
		s.note("      %s %-8s %-8s after=%s print=%t", k.ID, k.Origin, k.State, rfc3339(k.DeleteAfter), k.Fingerprint != "")
	}
	if n := len(s.versions); n > 0 {
		s.note("    vault serves %s (%d versions)", s.versions[n-1].keyID, n)
	}
}

// restart reopens the state file, as a new process would after a crash.
func (s *chaosRun) restart() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state file: %w", err)
	}
	db, err := store.Open(s.dbPath, store.Options{})
	if err != nil {
		return fmt.Errorf("reopen state file: %w", err)
	}
	s.db = db
	return nil
}

func (s *chaosRun) record(v any, err error) {
	s.said = append(s.said, fmt.Sprintf("%+v", v))
	if err != nil {
		s.said = append(s.said, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}
}

func (s *chaosRun) run() {
	defer s.teardown()
	if err := s.setup(); err != nil {
		s.violations = append(s.violations, "setup: "+err.Error())
		return
	}
	steps := 4 + s.rng.IntN(*chaosSteps-3)
	for s.step = 1; s.step <= steps; s.step++ {
		if !s.runStep() {
			return
		}
		if *chaosState {
			s.traceState()
		}
	}
	// Convergence: with the faults gone, an operator's manual rotation
	// finishes whatever is left and leaves no journal and no orphan. A
	// secret copied into another target's path is fixed first, as the
	// refusal told the operator to.
	s.step, s.stepDesc = steps+1, "final clean rotate"
	s.front.setRoutine(true, s.reserve())
	if s.copied != nil {
		victim := s.victim()
		if err := s.fixCopy(context.Background()); err != nil {
			s.violations = append(s.violations, "harness: fix the copied secret: "+err.Error())
			return
		}
		// The victim's next look sees its own key again and lets the
		// other target's go (after a grace).
		vres, verr := s.newEngine(nil).Rotate(context.Background(), victim, rotation.Options{Manual: true})
		s.record(vres, verr)
		s.note("  after fixing the copy, %s: err=%v", victim.Name, verr)
	}
	s.stepBegin(false)
	s.front.setRoutine(true, s.reserve())
	res, err := s.newEngine(nil).Rotate(context.Background(), s.target, rotation.Options{Manual: true})
	s.record(res, err)
	s.note("step %d: %s: err=%v", s.step, s.stepDesc, err)
	if errors.Is(err, rotation.ErrRevokeServed) {
		// An operator published the key an interrupted emergency was to
		// revoke: the revoke is reported, not done (I3), and the target
		// is free again.
		s.stats["revoke-of-served-refused"]++
		res, err = s.newEngine(nil).Rotate(context.Background(), s.target, rotation.Options{Manual: true})
		s.record(res, err)
		s.note("  rerun: err=%v", err)
	}
	if errors.Is(err, rotation.ErrServedUnknown) && len(s.versions) > 0 {
		// A secret written by hand without key_id, and a listing without
		// raw keys: the error tells the operator to add the key_id.
		cur := s.versions[len(s.versions)-1]
		if werr := s.operatorWrite(cur.apiKey, cur.keyID, true); werr != nil {
			s.violations = append(s.violations, "harness: operator adds key_id: "+werr.Error())
			return
		}
		s.stats["served-unknown-fixed"]++
		res, err = s.newEngine(nil).Rotate(context.Background(), s.target, rotation.Options{Manual: true})
		s.record(res, err)
		s.note("  after adding key_id: err=%v", err)
	}
	switch {
	case err == nil, errors.Is(err, rotation.ErrNoRoom):
	case len(s.versions) == 0 && s.omitRaw:
		// Never bootstrapped, and a listing without raw keys cannot tell
		// the bootstrap key from the Portal keys: an operator's job.
	default:
		s.violate("a clean manual rotation after the chaos failed: %v", err)
	}
	if s.sib != nil {
		sres, serr := s.newEngine(nil).Rotate(context.Background(), s.sib.target, rotation.Options{Manual: true})
		s.record(sres, serr)
		s.note("  %s: err=%v", s.sib.target.Name, serr)
		if serr != nil && !errors.Is(serr, rotation.ErrNoRoom) && !(len(s.sib.versions) == 0 && s.omitRaw) {
			s.violate("a clean manual rotation of %s after the chaos failed: %v", s.sib.target.Name, serr)
		}
	}
	if s.nb != nil {
		s.front.setRoutine(true, s.nb.target.ReserveSlots)
		eng := s.engineOn(s.nb.db, nil)
		_ = eng.Know(s.nb.target)
		nres, nerr := eng.Rotate(context.Background(), s.nb.target, rotation.Options{Manual: true})
		s.record(nres, nerr)
		s.note("  neighbour %s: err=%v", s.nb.target.Name, nerr)
		if nerr != nil && !errors.Is(nerr, rotation.ErrNoRoom) && !(len(s.nb.versions) == 0 && s.omitRaw) {
			s.violate("a clean manual rotation of the neighbour after the chaos failed: %v", nerr)
		}
	}
	s.stepEnd()
	s.check(err == nil, false)
	if err == nil || errors.Is(err, rotation.ErrNoRoom) {
		s.checkNothingForeign()
	}
	s.checkSecrets()
}

// checkNothingForeign: after the final rotation, no key the target made,
// nor one a takeover could attribute to it, is left foreign in its state.
func (s *chaosRun) checkNothingForeign() {
	st, err := s.db.Load(s.target.Name)
	if err != nil {
		s.violations = append(s.violations, "harness: load state: "+err.Error())
		return
	}
	for _, k := range s.emu.Keys() {
		if k.Deleted != nil || !(s.recoverable[k.ID] || s.own(k.Name)) {
			continue
		}
		if rec := st.Key(k.ID); rec == nil || !rec.Origin.Managed() {
			s.violate("key %s (%q) is the target's, yet its state holds it as %+v", k.ID, k.Name, rec)
		}
	}
}

// runStep draws and runs one step, then checks. It returns false when
// the harness itself failed.
func (s *chaosRun) runStep() bool {
	ctx := context.Background()
	r := s.rng
	sibW, nbW := 0, 0
	if s.sib != nil {
		sibW = 1
	}
	if s.nb != nil {
		nbW = 1
	}
	kind := chaosPick(r, []string{stepRotate, stepEmergency, stepRetire, stepJump, stepPortalAdd, stepPortalDel, stepResume, stepOperator, stepRollback, stepReload,
		stepSibling, stepConcurrent, stepInstance, stepMigrate, stepStateLoss, stepRestore,
		stepNeighbour, stepCopySecret, stepPatch, stepRename, stepMetaDelete, stepStateCopy},
		[]int{30, 9, 14, 20, 10, 7, 4, 5, 4, 4, 14 * sibW, 6 * sibW, 4, 2, 3, 6,
			12 * nbW, 4 * sibW, 5, 2, 2, 3})
	s.stepDesc = kind
	s.stats["step:"+kind]++
	switch kind {
	case stepJump:
		var d time.Duration
		switch r.IntN(3) {
		case 0:
			d = time.Minute + time.Duration(r.Int64N(int64(grace-2*time.Minute)))
		case 1:
			d = grace + time.Minute + time.Duration(r.Int64N(int64(12*time.Hour)))
		default:
			d = time.Duration(1+r.IntN(4))*7*24*time.Hour + time.Duration(r.Int64N(int64(24*time.Hour)))
		}
		s.clock.Advance(d)
		s.stepDesc = fmt.Sprintf("%s +%s", kind, d)
		s.note("step %d: %s", s.step, s.stepDesc)
		s.check(false, true)
		return true
	case stepPortalAdd:
		// A burst of 1 to 4 keys, never beyond Codat's cap: people fill
		// the client, so that make-room and no-room happen.
		var ids []string
		for range 1 + r.IntN(4) {
			if s.emu.ActiveKeys() >= chaosMaxKeys {
				break
			}
			name := fmt.Sprintf("portal-%d-%d", s.step, len(ids))
			if r.IntN(3) == 0 {
				name = prefix + fmt.Sprintf("manual-%d-%d", s.step, len(ids)) // the prefix, not the daemon's shape (I6)
			}
			id, raw, err := s.emu.AddPortalKey(name)
			if err != nil {
				s.violations = append(s.violations, "harness: add portal key: "+err.Error())
				return false
			}
			s.raw.add(raw)
			s.portal[id] = true
			s.portalRaw[id] = raw
			ids = append(ids, id)
		}
		s.stepDesc = fmt.Sprintf("%s %v", kind, ids)
		s.note("step %d: %s", s.step, s.stepDesc)
		s.check(false, true)
		return true
	case stepPortalDel:
		live := s.livePortal()
		if len(live) == 0 || s.emu.ActiveKeys() < 2 {
			s.note("step %d: %s skipped", s.step, kind)
			return true
		}
		id := live[r.IntN(len(live))]
		if err := s.emu.DeletePortalKey(id); err != nil {
			s.violations = append(s.violations, "harness: delete portal key: "+err.Error())
			return false
		}
		s.portalDeleted[id] = true
		s.stepDesc = fmt.Sprintf("%s %s", kind, id)
		s.note("step %d: %s", s.step, s.stepDesc)
		s.check(false, true)
		return true
	case stepOperator:
		// An operator publishes a Portal key by hand, as a legitimate
		// way out of trouble: the daemon adopts it (and may retire it).
		live := s.livePortal()
		if len(s.versions) == 0 || len(live) == 0 {
			s.note("step %d: %s skipped", s.step, kind)
			return true
		}
		id := live[r.IntN(len(live))]
		withID := r.IntN(2) == 0
		if err := s.operatorWrite(s.portalRaw[id], id, withID); err != nil {
			s.violations = append(s.violations, "harness: operator publish: "+err.Error())
			return false
		}
		s.adopted[id] = true
		s.stepDesc = fmt.Sprintf("%s %s key_id=%v", kind, id, withID)
		s.note("step %d: %s", s.step, s.stepDesc)
		s.check(false, true)
		return true
	case stepRollback:
		// An operator rolls Vault back by hand to an earlier key that is
		// still at Codat (one in its grace), with or without key_id: the
		// daemon must keep serving it (I3) and grant grace when it is
		// superseded again (I4).
		var cands []chaosVersion
		if n := len(s.versions); n > 0 {
			live := map[string]bool{}
			for _, k := range s.emu.Keys() {
				if k.Deleted == nil {
					live[k.ID] = true
				}
			}
			for _, v := range s.versions[:n-1] {
				// Not a copy of the other target's key: rolling back to
				// that is another copy (copySecretStep's family).
				if live[v.keyID] && !v.copied && v.keyID != s.versions[n-1].keyID && !slices.ContainsFunc(cands, func(c chaosVersion) bool { return c.keyID == v.keyID }) {
					cands = append(cands, v)
				}
			}
		}
		if len(cands) == 0 {
			s.note("step %d: %s skipped", s.step, kind)
			return true
		}
		v := cands[r.IntN(len(cands))]
		withID := r.IntN(2) == 0
		if err := s.operatorWrite(v.apiKey, v.keyID, withID); err != nil {
			s.violations = append(s.violations, "harness: operator rollback: "+err.Error())
			return false
		}
		s.stepDesc = fmt.Sprintf("%s %s key_id=%v", kind, v.keyID, withID)
		s.note("step %d: %s", s.step, s.stepDesc)
		s.check(false, true)
		return true
	case stepReload:
		// A SIGHUP with a changed target: the rotation in flight finished
		// with the old definition (the scheduler waits for it), the next
		// ones use the new grace and reserve.
		g := []time.Duration{grace, grace / 2, grace * 3 / 2}[r.IntN(3)]
		s.target.Grace = g
		s.target.ReserveSlots = 1 + r.IntN(2)
		if s.sib != nil {
			// Targets on one client share the cap; their reserves may
			// differ, and the strictest applies to both.
			s.sib.target.Grace, s.sib.target.ReserveSlots = g, 1+r.IntN(2)
			if s.sib.target.ReserveSlots != s.target.ReserveSlots {
				s.stats["unequal-reserves"]++
			}
		}
		s.graces = append(s.graces, chaosGrace{from: s.clock.Now(), grace: g})
		s.stepDesc = fmt.Sprintf("%s grace=%s reserve=%d", kind, g, s.target.ReserveSlots)
		s.note("step %d: %s", s.step, s.stepDesc)
		s.check(false, true)
		return true
	case stepResume:
		err := s.newEngine(nil).Resume(s.target)
		s.note("step %d: %s: err=%v", s.step, kind, err)
		s.check(false, true)
		return true
	case stepConcurrent:
		return s.concurrentStep(ctx)
	case stepInstance:
		return s.instanceStep(ctx)
	case stepMigrate, stepStateLoss, stepRestore:
		return s.stateStep(ctx, kind)
	case stepNeighbour:
		return s.neighbourStep(ctx)
	case stepCopySecret:
		return s.copySecretStep(ctx)
	case stepPatch:
		return s.patchStep(ctx)
	case stepRename:
		return s.renameStep()
	case stepMetaDelete:
		return s.metaDeleteStep(ctx)
	case stepStateCopy:
		return s.stateCopyStep(ctx)
	}

	// An action: draw its options, faults and crash point.
	tgt := s.target
	opts := rotation.Options{Manual: r.IntN(4) == 0}
	if kind == stepSibling {
		tgt = s.sib.target
		if r.IntN(5) == 0 {
			opts = rotation.Options{Emergency: true, Manual: true}
		}
	}
	if kind == stepEmergency {
		opts = rotation.Options{Emergency: true, Manual: true}
		if live := s.livePortal(); len(live) > 0 && r.IntN(2) == 0 {
			opts.Revoke = live[r.IntN(len(live))]
		}
	}
	faults, fdesc := chaosCodatFaults(r, kind)
	vrate, vkinds := 0.0, []string(nil)
	if r.IntN(3) == 0 {
		all := []string{"503", "500", "sealed", "slow", "drop", "drop-after", "denied"}
		for _, k := range all {
			if r.IntN(2) == 0 {
				vkinds = append(vkinds, k)
			}
		}
		if len(vkinds) == 0 {
			i := r.IntN(len(all))
			vkinds = all[i : i+1]
		}
		vrate = []float64{0.05, 0.15, 0.3}[r.IntN(3)]
	}
	casBump := r.IntN(7) == 0
	crashAt := 0
	if r.IntN(4) == 0 {
		crashAt = 1 + r.IntN(18)
	}
	s.stepDesc = fmt.Sprintf("%s %+v codat=[%s] vault=%v@%.2f cas=%v crash@%d", kind, opts, fdesc, vkinds, vrate, casBump, crashAt)
	s.note("step %d: %s", s.step, s.stepDesc)

	s.stepBegin(opts.Emergency)
	if opts.Revoke != "" {
		s.revoked[opts.Revoke] = true
	}
	if err := s.emu.SetFaults(faults); err != nil {
		s.violations = append(s.violations, "harness: set faults: "+err.Error())
		return false
	}
	s.proxy.arm(vrate, vkinds, casBump)
	s.front.setRoutine(!opts.Emergency, s.reserve())

	var err error
	crashed := false
	for run := 1; ; run++ {
		var c *crasher
		if crashAt > 0 {
			n, at := 0, crashAt
			c = &crasher{at: func(call, *crasher) bool { n++; return n == at }}
		}
		eng := s.newEngine(c)
		err = nil
		var at string
		crashed, at = chaosCatch(func() {
			if kind == stepRetire {
				var ids []string
				ids, err = eng.RetireDue(ctx, tgt)
				s.record(ids, err)
				return
			}
			var res rotation.Result
			res, err = eng.Rotate(ctx, tgt, opts)
			s.record(res, err)
		})
		if kind == stepEmergency && opts.Revoke != "" && err != nil && !crashed &&
			strings.Contains(err.Error(), "codat holds no key with that id") && s.revokedDuringStep(opts.Revoke) {
			// The rerun of an emergency that a crash interrupted after its
			// revoke must report success (TestEmergencyRerunAfterPublishCrash).
			s.violate("an emergency rerun failed although its revoke of %s happened: %v", opts.Revoke, err)
		}
		switch {
		case crashed:
			s.stats["crashed"]++
		case err == nil:
			s.stats[kind+":ok"]++
		case errors.Is(err, rotation.ErrNoRoom):
			s.stats[kind+":no-room"]++
		case errors.Is(err, rotation.ErrHalted):
			s.stats[kind+":halted"]++
		default:
			s.stats[kind+":failed"]++
		}
		if !crashed {
			s.note("  err=%v", err)
			break
		}
		s.note("  crashed at %s", at)
		if rerr := s.restart(); rerr != nil {
			s.violations = append(s.violations, "harness: "+rerr.Error())
			return false
		}
		// Half the time the operator runs the command that died again
		// at once (twice at most), faults still in force.
		if run == 3 || r.IntN(2) == 0 {
			break
		}
		crashAt = 0
		if r.IntN(3) == 0 {
			crashAt = 1 + r.IntN(18)
		}
		s.stats["rerun"]++
		s.note("  rerun, crash@%d", crashAt)
	}

	// A backup taken now may hold the journal a crash left: restoring it
	// later brings back a rotation the world has moved past. Backups are
	// also taken at any other point.
	if s.snapshot == nil && ((crashed && r.IntN(3) == 0) || r.IntN(10) == 0) {
		if err := s.takeSnapshot(); err != nil {
			s.violations = append(s.violations, "harness: snapshot: "+err.Error())
			return false
		}
		s.note("  backup taken")
	}
	// Faults off for the checks (and the next step draws its own).
	_ = s.emu.SetFaults(emulator.Faults{})
	s.proxy.arm(0, nil, false)
	s.stepEnd()
	s.check(kind != stepRetire && kind != stepSibling && !crashed && err == nil, false)
	return true
}

// concurrentStep rotates both targets on the shared client at once,
// with one engine (one daemon): routine rotations that each see room
// for one more key must not both take it (the I1 check of the front).
func (s *chaosRun) concurrentStep(ctx context.Context) bool {
	s.note("step %d: %s", s.step, s.stepDesc)
	s.stepBegin(false)
	s.front.setRoutine(true, s.reserve())
	eng := s.newEngine(nil)
	targets := []rotation.Target{s.target, s.sib.target}
	results := make([]rotation.Result, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Go(func() { results[i], errs[i] = eng.Rotate(ctx, tg, rotation.Options{}) })
	}
	wg.Wait()
	for i := range targets {
		s.record(results[i], errs[i])
		s.note("  %s: err=%v", targets[i].Name, errs[i])
		if *chaosTrace && errs[i] != nil && !errors.Is(errs[i], rotation.ErrNoRoom) {
			fmt.Printf("concurrent failure (seed %d): %v\n", s.seed, errs[i])
		}
		switch {
		case errs[i] == nil:
			s.stats["concurrent:ok"]++
		case errors.Is(errs[i], rotation.ErrNoRoom):
			s.stats["concurrent:no-room"]++
		default:
			s.stats["concurrent:failed"]++
		}
	}
	s.stepEnd()
	s.check(false, false)
	return true
}

// owner is the identity recorded as the owner of the target's secret.
func (s *chaosRun) owner(ctx context.Context, path string) (string, error) {
	md, err := s.sh.root.KVv2(s.sh.mount).GetMetadata(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id, _ := md.CustomMetadata[rotation.MetadataOwner].(string)
	return id, nil
}

// ownerInc is the owner and incarnation recorded in the secret at path.
func (s *chaosRun) ownerInc(ctx context.Context, path string) (string, string, error) {
	md, err := s.sh.root.KVv2(s.sh.mount).GetMetadata(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	id, _ := md.CustomMetadata[rotation.MetadataOwner].(string)
	inc, _ := md.CustomMetadata[rotation.MetadataIncarnation].(string)
	return id, inc, nil
}

// openOther opens the second instance's state file.
func (s *chaosRun) openOther() error {
	if s.otherDB != nil {
		return nil
	}
	db, err := store.Open(s.otherPath, store.Options{})
	if err != nil {
		return err
	}
	s.otherDB = db
	return nil
}

// instanceStep: a second daemon, its own state file, tries the target
// another state file owns. It must change nothing, at Codat or in
// Vault, and say it is not the owner.
func (s *chaosRun) instanceStep(ctx context.Context) bool {
	owner, err := s.owner(ctx, s.path)
	if err != nil {
		s.violations = append(s.violations, "harness: read owner: "+err.Error())
		return false
	}
	mine, _ := s.db.Identity()
	if owner == "" || owner != mine {
		// Unclaimed (a metadata write failed, or nothing published):
		// the next publish claims it, whoever makes it.
		s.note("step %d: %s skipped: owner %q", s.step, s.stepDesc, owner)
		return true
	}
	if err := s.openOther(); err != nil {
		s.violations = append(s.violations, "harness: "+err.Error())
		return false
	}
	eng := s.engineOn(s.otherDB, nil)
	what := []string{"rotate", "emergency", "retire", "dry-run"}[s.rng.IntN(4)]
	s.stepDesc += " " + what
	s.note("step %d: %s", s.step, s.stepDesc)
	seq, version := len(s.emu.Events(0)), len(s.versions)
	var res rotation.Result
	switch what {
	case "rotate":
		res, err = eng.Rotate(ctx, s.target, rotation.Options{})
		s.record(res, err)
	case "emergency":
		res, err = eng.Rotate(ctx, s.target, rotation.Options{Emergency: true, Manual: true})
		s.record(res, err)
	case "retire":
		var ids []string
		ids, err = eng.RetireDue(ctx, s.target)
		s.record(ids, err)
		if err == nil && len(ids) == 0 {
			st, _ := s.otherDB.Load(s.target.Name)
			if due, _ := rotation.Due(st, s.clock.Now()); len(due) == 0 {
				err = rotation.ErrNotOwner // nothing due: it reads nothing and changes nothing
			}
		}
	case "dry-run":
		var p rotation.Plan
		p, err = eng.Plan(ctx, s.target, rotation.Options{})
		s.record(p, err)
		if err == nil && strings.Contains(p.Blocked, owner) {
			err = rotation.ErrNotOwner
		}
	}
	s.note("  err=%v", err)
	// Its own state may stop it sooner (halted, or a journal of a run
	// from before a migration): a refusal too; what it changed is
	// checked below.
	if !errors.Is(err, rotation.ErrNotOwner) && !errors.Is(err, rotation.ErrHalted) && !(err != nil && strings.Contains(err.Error(), "rotate first")) {
		s.violate("a second instance was not refused the target another state file owns: %s: %v", what, err)
	}
	for _, ev := range s.emu.Events(seq + 1) {
		if ev.Op == emulator.OpCreate || ev.Op == emulator.OpDelete {
			s.violate("a second instance changed codat: %s %s", ev.Method, ev.Path)
		}
	}
	s.stats["second-instance:refused"]++
	s.check(false, true)
	if len(s.versions) != version {
		s.violate("a second instance wrote to vault: %d versions, %d before", len(s.versions), version)
	}
	return true
}

// stateStep: the state file moves to a second daemon (migrate), is lost
// (a new, empty one), or is snapshotted and later restored from that
// backup. Whenever the state file that serves is not the owner, the
// operator runs takeover for every target, as the README says.
func (s *chaosRun) stateStep(ctx context.Context, kind string) bool {
	fail := func(err error) bool {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: %s: %v", s.step, kind, err))
		return false
	}
	switch kind {
	case stepMigrate:
		if err := s.openOther(); err != nil {
			return fail(err)
		}
		s.db, s.otherDB = s.otherDB, s.db
		s.dbPath, s.otherPath = s.otherPath, s.dbPath
	case stepStateLoss:
		if err := s.db.Close(); err != nil {
			return fail(err)
		}
		if err := os.Remove(s.dbPath); err != nil {
			return fail(err)
		}
		db, err := store.Open(s.dbPath, store.Options{})
		if err != nil {
			return fail(err)
		}
		s.db = db
	case stepRestore:
		if err := s.db.Close(); err != nil {
			return fail(err)
		}
		if s.snapshot == nil {
			b, err := os.ReadFile(s.dbPath)
			if err != nil {
				return fail(err)
			}
			s.snapshot = b
			s.stepDesc += " (backup taken)"
		} else {
			if err := os.WriteFile(s.dbPath, s.snapshot, 0o600); err != nil {
				return fail(err)
			}
			s.snapshot = nil
			s.stepDesc += " (backup restored)"
			s.stats["state-restored"]++
		}
		db, err := store.Open(s.dbPath, store.Options{})
		if err != nil {
			return fail(err)
		}
		s.db = db
	}
	s.note("step %d: %s", s.step, s.stepDesc)
	if st, err := s.db.Load(s.target.Name); err == nil && st.Tag == "" {
		if md, err := s.sh.root.KVv2(s.sh.mount).GetMetadata(ctx, s.path); err != nil || md.CustomMetadata[rotation.MetadataKeyTag] == nil {
			// The state that serves now and the metadata both lack the
			// tag (a metadata delete before): keys of the old tag cannot
			// be told apart from anyone's, and stay foreign.
			s.tags = map[string]bool{}
		}
	}
	mine, _ := s.db.Identity()
	eng := s.newEngine(nil)
	for _, tg := range s.targets() {
		owner, inc, err := s.ownerInc(ctx, tg.Vault.Path)
		if err != nil {
			return fail(err)
		}
		// Another state file's, or a process this file never was (a
		// backup restored): the error says to run takeover.
		if owner == "" || (owner == mine && (inc == "" || s.db.KnownIncarnation(inc))) {
			continue
		}
		tk, err := eng.Takeover(ctx, tg)
		s.record(tk, err)
		s.note("  takeover %s: rebuilt %d, foreign %d, err=%v", tg.Name, len(tk.Rebuilt), len(tk.Foreign), err)
		if errors.Is(err, rotation.ErrServedUnknown) && tg.Name == s.target.Name && len(s.versions) > 0 {
			// A secret written by hand without key_id, and a listing
			// without raw keys: the error says to add the key_id.
			cur := s.versions[len(s.versions)-1]
			if werr := s.operatorWrite(cur.apiKey, cur.keyID, true); werr != nil {
				return fail(werr)
			}
			s.stats["served-unknown-fixed"]++
			tk, err = eng.Takeover(ctx, tg)
			s.record(tk, err)
			s.note("  after adding key_id: takeover %s: err=%v", tg.Name, err)
		}
		if errors.Is(err, rotation.ErrKeyShared) && s.copied != nil {
			// One of the two secrets is a copy of the other: the error
			// says to give the copy's target a key of its own. When the
			// copy's target was taken over first, it looks again once
			// fixed, and lets the key go.
			victim := s.victim()
			if ferr := s.fixCopy(ctx); ferr != nil {
				return fail(ferr)
			}
			if victim.Name != tg.Name {
				_, verr := eng.Takeover(ctx, victim)
				s.note("  after fixing the copy: takeover %s again: err=%v", victim.Name, verr)
			}
			tk, err = eng.Takeover(ctx, tg)
			s.record(tk, err)
			s.note("  after fixing the copy: takeover %s: err=%v", tg.Name, err)
		}
		if err != nil {
			s.violate("takeover of %s failed with every fault off: %v", tg.Name, err)
			continue
		}
		s.stats["takeover"]++
		if tg.Name == s.target.Name {
			s.recoverable = s.attributable(ctx)
		}
	}
	s.check(false, true)
	return true
}

// takeSnapshot copies the state file, as a backup would.
func (s *chaosRun) takeSnapshot() error {
	if err := s.db.Close(); err != nil {
		return err
	}
	b, rerr := os.ReadFile(s.dbPath)
	db, err := store.Open(s.dbPath, store.Options{})
	if err != nil {
		return err
	}
	s.db, s.snapshot = db, b
	return rerr
}

// reserve is the reserve the daemon keeps on the client: the strictest
// of its targets there (docs/design.md#shared-clients).
func (s *chaosRun) reserve() int {
	r := s.target.ReserveSlots
	if s.sib != nil {
		// Once the sibling has a state, the daemon knows it shares the
		// client (its recorded keys are among the target's listing).
		if st, err := s.db.Load(s.sib.target.Name); err == nil && len(st.Keys) > 0 {
			r = max(r, s.sib.target.ReserveSlots)
		}
	}
	return r
}

// targets are the targets of this schedule.
func (s *chaosRun) targets() []rotation.Target {
	if s.sib != nil {
		return []rotation.Target{s.target, s.sib.target}
	}
	return []rotation.Target{s.target}
}

// attributable are the live keys a takeover can tell are the target's:
// those in its name shape and those the secret's versions still in
// Vault served (older versions are pruned by max_versions).
func (s *chaosRun) attributable(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	kv := s.sh.root.KVv2(s.sh.mount)
	st, _ := s.db.Load(s.target.Name)
	if list, err := kv.GetVersionsAsList(ctx, s.path); err == nil {
		for _, v := range list {
			if v.Destroyed || !v.DeletionTime.IsZero() || s.vbase+v.Version > len(s.versions) {
				continue
			}
			if s.versions[s.vbase+v.Version-1].copied {
				// Another target's key, copied here by hand: its owner
				// keeps it, this target never takes it on.
				continue
			}
			// A version written by hand without key_id, or with the
			// key_id of another key (a patch of api_key that kept or
			// mislabelled it), names its key only by raw value, which a
			// listing may leave out: then only a fingerprint the state
			// holds tells the key.
			sec, err := kv.GetVersion(ctx, s.path, v.Version)
			if err != nil {
				continue
			}
			key := s.versions[s.vbase+v.Version-1].keyID
			id, _ := sec.Data[vault.FieldKeyID].(string)
			if rec := st.Key(key); id == key || !s.omitRaw || (rec != nil && rec.Fingerprint != "") {
				out[key] = true
			}
		}
	}
	for _, k := range s.emu.Keys() {
		if s.own(k.Name) {
			out[k.ID] = true
		}
	}
	return out
}

// stepBegin records which keys an emergency may retire without grace:
// every key alive when one is asked for, and while one may be unfinished.
func (s *chaosRun) stepBegin(emergency bool) {
	if emergency {
		s.emergencyOpen = true
	}
	if s.emergencyOpen {
		for _, k := range s.emu.Keys() {
			if k.Deleted == nil {
				s.exempt[k.ID] = true
			}
		}
	}
}

// stepEnd exempts from grace the keys an emergency step made: an
// emergency that finishes its own crashed attempt rotates once more and
// retires the key it had just published.
func (s *chaosRun) stepEnd() {
	if s.emergencyOpen {
		for _, k := range s.emu.Keys() {
			s.exempt[k.ID] = true
		}
	}
}

// revokedDuringStep reports whether id was deleted at the current time.
func (s *chaosRun) revokedDuringStep(id string) bool {
	for _, k := range s.emu.Keys() {
		if k.ID == id && k.Deleted != nil && k.Deleted.Equal(s.clock.Now()) {
			return true
		}
	}
	return false
}

func (s *chaosRun) livePortal() []string {
	var out []string
	for _, k := range s.emu.Keys() {
		if k.Origin == emulator.OriginPortal && k.Deleted == nil && !s.adopted[k.ID] {
			out = append(out, k.ID)
		}
	}
	return out
}

// chaosCatch runs fn and reports whether it crashed (a crasher's panic).
func chaosCatch(fn func()) (crashed bool, at string) {
	defer func() {
		if r := recover(); r != nil {
			sig, ok := r.(crashSignal)
			if !ok {
				panic(r)
			}
			crashed, at = true, sig.at
		}
	}()
	fn()
	return false, ""
}

func chaosPick(r *rand.Rand, kinds []string, weights []int) string {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range weights {
		if n < w {
			return kinds[i]
		}
		n -= w
	}
	return kinds[len(kinds)-1]
}

// chaosCodatFaults draws the Codat faults of one step.
func chaosCodatFaults(r *rand.Rand, kind string) (emulator.Faults, string) {
	var f emulator.Faults
	var desc []string
	if r.IntN(2) == 0 {
		return f, ""
	}
	ops := []struct {
		name string
		f    *emulator.OpFaults
	}{{emulator.OpList, &f.List}, {emulator.OpCreate, &f.Create}, {emulator.OpDelete, &f.Delete}}
	for _, op := range ops {
		if r.IntN(2) == 0 {
			continue
		}
		switch r.IntN(7) {
		case 0:
			op.f.Fail = 1 + r.IntN(2)
			op.f.FailStatus = []int{500, 502, 503, 504, 401}[r.IntN(5)]
			desc = append(desc, fmt.Sprintf("%s:fail%dx%d", op.name, op.f.FailStatus, op.f.Fail))
		case 1:
			op.f.FailRate = []float64{0.1, 0.3}[r.IntN(2)]
			desc = append(desc, fmt.Sprintf("%s:failrate%.1f", op.name, op.f.FailRate))
		case 2:
			// 429s of the IP's limit or of the client's quota; a storm
			// outlasts the client's attempts.
			n, kind := 1+r.IntN(2), "429"
			if r.IntN(4) == 0 {
				n = 3 + r.IntN(4)
			}
			if r.IntN(2) == 0 {
				op.f.QuotaRateLimit, kind = n, "quota429"
			} else {
				op.f.RateLimit = n
			}
			op.f.RetryAfter = emulator.Duration(time.Duration(1+r.IntN(30)) * time.Second)
			if r.IntN(5) == 0 {
				// Longer than the client waits: the call fails.
				op.f.RetryAfter = emulator.Duration(time.Duration(3+r.IntN(10)) * time.Minute)
			}
			op.f.RetryAfterDate = r.IntN(2) == 0
			desc = append(desc, fmt.Sprintf("%s:%sx%d", op.name, kind, n))
		case 3:
			op.f.Hang = 1
			desc = append(desc, op.name+":hang")
		case 4, 5:
			if op.name == emulator.OpList {
				op.f.LoseRate = 0.1
				desc = append(desc, op.name+":loserate")
				break
			}
			op.f.LoseResponse = 1 + r.IntN(2)
			desc = append(desc, fmt.Sprintf("%s:losex%d", op.name, op.f.LoseResponse))
		default:
			op.f.Latency = emulator.Duration(time.Duration(1+r.IntN(5)) * time.Millisecond)
			desc = append(desc, op.name+":latency")
		}
	}
	return f, strings.Join(desc, ",")
}

// check verifies the invariants after a step. clean says the step was a
// rotation that returned no error and did not crash, after which no
// orphan may be left (I5).
func (s *chaosRun) check(clean, passive bool) {
	ctx := context.Background()

	// I1, I2, I3 as the emulator saw them.
	v := s.emu.Violations()
	for _, x := range v[s.nviolations:] {
		switch x.Kind {
		case emulator.ViolationOverCap:
			s.violate("I1: emulator: %s: %s (key %s)", x.Kind, x.Detail, x.KeyID)
		case emulator.ViolationDeleteLastKey:
			s.violate("I2: emulator: %s: %s (key %s)", x.Kind, x.Detail, x.KeyID)
		case emulator.ViolationDeletedKeyUsed:
			s.violate("I3: emulator: %s: %s (key %s)", x.Kind, x.Detail, x.KeyID)
		default:
			s.violate("emulator: %+v", x)
		}
	}
	s.nviolations = len(v)
	// I1: the key count at each create.
	for _, c := range s.front.since(s.ncreates) {
		s.ncreates++
		if !c.made {
			continue
		}
		if c.before >= chaosMaxKeys {
			s.violate("I1: a key was created while codat held %d keys", c.before)
		} else if c.routine && c.before >= chaosMaxKeys-c.reserve {
			s.violate("I1: a routine rotation created a key while codat held %d keys (max %d, reserve %d)", c.before, chaosMaxKeys, c.reserve)
		}
	}

	keys := s.emu.Keys()
	active := map[string]emulator.KeyRecord{}
	for _, k := range keys {
		if k.Deleted == nil {
			active[k.ID] = k
		}
	}

	// I3: Vault serves a live key that authenticates; I4: outside
	// emergencies, a key goes no earlier than grace after its successor
	// was published. For the target and, when there is one, the other
	// target on the same client.
	if err := s.readVersions(ctx); err != nil {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: read vault versions: %v", s.step, err))
		return
	}
	s.checkSecret(ctx, "", s.versions, keys, active, s.graceBetween)
	if s.sib != nil {
		s.checkSecret(ctx, s.sib.target.Name+": ", s.sib.versions, keys, active, s.graceBetween)
	}
	if s.nb != nil {
		// The other deployment's config is its own: no reload changes
		// its grace.
		nbGrace := func(time.Time, time.Time) time.Duration { return s.nb.target.Grace }
		s.checkSecret(ctx, "neighbour "+s.nb.target.Name+": ", s.nb.versions, keys, active, nbGrace)
	}
	s.checkOwnKeys(keys)

	// I6: Portal keys go only by the harness or an explicit revoke.
	for _, k := range keys {
		if k.Origin == emulator.OriginPortal && k.Deleted != nil && !s.portalDeleted[k.ID] && !s.revoked[k.ID] && !s.adopted[k.ID] {
			s.violate("I6: portal key %s (%q) was deleted, never named by --revoke", k.ID, k.Name)
		}
	}

	st, err := s.db.Load(s.target.Name)
	if err != nil {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: load state: %v", s.step, err))
		return
	}
	if st.Journal == nil && !passive {
		s.emergencyOpen = false
	}
	// I5: after a clean rotation, no unknown key has the daemon's shape.
	if clean {
		if st.Journal != nil {
			s.violate("a successful rotation left a journal: step %s", st.Journal.Step)
		}
		known := map[string]bool{}
		for _, k := range st.Keys {
			if k.State != store.KeyDeleted {
				known[k.ID] = true
			}
		}
		for id, k := range active {
			if s.own(k.Name) && !known[id] {
				s.violate("I5: codat holds key %s named %q, unknown to the state", id, k.Name)
			}
		}
		// The state agrees with Vault and Codat: one active key, the
		// served one, and every managed key it keeps is at Codat.
		var activeIDs []string
		for _, k := range st.Keys {
			if k.State == store.KeyActive {
				activeIDs = append(activeIDs, k.ID)
			}
			if _, ok := active[k.ID]; k.Origin.Managed() && k.State != store.KeyDeleted && !ok {
				s.violate("state: managed key %s is %s, codat does not hold it", k.ID, k.State)
			}
		}
		if n := len(s.versions); n > 0 && (len(activeIDs) != 1 || activeIDs[0] != s.versions[n-1].keyID) {
			s.violate("state: active keys %v, want exactly the served key %s", activeIDs, s.versions[n-1].keyID)
		}
	}
}

// checkSecret checks I3 and I4 for one secret's versions.
func (s *chaosRun) checkSecret(ctx context.Context, label string, versions []chaosVersion, keys []emulator.KeyRecord, active map[string]emulator.KeyRecord, graceBetween func(from, to time.Time) time.Duration) {
	if n := len(versions); n > 0 {
		cur := versions[n-1]
		if _, ok := active[cur.keyID]; !ok {
			s.violate("%sI3: vault serves key %s, which codat does not hold", label, cur.keyID)
		} else if _, err := s.checker.WithKey(codat.Secret(cur.apiKey)).List(ctx); err != nil {
			s.violate("%sI3: the served key %s does not authenticate: %v", label, cur.keyID, err)
		}
	}
	for _, k := range keys {
		if k.Deleted == nil || s.exempt[k.ID] {
			continue
		}
		// The last time Vault served it (an operator may have rolled
		// back to it), and the version that superseded it then.
		last := -1
		for i, v := range versions {
			if v.keyID == k.ID {
				last = i
			}
		}
		if last < 0 {
			continue // never published here
		}
		if last == len(versions)-1 {
			s.violate("%sI3: key %s was deleted at %s while vault still served it", label, k.ID, rfc3339(*k.Deleted))
			continue
		}
		if versions[last].copied {
			continue
		}
		succ := versions[last+1]
		g := graceBetween(succ.rotatedAt, *k.Deleted)
		if k.Deleted.Before(succ.rotatedAt.Add(g)) {
			s.violate("%sI4: key %s deleted at %s, its successor %s was published at %s (grace %s)",
				label, k.ID, rfc3339(*k.Deleted), succ.keyID, rfc3339(succ.rotatedAt), g)
		}
	}
}

// keyOwner says which target a key belongs to: one whose name carries
// its tag, its bootstrap key, or one its secret served; "" for others.
func (s *chaosRun) keyOwner(id, name string) string {
	if o := s.keyOwners(id, name, false); len(o) > 0 {
		return o[0]
	}
	return ""
}

// keyOwners says which targets a key belongs to: those whose name shape
// or bootstrap key it is, or whose secret served it; with copies, also
// those whose secret served it as a copy of another's (the key then
// authenticates as that target's credential too).
func (s *chaosRun) keyOwners(id, name string, copies bool) []string {
	served := func(vs []chaosVersion) bool {
		return slices.ContainsFunc(vs, func(v chaosVersion) bool { return v.keyID == id && (copies || !v.copied) })
	}
	var out []string
	if s.nb != nil && (s.nbOwn(name) || id == s.nb.bootID || served(s.nb.versions)) {
		out = append(out, "neighbour "+s.nb.target.Name)
	}
	if s.sib != nil && (s.names(s.sib.target.Name).Own(name) || id == s.sib.bootID || served(s.sib.versions)) {
		out = append(out, s.sib.target.Name)
	}
	if s.own(name) || (s.initial != "" && id == s.initial) || served(s.versions) {
		out = append(out, s.target.Name)
	}
	return out
}

// nbOwn reports whether name is in the neighbour's own shape.
func (s *chaosRun) nbOwn(name string) bool {
	st, err := s.nb.db.Load(s.nb.target.Name)
	return err == nil && rotation.NamesOf(s.nb.target, st.Tag).Own(name)
}

// checkOwnKeys: a delete at Codat is made with a credential of the
// target that owns the key, never with another target's (two targets
// on one client never delete each other's keys).
func (s *chaosRun) checkOwnKeys(keys []emulator.KeyRecord) {
	names := map[string]string{}
	for _, k := range keys {
		names[k.ID] = k.Name
		if k.Origin == emulator.OriginInitial {
			s.initial = k.ID
		}
	}
	events := s.emu.Events(s.nevents + 1)
	for _, ev := range events {
		s.nevents = ev.Seq
		if ev.Op != emulator.OpDelete || ev.Status/100 != 2 {
			continue
		}
		id := ev.Path[strings.LastIndex(ev.Path, "/")+1:]
		owners, by := s.keyOwners(id, names[id], true), s.keyOwners(ev.KeyID, names[ev.KeyID], true)
		if len(owners) > 0 && len(by) > 0 && !slices.ContainsFunc(by, func(b string) bool { return slices.Contains(owners, b) }) {
			s.violate("target %v deleted key %s (%q), which belongs to target %v", by, id, names[id], owners)
		}
	}
}

// readVersions reads the versions of the secrets written since the last call.
func (s *chaosRun) readVersions(ctx context.Context) error {
	if s.sib != nil {
		if err := s.readVersionsOf(ctx, s.sib.path, &s.sib.versions, s.sib.opWrites, 0); err != nil {
			return fmt.Errorf("%s: %w", s.sib.path, err)
		}
	}
	if s.nb != nil {
		if err := s.readVersionsOf(ctx, s.nb.target.Vault.Path, &s.nb.versions, nil, 0); err != nil {
			return fmt.Errorf("%s: %w", s.nb.target.Vault.Path, err)
		}
	}
	return s.readVersionsOf(ctx, s.path, &s.versions, s.opWrites, s.vbase)
}

// readVersionsOf appends the versions of the secret at path written
// since the last call to *versions; opWrites are those an operator wrote,
// by their place in *versions (from 1). base is how many versions the
// path had before its metadata was last deleted: Vault's version v is
// the base+v-th.
func (s *chaosRun) readVersionsOf(ctx context.Context, path string, versions *[]chaosVersion, opWrites map[int]chaosVersion, base int) error {
	kv := s.sh.root.KVv2(s.sh.mount)
	md, err := kv.GetMetadata(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for v := len(*versions) - base + 1; v <= md.CurrentVersion; v++ {
		sec, err := kv.GetVersion(ctx, path, v)
		if err != nil {
			return fmt.Errorf("version %d: %w", v, err)
		}
		if cv, ok := opWrites[base+v]; ok {
			// Written by hand: perhaps without key_id or rotated_at; the
			// harness knows what it wrote and when.
			*versions = append(*versions, cv)
			continue
		}
		cv := chaosVersion{}
		cv.keyID, _ = sec.Data[vault.FieldKeyID].(string)
		cv.apiKey, _ = sec.Data[vault.FieldAPIKey].(string)
		ra, _ := sec.Data[vault.FieldRotatedAt].(string)
		if ra == "" && len(*versions) > 0 {
			// The daemon always writes rotated_at: this is the harness's
			// CAS bump, a copy of a version written by hand.
			prev := (*versions)[len(*versions)-1]
			if cv.apiKey != prev.apiKey {
				return fmt.Errorf("version %d: no rotated_at, and not a copy of version %d", v, v-1)
			}
			*versions = append(*versions, prev)
			continue
		}
		if cv.rotatedAt, err = time.Parse(time.RFC3339, ra); err != nil {
			return fmt.Errorf("version %d: rotated_at %q: %w", v, ra, err)
		}
		if n := len(*versions); n > 0 && cv.apiKey == (*versions)[n-1].apiKey {
			// The same raw key as the version before (the harness's CAS
			// bump of a hand patch whose key_id is wrong): it serves the
			// key it served, whatever its label says.
			cv.keyID = (*versions)[n-1].keyID
		}
		*versions = append(*versions, cv)
	}
	return nil
}

// checkSecrets scans the logs, what the engine returned and the state
// file's bytes for every raw key and header (I7).
func (s *chaosRun) checkSecrets() {
	raws := map[string]bool{}
	for _, r := range s.raw.list() {
		raws[r] = true
	}
	for _, v := range s.versions {
		raws[v.apiKey] = true
	}
	if err := s.db.Close(); err != nil {
		s.violations = append(s.violations, "harness: close state file: "+err.Error())
	}
	s.db = nil
	file, err := os.ReadFile(s.dbPath)
	if err != nil {
		s.violations = append(s.violations, "harness: read state file: "+err.Error())
	}
	if s.otherDB != nil {
		_ = s.otherDB.Close()
		s.otherDB = nil
		other, _ := os.ReadFile(s.otherPath)
		file = append(file, other...)
	}
	hay := map[string]string{"logs": s.logs.String(), "errors and results": strings.Join(s.said, "\n"), "state file": string(file)}
	for r := range raws {
		if r == "" {
			continue
		}
		b64 := base64.StdEncoding.EncodeToString([]byte(r))
		for needle, what := range map[string]string{r: "raw key", "Basic " + b64: "authorization header", strings.TrimRight(b64, "="): "base64 of a key"} {
			for where, h := range hay {
				if strings.Contains(h, needle) {
					s.violate("I7: a %s appears in the %s", what, where)
				}
			}
		}
	}
}

// chaosFront sits in front of the emulator and records, for every
// create, how many keys Codat held when it arrived and whether it made
// a key.
type chaosFront struct {
	next http.Handler
	emu  *emulator.Server

	mu      sync.Mutex
	routine bool
	reserve int
	creates []chaosCreate
}

type chaosCreate struct {
	before  int
	made    bool
	routine bool
	reserve int
}

// setRoutine says whether the creates to come are routine, and the
// reserve the acting daemon keeps: the strictest of the targets it
// knows on this client.
func (f *chaosFront) setRoutine(routine bool, reserve int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routine, f.reserve = routine, reserve
}

func (f *chaosFront) since(n int) []chaosCreate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.creates[n:])
}

func (f *chaosFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/apiKeys" {
		before, made := f.emu.ActiveKeys(), len(f.emu.Keys())
		f.mu.Lock()
		routine, reserve := f.routine, f.reserve
		f.mu.Unlock()
		// Deferred: a lost response ends the handler with a panic.
		defer func() {
			c := chaosCreate{before: before, made: len(f.emu.Keys()) > made, routine: routine, reserve: reserve}
			f.mu.Lock()
			f.creates = append(f.creates, c)
			f.mu.Unlock()
		}()
	}
	f.next.ServeHTTP(w, r)
}

// chaosVault is a reverse proxy in front of the dev server that fails
// requests at random (seeded) and can write the secret behind the
// engine's back, with the same content, right before the engine's next
// write: a check-and-set conflict that publishes nothing new.
type chaosVault struct {
	rp          *httputil.ReverseProxy
	root        *api.Client
	mount, path string

	mu      sync.Mutex
	rng     *rand.Rand
	rate    float64
	kinds   []string
	casBump bool
	// injected counts the faults played, by kind ("cas" for a bump).
	injected map[string]int
}

func (p *chaosVault) arm(rate float64, kinds []string, casBump bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate, p.kinds, p.casBump = rate, kinds, casBump
}

func (p *chaosVault) isDataWrite(r *http.Request) bool {
	return (r.Method == http.MethodPut || r.Method == http.MethodPost) && r.URL.Path == "/v1/"+p.mount+"/data/"+p.path
}

func (p *chaosVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	kind := ""
	if p.rate > 0 && len(p.kinds) > 0 && p.rng.Float64() < p.rate {
		kind = p.kinds[p.rng.IntN(len(p.kinds))]
	}
	bump := p.casBump && p.isDataWrite(r)
	if bump {
		p.casBump = false
	}
	if p.injected == nil {
		p.injected = map[string]int{}
	}
	if kind != "" {
		p.injected[kind]++
	}
	if bump {
		p.injected["cas"]++
	}
	p.mu.Unlock()
	if bump {
		p.bump(r.Context())
	}
	fail := func(status int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"errors":[%q]}`, msg)
	}
	switch kind {
	case "503":
		fail(http.StatusServiceUnavailable, "injected: service unavailable")
	case "500":
		fail(http.StatusInternalServerError, "injected: internal error")
	case "sealed":
		fail(http.StatusServiceUnavailable, "Vault is sealed")
	case "denied":
		// A token whose lookup and renewal fail for a while: Vault
		// refuses every call until it is renewed or replaced.
		fail(http.StatusForbidden, "permission denied")
	case "drop":
		panic(http.ErrAbortHandler)
	case "drop-after":
		// The request reaches Vault; its answer never comes back.
		p.rp.ServeHTTP(httptest.NewRecorder(), r)
		panic(http.ErrAbortHandler)
	case "slow":
		time.Sleep(20 * time.Millisecond)
		p.rp.ServeHTTP(w, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// bump writes the secret's current data again: a new version with the
// same content.
func (p *chaosVault) bump(ctx context.Context) {
	kv := p.root.KVv2(p.mount)
	cur, err := kv.Get(ctx, p.path)
	if err != nil || cur == nil || cur.Data == nil {
		return // nothing to write again yet (the bootstrap write)
	}
	_, _ = kv.Put(ctx, p.path, cur.Data)
}

// TestEmergencyRerunAfterPublishCrash: an operator runs an emergency
// rotation with --revoke, the process dies right after the new key is
// written to Vault, and the operator runs the same command again. The
// rerun's recovery finishes the emergency (activates the key, revokes
// the leaked one), but rotate (run.go) then starts a second emergency
// rotation because the caller asked for one, and its plan refuses the
// --revoke of the key just deleted: the command fails although the
// emergency is complete. Without --revoke the same path makes and
// publishes one more key and retires the one just published at once.
// Found by TestChaos (an emergency whose first attempt left a journal).
func TestEmergencyRerunAfterPublishCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	leaked := e.portal("leaked-laptop")
	e.mustRotate(rotation.Options{})
	e.clock.Advance(time.Hour)
	opts := rotation.Options{Emergency: true, Revoke: leaked, Manual: true}
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && c.after }}
	if _, crashed := e.rotateUntilCrash(c, opts); !crashed {
		t.Fatal("no crash")
	}
	published := e.mustServe().Data[vault.FieldKeyID]
	made := len(e.apiKeys())

	res, err := e.rotateWith(e.newEngine(nil), opts)
	if err != nil {
		t.Errorf("rerunning the interrupted emergency rotation: %v", err)
	}
	if e.keyRecord(leaked).Deleted == nil {
		t.Errorf("the key named in --revoke still exists")
	}
	if got := e.mustServe().Data[vault.FieldKeyID]; got != published {
		t.Errorf("vault serves %s, want %s, the key the interrupted emergency published (Recovered=%v)", got, published, res.Recovered)
	}
	if n := len(e.apiKeys()) - made; n != 0 {
		t.Errorf("the rerun made %d more key(s), want 0: the interrupted emergency was finished", n)
	}
	e.checkInvariants()
}

// TestPublishedKeyOutlivesOperatorPublish: a rotation's write to Vault
// lands and the process dies before it reads it back, so Vault serves
// the new key (consumers pick it up) while the journal still says
// "publish". Before the daemon restarts, an operator publishes another
// key by hand. Recovery (recover.go, "vault changed since the rotation
// began") sees a new Vault version and rolls the journaled key back,
// deleting at once a key Vault served: I4 wants it kept for grace after
// its successor (the operator's key) was published. Found by TestChaos.
func TestPublishedKeyOutlivesOperatorPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	e.clock.Advance(time.Hour)
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && c.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("no crash")
	}
	served := e.mustServe().Data[vault.FieldKeyID] // the crashed rotation's key, published

	e.clock.Advance(time.Hour)
	opID, opRaw, err := e.emu.AddPortalKey("operator")
	if err != nil {
		t.Fatal(err)
	}
	e.raw.add(opRaw)
	cur, err := e.vault.Read(context.Background(), adapt.VaultLocation(e.target.Vault))
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	if _, err := e.vault.Write(context.Background(), adapt.VaultLocation(e.target.Vault),
		vault.Secret{APIKey: codat.Secret(opRaw), KeyID: opID, CreatedAt: now, RotatedAt: now}, cur.Version, nil); err != nil {
		t.Fatal(err)
	}

	_, err = e.rotate(rotation.Options{})
	t.Logf("rotation after the operator's publish: %v", err)
	if d := e.keyRecord(served).Deleted; d != nil && d.Before(now.Add(grace)) {
		t.Errorf("key %s, served by vault until the operator published %s at %s, was deleted at %s: want no earlier than %s (I4)",
			served, opID, rfc3339(now), rfc3339(*d), rfc3339(now.Add(grace)))
	}
	if v := e.emu.Violations(); len(v) != 0 {
		t.Errorf("emulator violations: %+v", v)
	}
}

// operatorWrite publishes a key by hand, as `vault kv put` would: the
// raw key alone, or with its key_id (the header half the time), and no
// rotated_at. The harness remembers what it wrote and when.
func (s *chaosRun) operatorWrite(raw, id string, withID bool) error {
	data := map[string]any{vault.FieldAPIKey: raw}
	if withID {
		data[vault.FieldKeyID] = id
	}
	if s.rng.IntN(2) == 0 {
		data[vault.FieldHeader] = secret.AuthorizationHeader(secret.Value(raw)).Reveal()
	}
	sec, err := s.sh.root.KVv2(s.sh.mount).Put(context.Background(), s.path, data)
	if err != nil {
		return err
	}
	if sec.VersionMetadata == nil {
		return fmt.Errorf("vault kv put %s: no version in the answer", s.path)
	}
	s.opWrites[s.vbase+sec.VersionMetadata.Version] = chaosVersion{keyID: id, apiKey: raw, rotatedAt: s.clock.Now()}
	return s.readVersions(context.Background())
}
