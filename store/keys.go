package store

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

const masterKeySize = 32 // AES-256

// keyFormatV1 is the first byte of a sealed key: AES-256-GCM, 12-byte nonce
// following, then the sealed PKCS#8 DER.
const keyFormatV1 = 1

// loadMasterKey reads the master key file into s.aead and checks it against
// the store's key check: a value sealed under the master key when the store
// was first opened with it. A wrong or missing key file is refused at open
// (with what to do) instead of failing later on the first private key: the
// key is never in the database, so every node of a PostgreSQL store needs
// a copy of the same file. The file is made only for a store without a
// check (a new one, or one from before the check existed).
func (s *Store) loadMasterKey(ctx context.Context, path string) error {
	var check []byte
	err := s.db.QueryRowContext(ctx, `SELECT sealed FROM master_key_check WHERE id = 1`).Scan(&check)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read master key check: %w", err)
	}
	if len(check) > 0 {
		key, err := readMasterKey(path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store %s holds private keys sealed with a master key, but %s does not exist: copy the master key file of the node (or backup) that made this store", s.loc, path)
		}
		if err != nil {
			return err
		}
		s.aead, err = newMasterAEAD(key)
		if err != nil {
			return err
		}
		return s.verifyMasterKey(check, path)
	}
	key, err := readMasterKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createMasterKey(path)
	}
	if err != nil {
		return err
	}
	if s.aead, err = newMasterAEAD(key); err != nil {
		return err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("master key check: %w", err)
	}
	sealed := s.aead.Seal(nonce, nonce, []byte(masterKeyCheck), []byte(masterKeyCheck))
	// Another node may record its check at the same moment: the first one
	// wins, and the others compare against it.
	err = s.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO master_key_check (id, sealed) VALUES (1, ?)
			ON CONFLICT (id) DO NOTHING`, sealed); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT sealed FROM master_key_check WHERE id = 1`).Scan(&check)
	})
	if err != nil {
		return fmt.Errorf("record master key check: %w", err)
	}
	return s.verifyMasterKey(check, path)
}

// masterKeyCheck is the plain text (and associated data) of the key check.
const masterKeyCheck = "hisp master key check v1"

func (s *Store) verifyMasterKey(check []byte, path string) error {
	ns := s.aead.NonceSize()
	if len(check) < ns {
		return errors.New("master key check: malformed")
	}
	if _, err := s.aead.Open(nil, check[:ns], check[ns:], []byte(masterKeyCheck)); err != nil {
		return fmt.Errorf("master key %s is not the key of store %s (its private keys would not decrypt): use the master key file of the node that made the store", path, s.loc)
	}
	return nil
}

// newMasterAEAD returns the AES-256-GCM AEAD of a master key, clearing the
// key bytes.
func newMasterAEAD(key []byte) (cipher.AEAD, error) {
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return aead, nil
}

// readMasterKey reads the master key, refusing a file whose mode lets
// anyone but its owner read or write it.
func readMasterKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("master key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		return nil, fmt.Errorf("master key %s has mode %04o, wider than 0600: refusing to use it (it protects every private key); fix it with: chmod 600 %s", path, perm, path)
	}
	key, err := io.ReadAll(io.LimitReader(f, masterKeySize+1))
	if err != nil {
		return nil, fmt.Errorf("read master key: %w", err)
	}
	if len(key) != masterKeySize {
		return nil, fmt.Errorf("master key %s: want %d bytes, file has %d", path, masterKeySize, len(key))
	}
	return key, nil
}

// createMasterKey writes a new random master key with mode 0600. It writes
// a temporary file and links it into place, so a concurrent opener sees
// either no key or a complete one; if another process won, its key is used.
func createMasterKey(path string) ([]byte, error) {
	key := make([]byte, masterKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("make master key: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".master.key-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("make master key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("make master key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write master key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write master key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write master key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			clear(key)
			return readMasterKey(path)
		}
		return nil, fmt.Errorf("install master key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return key, nil
}

// sealKey encrypts a private key, as PKCS#8, under the master key. aad binds
// the ciphertext to its row (the certificate fingerprint), so sealed keys
// cannot be swapped between rows.
func (s *Store) sealKey(key crypto.PrivateKey, aad string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	defer clear(der)
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	out := make([]byte, 0, 1+len(nonce)+len(der)+s.aead.Overhead())
	out = append(out, keyFormatV1)
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, der, []byte(aad)), nil
}

// openKey decrypts a key sealed by sealKey.
func (s *Store) openKey(sealed []byte, aad string) (crypto.Signer, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns || sealed[0] != keyFormatV1 {
		return nil, errors.New("decrypt private key: unknown format")
	}
	der, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("decrypt private key (wrong master.key?): %w", err)
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("decode private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("decode private key: %T is not a signer", k)
	}
	return signer, nil
}

func keyAAD(kind, fingerprint string) string {
	return "hisp " + kind + " key v1 " + fingerprint
}
