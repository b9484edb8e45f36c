package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dirPrefix names the directories of started servers under os.TempDir().
const dirPrefix = "hisp-pgtest-"

// superuser is the role initdb makes; it connects with trust on loopback.
const superuser = "hisp"

// localServer is a PostgreSQL server this test binary started.
type localServer struct {
	dir  string // holds owner, postgres.log, the socket and data/
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the postmaster has exited
}

func (ls *localServer) url(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, ls.port, db)
}

// findBinaries returns the directory holding initdb and postgres: the one
// pg_config names, else the newest /usr/lib/postgresql/N/bin (Debian puts
// the server there, not on PATH), else PATH's.
func findBinaries() (string, error) {
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versioned, func(i, j int) bool { return majorOf(versioned[i]) > majorOf(versioned[j]) })
	dirs = append(dirs, versioned...)
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
	}
	for _, d := range dirs {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errNoBinaries
}

// majorOf returns N of /usr/lib/postgresql/N/bin, 0 if not a number.
func majorOf(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// serverUser returns the credentials to run PostgreSQL with: nil (this
// process's) unless running as root, which PostgreSQL refuses; then the
// Debian package's user postgres, or nobody.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root, and no user postgres or nobody to run PostgreSQL as (it refuses root)")
}

// serverEnv is this process's environment without the PG* variables that
// would redirect initdb or postgres, in the C locale.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// startLocal initializes a cluster in a new directory under os.TempDir()
// and starts a server on a free loopback port, waiting until it accepts
// connections.
func startLocal(ctx context.Context, bin string) (*localServer, error) {
	sweep()
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*localServer, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	// The owner lets a later sweep tell a live run's server from one left
	// behind by a killed test binary.
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fail(err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("give %s to the PostgreSQL user: %w", dir, err))
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", superuser,
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Dir, initdb.Env, initdb.SysProcAttr = dir, serverEnv(), sysProcAttr(cred)
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	// A free port may be taken by another process before postgres binds it:
	// then try another.
	for range 5 {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		ls := &localServer{dir: dir, port: port, done: make(chan struct{})}
		// Tests connect over TCP; the socket is for psql -h dir when
		// debugging, and left out where its path would be too long.
		socketDir := dir
		if len(dir)+len("/.s.PGSQL.65535") >= 100 {
			socketDir = ""
		}
		ls.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", socketDir,
			"-h", "127.0.0.1", "-p", strconv.Itoa(port),
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=200", "-c", "logging_collector=off")
		ls.cmd.Dir, ls.cmd.Env, ls.cmd.SysProcAttr = dir, serverEnv(), sysProcAttr(cred)
		ls.cmd.Stdout, ls.cmd.Stderr = logFile, logFile
		logStart, _ := logFile.Seek(0, 1)
		if err := ls.cmd.Start(); err != nil {
			return fail(fmt.Errorf("start postgres: %w", err))
		}
		go func() {
			ls.cmd.Wait()
			close(ls.done)
		}()
		err = ls.waitReady(ctx)
		if err == nil {
			return ls, nil
		}
		ls.stopProcess()
		log := readFrom(filepath.Join(dir, "postgres.log"), logStart)
		if bytes.Contains(log, []byte("could not bind")) || bytes.Contains(log, []byte("already in use")) {
			continue
		}
		return fail(fmt.Errorf("postgres on port %d: %w\n%s", port, err, log))
	}
	return fail(errors.New("postgres: no free port after 5 tries"))
}

func readFrom(path string, off int64) []byte {
	b, _ := os.ReadFile(path)
	if off >= 0 && off <= int64(len(b)) {
		b = b[off:]
	}
	return b
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady waits until the server accepts a connection to its postgres
// database, or exits, or ctx ends.
func (ls *localServer) waitReady(ctx context.Context) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		db, err := connect(pctx, ls.url("postgres"))
		cancel()
		if err == nil {
			db.Close()
			return nil
		}
		select {
		case <-ls.done:
			return fmt.Errorf("exited before accepting connections (%v)", ls.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not accepting connections: %w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop shuts the server down and removes its directory.
func (ls *localServer) stop() {
	ls.stopProcess()
	os.RemoveAll(ls.dir)
}

// stopProcess asks for a fast shutdown (SIGINT: sessions ended, no waiting
// for clients), then an immediate one, then kills.
func (ls *localServer) stopProcess() {
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGQUIT, os.Kill} {
		ls.cmd.Process.Signal(sig)
		select {
		case <-ls.done:
			return
		case <-time.After(30 * time.Second):
		}
	}
}

// sweep removes the directories of servers whose test binary is gone
// (killed by go test -timeout, or a signal), stopping their server if it
// still runs. Directories of live runs, other users' and unknown ones are
// left alone.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err != nil {
			// Not yet written by a starting run, or not ours.
			continue
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || owner <= 0 || alive(owner) {
			continue
		}
		if pm := postmasterPID(d); pm > 0 && alive(pm) {
			if !runsIn(pm, d) {
				continue // the pid was reused: not ours to signal
			}
			syscall.Kill(pm, syscall.SIGQUIT)
			for i := 0; i < 100 && alive(pm); i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		os.RemoveAll(d)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// postmasterPID reads the pid of the server of dir from its lock file.
func postmasterPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

// runsIn reports whether process pid has dir on its command line (the
// postgres -D of a server started here).
func runsIn(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(dir))
}
