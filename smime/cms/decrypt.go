package cms

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// KeyPair is a local certificate with its private key (an *rsa.PrivateKey or any crypto.Decrypter
// whose Public() is *rsa.PublicKey).
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.PrivateKey
}

// Decrypted is the result of Decrypt.
type Decrypted struct {
	Content      []byte
	Cipher       ContentCipher
	KeyTransport KeyTransport
	Recipient    *x509.Certificate // which local certificate opened it

	// ContentType is the type of the decrypted content, normally id-data
	// (1.2.840.113549.1.7.1).
	ContentType asn1.ObjectIdentifier
}

// envelope is the parsed outer structure of an EnvelopedData or
// AuthEnvelopedData. Its slices point into the input.
type envelope struct {
	authenticated bool
	recipients    []berElement // the RecipientInfo elements
	contentType   asn1.ObjectIdentifier
	algorithm     pkix.AlgorithmIdentifier
	encrypted     berElement // encryptedContent [0] IMPLICIT OCTET STRING
	hasEncrypted  bool
	authAttrs     []byte // AuthEnvelopedData: DER of authAttrs with a SET OF tag, or nil
	mac           []byte // AuthEnvelopedData: the GCM tag (a copy)
	macElement    []byte // AuthEnvelopedData: the mac element within the input
}

// Decrypt parses a BER or DER ContentInfo holding EnvelopedData or
// AuthEnvelopedData and decrypts it with the first KeyPair that matches a
// RecipientInfo.
//
// Decrypt works in place to keep memory low: it overwrites der, and the
// returned Content is a slice of der. A caller that needs der afterwards
// must pass a copy.
//
// Keys are tried in the order given. A key is used when a key transport
// RecipientInfo names its certificate, by issuer and serial number (the
// issuer compared as encoded) or by subject key identifier; no key is tried
// against a RecipientInfo that does not name it. RecipientInfos of other kinds
// (key agreement, KEK, password, other) are skipped. The matching key must be
// an RSA key of at least MinRSABits bits (ErrWeakKey otherwise).
//
// Errors wrap ErrMalformed, ErrNoMatchingRecipient, ErrDecryptionFailed or
// ErrWeakKey, or are an *UnsupportedAlgorithmError, which matches
// ErrRefusedAlgorithm or ErrUnsupportedAlgorithm. ErrDecryptionFailed covers
// a failed key transport, a GCM tag mismatch and bad CBC padding alike; a
// peer should not be told which. A matching KeyPair whose key is not an RSA
// crypto.Decrypter, or does not belong to its certificate, is a local
// configuration error and gets an error of its own.
func Decrypt(der []byte, keys []KeyPair) (*Decrypted, error) {
	env, err := parseEnvelope(der)
	if err != nil {
		return nil, err
	}

	// The content-encryption algorithm first: a refused algorithm is
	// refused whoever the message is for, and before any RSA operation.
	alg, err := parseContentAlgorithm(env)
	if err != nil {
		return nil, err
	}

	// The encrypted content is gathered in place now, so that all of the
	// message has been read before any RSA operation. This writes only
	// within the encryptedContent element.
	if !env.hasEncrypted {
		return nil, malformed("the encrypted content is absent (detached content is not supported)")
	}
	ct, err := compactOctets(env.encrypted, 4)
	if err != nil {
		return nil, inField("encrypted content", err)
	}
	if !env.authenticated && (len(ct) == 0 || len(ct)%aes.BlockSize != 0) {
		return nil, malformed("AES-CBC content of %d bytes is not a positive multiple of the block size", len(ct))
	}

	ri, kp, err := findRecipient(env.recipients, keys)
	if err != nil {
		return nil, err
	}
	dec, err := decrypterFor(kp)
	if err != nil {
		return nil, err
	}
	kt, opts, err := parseKeyTransport(ri.KeyEncryptionAlgorithm)
	if err != nil {
		return nil, err
	}
	cek, err := decryptKey(dec, ri.EncryptedKey, alg.cipher.keySize(), opts)
	if err != nil {
		return nil, err
	}

	var content []byte
	if env.authenticated {
		content, err = openGCM(der, ct, cek, alg, env)
	} else {
		content, err = openCBC(ct, cek, alg.iv)
	}
	if err != nil {
		return nil, err
	}
	return &Decrypted{
		Content:      content,
		Cipher:       alg.cipher,
		KeyTransport: kt,
		Recipient:    kp.Cert,
		ContentType:  env.contentType,
	}, nil
}

// parseEnvelope reads ContentInfo (RFC 5652 section 3) holding EnvelopedData
// (RFC 5652 section 6.1) or AuthEnvelopedData (RFC 5083 section 2.1).
func parseEnvelope(der []byte) (*envelope, error) {
	contentType, content, err := parseContentInfo(der, false)
	if err != nil {
		return nil, err
	}
	env := &envelope{}
	switch {
	case contentType.Equal(oidEnvelopedData):
	case contentType.Equal(oidAuthEnvelopedData):
		env.authenticated = true
	default:
		return nil, malformed("content type %s is neither enveloped-data nor auth-enveloped-data", contentType)
	}
	fields, err := berChildren(content, 2)
	if err != nil {
		return nil, err
	}

	next := func(class, tag int) (berElement, bool) { return takeField(&fields, class, tag) }

	v, ok := next(asn1.ClassUniversal, asn1.TagInteger)
	if !ok {
		return nil, malformed("version missing")
	}
	var version int
	if err := unmarshalBER(v.full, &version, "version"); err != nil {
		return nil, err
	}
	// RFC 5652 section 6.1 allows versions 0, 2, 3 and 4; RFC 5083 section
	// 2.1 requires 0. Other values are tolerated: the version says which
	// fields may appear, and those are read by their tags anyway.
	if version < 0 || version > 4 {
		return nil, malformed("version %d", version)
	}
	next(asn1.ClassContextSpecific, 0) // originatorInfo, not needed for key transport

	set, ok := next(asn1.ClassUniversal, asn1.TagSet)
	if !ok || !set.constructed {
		return nil, malformed("recipientInfos missing")
	}
	env.recipients, err = berChildren(set, 3)
	if err != nil {
		return nil, err
	}
	if len(env.recipients) == 0 {
		return nil, malformed("recipientInfos is empty")
	}

	eci, ok := next(asn1.ClassUniversal, asn1.TagSequence)
	if !ok || !eci.constructed {
		return nil, malformed("encryptedContentInfo missing")
	}
	if err := parseEncryptedContentInfo(env, eci); err != nil {
		return nil, err
	}

	if env.authenticated {
		if attrs, ok := next(asn1.ClassContextSpecific, 1); ok {
			// RFC 5083 section 2.2: the additional authenticated data is
			// the DER of authAttrs with the SET OF tag in place of [1].
			if !attrs.constructed {
				return nil, malformed("authAttrs is primitive")
			}
			env.authAttrs, err = toDER(attrs.full)
			if err != nil {
				return nil, inField("authAttrs", err)
			}
			env.authAttrs[0] = 0x20 | asn1.TagSet
		}
		mac, ok := next(asn1.ClassUniversal, asn1.TagOctetString)
		if !ok {
			return nil, malformed("mac missing")
		}
		if err := unmarshalBER(mac.full, &env.mac, "mac"); err != nil {
			return nil, err
		}
		env.macElement = mac.full
		next(asn1.ClassContextSpecific, 2) // unauthAttrs
	} else {
		next(asn1.ClassContextSpecific, 1) // unprotectedAttrs
	}
	if len(fields) != 0 {
		return nil, malformed("unexpected %s after the encrypted content", fields[0].describe())
	}
	return env, nil
}

// parseEncryptedContentInfo reads EncryptedContentInfo, RFC 5652 section 6.1.
func parseEncryptedContentInfo(env *envelope, eci berElement) error {
	fields, err := berChildren(eci, 3)
	if err != nil {
		return err
	}
	if len(fields) < 2 || len(fields) > 3 {
		return malformed("encryptedContentInfo has %d fields, want 2 or 3", len(fields))
	}
	if err := unmarshalBER(fields[0].full, &env.contentType, "encrypted content type"); err != nil {
		return err
	}
	if err := unmarshalBER(fields[1].full, &env.algorithm, "content-encryption algorithm"); err != nil {
		return err
	}
	if len(fields) == 3 {
		if !fields[2].is(asn1.ClassContextSpecific, 0) {
			return malformed("encrypted content is %s, want [0]", fields[2].describe())
		}
		env.encrypted = fields[2]
		env.hasEncrypted = true
	}
	return nil
}

// contentAlgorithm is a parsed content-encryption AlgorithmIdentifier.
type contentAlgorithm struct {
	cipher ContentCipher
	iv     []byte // CBC IV or GCM nonce
	tagLen int    // GCM
}

// parseContentAlgorithm checks the content-encryption algorithm against the
// Direct profile and reads its parameters.
func parseContentAlgorithm(env *envelope) (contentAlgorithm, error) {
	oid := env.algorithm.Algorithm
	c := cipherByOID(oid)
	if c == 0 {
		// Not an Accept row of the profile's Ciphers: refused (3DES, DES,
		// RC2, RC4: AL-07) or not supported.
		return contentAlgorithm{}, unsupported(RoleContentEncryption, oid)
	}
	alg := contentAlgorithm{cipher: c}
	params := env.algorithm.Parameters.FullBytes
	if len(params) == 0 {
		return alg, malformed("%v without parameters", c)
	}
	if !c.authenticated() {
		if env.authenticated {
			return alg, malformed("AuthEnvelopedData with %v, which does not authenticate", c)
		}
		// RFC 3565 section 4.1: AES-IV ::= OCTET STRING (SIZE(16)).
		if err := unmarshalBER(params, &alg.iv, "AES-CBC IV"); err != nil {
			return alg, err
		}
		if len(alg.iv) != aes.BlockSize {
			return alg, malformed("AES-CBC IV of %d bytes", len(alg.iv))
		}
		return alg, nil
	}
	if !env.authenticated {
		return alg, malformed("EnvelopedData with %v has no place for the authentication tag", c)
	}
	// RFC 5084 section 3.2: GCMParameters, ICV length 12 to 16.
	var p gcmParameters
	if err := unmarshalBER(params, &p, "GCM parameters"); err != nil {
		return alg, err
	}
	if p.ICVLen < 12 || p.ICVLen > 16 {
		return alg, malformed("GCM tag length %d, want 12 to 16", p.ICVLen)
	}
	if len(p.Nonce) == 0 || len(p.Nonce) > 64 {
		return alg, malformed("GCM nonce of %d bytes", len(p.Nonce))
	}
	if len(p.Nonce) != gcmNonceSize && p.ICVLen != gcmTagSize {
		// crypto/cipher offers a non-default nonce size or tag size, not both.
		return alg, &UnsupportedAlgorithmError{Role: RoleContentEncryption, OID: oid,
			Name: fmt.Sprintf("%v with a %d-byte nonce and a %d-byte tag", c, len(p.Nonce), p.ICVLen)}
	}
	if len(env.mac) != p.ICVLen {
		return alg, malformed("mac of %d bytes, GCM parameters say %d", len(env.mac), p.ICVLen)
	}
	alg.iv, alg.tagLen = p.Nonce, p.ICVLen
	return alg, nil
}

// findRecipient returns the first key pair, in the order of keys, whose
// certificate a key transport RecipientInfo names, and that RecipientInfo.
func findRecipient(infos []berElement, keys []KeyPair) (*keyTransRecipientInfo, *KeyPair, error) {
	type ktri struct {
		ri  keyTransRecipientInfo
		ias *issuerAndSerialNumber // or
		ski []byte
	}
	var ktris []ktri
	for _, e := range infos {
		// RFC 5652 section 6.2: ktri is the only untagged choice; kari [1],
		// kekri [2], pwri [3] and ori [4] are skipped.
		if !e.is(asn1.ClassUniversal, asn1.TagSequence) {
			continue
		}
		var k ktri
		if err := unmarshalBER(e.full, &k.ri, "KeyTransRecipientInfo"); err != nil {
			return nil, nil, err
		}
		rid := k.ri.RID
		switch {
		case rid.Class == asn1.ClassUniversal && rid.Tag == asn1.TagSequence:
			k.ias = new(issuerAndSerialNumber)
			if err := unmarshalBER(rid.FullBytes, k.ias, "recipient issuerAndSerialNumber"); err != nil {
				return nil, nil, err
			}
		case rid.Class == asn1.ClassContextSpecific && rid.Tag == 0:
			k.ski = rid.Bytes
			if rid.IsCompound {
				e, _, err := parseBER(rid.FullBytes, 0)
				if err != nil {
					return nil, nil, err
				}
				if k.ski, err = joinSegments(e, asn1.TagOctetString, 0); err != nil {
					return nil, nil, inField("recipient subjectKeyIdentifier", err)
				}
			}
		default:
			return nil, nil, malformed("recipient identifier has tag %d of class %d", rid.Tag, rid.Class)
		}
		ktris = append(ktris, k)
	}

	for i := range keys {
		kp := &keys[i]
		if kp.Cert == nil {
			continue
		}
		var ski []byte
		for j := range ktris {
			k := &ktris[j]
			if k.ias != nil {
				// RFC 5652 section 6.2.1: the issuer's distinguished name
				// and serial number; names compared as encoded.
				if bytes.Equal(k.ias.Issuer.FullBytes, kp.Cert.RawIssuer) && k.ias.SerialNumber != nil &&
					kp.Cert.SerialNumber != nil && k.ias.SerialNumber.Cmp(kp.Cert.SerialNumber) == 0 {
					return &k.ri, kp, nil
				}
				continue
			}
			if ski == nil {
				ski = subjectKeyID(kp.Cert)
			}
			if len(k.ski) > 0 && bytes.Equal(k.ski, ski) {
				return &k.ri, kp, nil
			}
		}
	}
	return nil, nil, fmt.Errorf("%w (key transport recipients in the message: %d; our certificates: %d)", ErrNoMatchingRecipient, len(ktris), len(keys))
}

// subjectKeyID is the certificate's subject key identifier, or when it has
// none the SHA-1 of its public key (RFC 5280 section 4.2.1.2, method 1), as
// some senders compute it.
func subjectKeyID(cert *x509.Certificate) []byte {
	if len(cert.SubjectKeyId) > 0 {
		return cert.SubjectKeyId
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return []byte{}
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:]
}

// decrypterFor checks a matching local key: an RSA decrypter of at least
// MinRSABits bits, belonging to its certificate.
func decrypterFor(kp *KeyPair) (crypto.Decrypter, error) {
	who := kp.Cert.Subject.String()
	dec, ok := kp.Key.(crypto.Decrypter)
	if !ok {
		return nil, fmt.Errorf("cms: the key of our certificate %q (%T) cannot decrypt", who, kp.Key)
	}
	// The profile's key rules apply to our own keys too (AL-10).
	if _, _, err := directprofile.CheckKey(dec.Public(), directprofile.Encryption); err != nil {
		var ke *directprofile.KeyError
		if errors.As(err, &ke) && ke.Weak {
			return nil, fmt.Errorf("%w: our certificate %q has %v", ErrWeakKey, who, err)
		}
		return nil, fmt.Errorf("%w (the key of our certificate %q is not an RSA key)",
			&UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: spkiAlgorithm(kp.Cert), Name: fmt.Sprintf("%T", dec.Public())}, who)
	}
	pub, ok := dec.Public().(*rsa.PublicKey) // the only key type the profile encrypts to
	if certPub, certOK := kp.Cert.PublicKey.(*rsa.PublicKey); !ok || !certOK || !certPub.Equal(pub) {
		return nil, fmt.Errorf("cms: the private key does not belong to our certificate %q", who)
	}
	return dec, nil
}

// parseKeyTransport reads a KeyEncryptionAlgorithmIdentifier: rsaEncryption
// (RFC 8017 appendix A.2.1, PKCS #1 v1.5) or id-RSAES-OAEP (RFC 4055
// section 4.1). opts is nil for PKCS #1 v1.5.
func parseKeyTransport(alg pkix.AlgorithmIdentifier) (KeyTransport, *rsa.OAEPOptions, error) {
	switch {
	case !directprofile.IsKeyTransportOID(alg.Algorithm):
		return 0, nil, unsupported(RoleKeyTransport, alg.Algorithm)
	case !alg.Algorithm.Equal(oidRSAESOAEP):
		// rsaEncryption: parameters are NULL; absent is tolerated.
		row, _ := directprofile.KeyTransportFor(alg.Algorithm, 0, 0)
		if row.Verdict != directprofile.Accept {
			return 0, nil, unsupported(RoleKeyTransport, alg.Algorithm)
		}
		return keyTransportByRow(row), nil, nil
	}

	// Absent parameters, NULL and an empty SEQUENCE all mean the defaults:
	// SHA-1, MGF1 with SHA-1, empty label.
	var p rsaesOAEPParams
	if raw := alg.Parameters.FullBytes; len(raw) > 0 && !bytes.Equal(raw, asn1.NullBytes) {
		if err := unmarshalBER(raw, &p, "RSAES-OAEP parameters"); err != nil {
			return 0, nil, err
		}
	}
	opts := &rsa.OAEPOptions{Hash: crypto.SHA1, MGFHash: crypto.SHA1}
	var ok bool
	if p.HashFunc.Algorithm != nil {
		if opts.Hash, ok = hashByOID(p.HashFunc.Algorithm); !ok {
			return 0, nil, &UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: oidRSAESOAEP,
				Name: fmt.Sprintf("RSAES-OAEP with hash %s", p.HashFunc.Algorithm)}
		}
	}
	if p.MaskGenFunc.Algorithm != nil {
		if !p.MaskGenFunc.Algorithm.Equal(oidMGF1) {
			return 0, nil, &UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: oidRSAESOAEP,
				Name: fmt.Sprintf("RSAES-OAEP with mask generation %s", p.MaskGenFunc.Algorithm)}
		}
		var h pkix.AlgorithmIdentifier
		if err := unmarshalBER(p.MaskGenFunc.Parameters.FullBytes, &h, "MGF1 hash"); err != nil {
			return 0, nil, err
		}
		if opts.MGFHash, ok = hashByOID(h.Algorithm); !ok {
			return 0, nil, &UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: oidRSAESOAEP,
				Name: fmt.Sprintf("RSAES-OAEP with MGF1 hash %s", h.Algorithm)}
		}
	}
	if p.PSourceFunc.Algorithm != nil {
		if !p.PSourceFunc.Algorithm.Equal(oidPSpecified) {
			return 0, nil, &UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: oidRSAESOAEP,
				Name: fmt.Sprintf("RSAES-OAEP with label source %s", p.PSourceFunc.Algorithm)}
		}
		if raw := p.PSourceFunc.Parameters.FullBytes; len(raw) > 0 {
			if err := unmarshalBER(raw, &opts.Label, "OAEP label"); err != nil {
				return 0, nil, err
			}
		}
	}

	// The Direct profile's OAEP variants (directprofile.KeyTransports).
	if row, ok := directprofile.KeyTransportFor(oidRSAESOAEP, opts.Hash, opts.MGFHash); ok && row.Verdict == directprofile.Accept {
		return keyTransportByRow(row), opts, nil
	}
	return 0, nil, &UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: oidRSAESOAEP,
		Name: fmt.Sprintf("RSAES-OAEP with %v and MGF1-%v", opts.Hash, opts.MGFHash)}
}

// decryptKey recovers the content-encryption key of keySize bytes.
func decryptKey(dec crypto.Decrypter, encryptedKey []byte, keySize int, opts *rsa.OAEPOptions) ([]byte, error) {
	if opts == nil {
		// PKCS #1 v1.5: on bad padding the decrypter returns a random key
		// of the right size instead of an error, in constant time, so the
		// failure shows only as a padding or tag error on the content
		// (RFC 3218 section 2.3.2).
		//lint:ignore SA1019 Direct requires accepting RSA PKCS #1 v1.5 key transport for interop (AL-08); the implicit-rejection option keeps it constant-time.
		cek, err := dec.Decrypt(rand.Reader, encryptedKey, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: keySize})
		if err != nil {
			return nil, fmt.Errorf("%w: key transport: %v", ErrDecryptionFailed, err)
		}
		if len(cek) != keySize {
			return nil, fmt.Errorf("%w: key transport returned %d bytes, want %d", ErrDecryptionFailed, len(cek), keySize)
		}
		return cek, nil
	}
	cek, err := dec.Decrypt(rand.Reader, encryptedKey, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: RSAES-OAEP key transport: %v", ErrDecryptionFailed, err)
	}
	if len(cek) != keySize {
		return nil, fmt.Errorf("%w: the content-encryption key has %d bytes, want %d", ErrDecryptionFailed, len(cek), keySize)
	}
	return cek, nil
}

// openCBC decrypts AES-CBC content in place and removes the PKCS #7 padding
// (RFC 5652 section 6.3).
func openCBC(ct, cek, iv []byte) ([]byte, error) {
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, malformed("AES-CBC content of %d bytes is not a positive multiple of the block size", len(ct))
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(ct, ct)

	// Check the padding in constant time, so that timing does not tell
	// one kind of failure from another.
	last := ct[len(ct)-aes.BlockSize:]
	pad := int(last[aes.BlockSize-1])
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	for i := range aes.BlockSize {
		inPad := subtle.ConstantTimeLessOrEq(i+1, pad)
		match := subtle.ConstantTimeByteEq(last[aes.BlockSize-1-i], byte(pad))
		good &= match | (inPad ^ 1)
	}
	if good != 1 {
		return nil, fmt.Errorf("%w: invalid content padding (wrong key or damaged message)", ErrDecryptionFailed)
	}
	return ct[:len(ct)-pad], nil
}

// openGCM decrypts AES-GCM content in place. The tag is in the mac field
// after the ciphertext; AEAD.Open wants it right after the ciphertext, so it
// is copied there, over bytes already parsed (the ciphertext's own header
// bytes, end-of-contents octets, authAttrs and the mac's header).
func openGCM(der, ct, cek []byte, alg contentAlgorithm, env *envelope) ([]byte, error) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	aead, err := cipherGCM(block, len(alg.iv), alg.tagLen)
	if err != nil {
		return nil, err
	}
	var tag [gcmTagSize]byte
	n := copy(tag[:], env.mac)

	// offset is the position of a slice of der within der: every slice
	// taken while parsing keeps der's capacity to its end.
	offset := func(s []byte) int { return cap(der) - cap(s) }
	var sealed []byte
	if end := offset(ct) + len(ct) + n; end <= offset(env.macElement)+len(env.macElement) {
		sealed = der[offset(ct):end]
	} else {
		// Not expected with the layout of RFC 5083; copy rather than
		// overwrite what is still needed.
		sealed = make([]byte, len(ct)+n)
		copy(sealed, ct)
	}
	copy(sealed[len(ct):], tag[:n])
	content, err := aead.Open(sealed[:0], alg.iv, sealed, env.authAttrs)
	if err != nil {
		return nil, fmt.Errorf("%w: the GCM authentication tag does not match (wrong key or damaged message)", ErrDecryptionFailed)
	}
	return content, nil
}
