package store

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
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

// loadMasterKey reads the master key file, creating it when missing, and
// returns its AEAD.
func loadMasterKey(path string) (cipher.AEAD, error) {
	key, err := readMasterKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createMasterKey(path)
	}
	if err != nil {
		return nil, err
	}
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
