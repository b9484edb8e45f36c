package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hisp-project/hisp/store"
)

func init() {
	register("backup", command{
		summary: "copy the data directory, consistent, while hisp serve runs (restore: serve with --data DIR)",
		run:     backupCmd,
	})
}

// backupCmd is "hisp backup DIR": a new directory (mode 0700) with a
// consistent copy of the database taken while the server runs (SQLite's
// VACUUM INTO), the master key that decrypts its private keys, and the
// other files of the data directory (the TLS certificate). Serving with
// --data DIR restores it.
func backupCmd(env *cliEnv, args []string) int {
	c := newAdminCmd(env, "backup", "DIR", false)
	pos, code, ok := c.parse(args, 1, 1)
	if !ok {
		return code
	}
	dst := pos[0]
	if err := os.Mkdir(dst, 0o700); err != nil {
		return c.fail(fmt.Errorf("backup directory: %w (it must not exist yet)", err))
	}
	code = c.withStore(func(ctx context.Context, st *store.Store) int {
		if err := st.Backup(ctx, filepath.Join(dst, store.DBFile)); err != nil {
			return c.fail(err)
		}
		entries, err := os.ReadDir(st.Dir())
		if err != nil {
			return c.fail(err)
		}
		copied := []string{store.DBFile}
		for _, e := range entries {
			name := e.Name()
			// The database and its WAL files are in the copy already;
			// symbolic links (a TLS certificate kept elsewhere) are
			// followed.
			if name == store.DBFile || strings.HasPrefix(name, store.DBFile+"-") {
				continue
			}
			if fi, err := os.Stat(filepath.Join(st.Dir(), name)); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := copyPrivate(filepath.Join(st.Dir(), name), filepath.Join(dst, name)); err != nil {
				return c.fail(err)
			}
			copied = append(copied, name)
		}
		c.audit(ctx, st, "backup", dst, "")
		fmt.Fprintf(env.stdout, "backed up %s to %s: %s\n", st.Dir(), dst, strings.Join(copied, ", "))
		fmt.Fprintf(env.stderr, "%s holds the master key and private keys: keep it as safe as the data directory.\n", dst)
		return 0
	})
	if code != 0 {
		// No partial backup, which could hold the master key, is left.
		os.RemoveAll(dst)
	}
	return code
}

// copyPrivate copies a file to a new file of mode 0600.
func copyPrivate(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
