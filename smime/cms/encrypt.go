package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"

	"github.com/hisp-project/hisp/smime/directprofile"
)

// ASN.1 structures of RFC 5652 section 6.2 and RFC 4055 section 4.1.

// issuerAndSerialNumber is RFC 5652 section 10.2.4.
type issuerAndSerialNumber struct {
	Issuer       asn1.RawValue
	SerialNumber *big.Int
}

// keyTransRecipientInfo is RFC 5652 section 6.2.1.
type keyTransRecipientInfo struct {
	Version                int
	RID                    asn1.RawValue // issuerAndSerialNumber or [0] subjectKeyIdentifier
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

// rsaesOAEPParams is RFC 4055 section 4.1 (RFC 8017 appendix A.2.1). Absent
// fields take the SHA-1, MGF1-SHA-1 and empty-label defaults.
type rsaesOAEPParams struct {
	HashFunc    pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:0"`
	MaskGenFunc pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:1"`
	PSourceFunc pkix.AlgorithmIdentifier `asn1:"optional,explicit,tag:2"`
}

// gcmParameters is RFC 5084 section 3.2.
type gcmParameters struct {
	Nonce  []byte
	ICVLen int `asn1:"optional,default:12"`
}

const (
	gcmNonceSize = 12 // RFC 5084 section 3.2: RECOMMENDED
	gcmTagSize   = 16 // the largest; RFC 5084 section 3.2 allows 12 to 16
)

// Encrypt returns a DER-encoded ContentInfo: EnvelopedData for CBC ciphers, AuthEnvelopedData for GCM.
// rand is the entropy source (crypto/rand.Reader in production).
//
// alg is the content cipher (AES128CBC unless configured otherwise). A fresh
// content-encryption key is transported to every recipient with its
// KeyTransport. Recipients' keys must be ones the profile encrypts to: RSA
// of at least MinRSABits bits (ErrWeakKey otherwise); key usage and trust
// are the caller's business.
// The inner content type is id-data.
func Encrypt(rand io.Reader, content []byte, alg ContentCipher, recipients []Recipient) ([]byte, error) {
	cipherOID := alg.oid()
	if cipherOID == nil {
		return nil, &UnsupportedAlgorithmError{Role: RoleContentEncryption, Name: alg.String()}
	}
	if len(recipients) == 0 {
		return nil, errors.New("cms: no recipients to encrypt to")
	}

	cek := make([]byte, alg.keySize())
	if _, err := io.ReadFull(rand, cek); err != nil {
		return nil, fmt.Errorf("cms: making the content-encryption key: %w", err)
	}

	// RecipientInfos, a SET OF in DER order (X.690 section 11.6).
	var infos [][]byte
	version := 0 // RFC 5652 section 6.1: 0 when every RecipientInfo is version 0, else 2.
	for _, r := range recipients {
		ri, riVersion, err := keyTransRecipient(rand, cek, r)
		if err != nil {
			return nil, err
		}
		if riVersion != 0 {
			version = 2
		}
		infos = append(infos, ri)
	}
	slices.SortFunc(infos, bytes.Compare)
	riLen := 0
	for _, ri := range infos {
		riLen += len(ri)
	}

	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	var (
		params      []byte
		iv          []byte
		aead        cipher.AEAD
		contentType = oidEnvelopedData
		ctLen       int
	)
	if alg.authenticated() {
		// AuthEnvelopedData, RFC 5083 section 2.1, with AES-GCM, RFC 5084
		// section 3.2: 12-byte nonce, 16-byte tag in the mac field.
		contentType = oidAuthEnvelopedData
		version = 0
		iv = make([]byte, gcmNonceSize)
		if _, err := io.ReadFull(rand, iv); err != nil {
			return nil, fmt.Errorf("cms: making the GCM nonce: %w", err)
		}
		aead, err = cipherGCM(block, gcmNonceSize, gcmTagSize)
		if err != nil {
			return nil, err
		}
		params, err = asn1.Marshal(gcmParameters{Nonce: iv, ICVLen: gcmTagSize})
		ctLen = len(content)
	} else {
		// AES-CBC, RFC 3565 section 4.1: the parameter is the 16-byte IV;
		// PKCS #7 padding, RFC 5652 section 6.3.
		iv = make([]byte, aes.BlockSize)
		if _, err := io.ReadFull(rand, iv); err != nil {
			return nil, fmt.Errorf("cms: making the CBC IV: %w", err)
		}
		params, err = asn1.Marshal(iv)
		ctLen = (len(content)/aes.BlockSize + 1) * aes.BlockSize
	}
	if err != nil {
		return nil, fmt.Errorf("cms: encoding content-encryption parameters: %w", err)
	}
	algDER, err := asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: cipherOID, Parameters: asn1.RawValue{FullBytes: params}})
	if err != nil {
		return nil, fmt.Errorf("cms: encoding the content-encryption algorithm: %w", err)
	}
	dataOID, _ := asn1.Marshal(oidData)
	outerOID, _ := asn1.Marshal(contentType)

	// The output is written once, into a buffer of the exact size, and the
	// content is encrypted in place there. Sizes first:
	eciLen := len(dataOID) + len(algDER) + derHeaderLen(ctLen) + ctLen
	envLen := 3 + derHeaderLen(riLen) + riLen + derHeaderLen(eciLen) + eciLen
	if aead != nil {
		envLen += 2 + gcmTagSize
	}
	explicitLen := derHeaderLen(envLen) + envLen
	ciLen := len(outerOID) + derHeaderLen(explicitLen) + explicitLen
	total := derHeaderLen(ciLen) + ciLen

	out := make([]byte, 0, total)
	// ContentInfo, RFC 5652 section 3.
	out = appendDERHeader(out, asn1.ClassUniversal, asn1.TagSequence, true, ciLen)
	out = append(out, outerOID...)
	out = appendDERHeader(out, asn1.ClassContextSpecific, 0, true, explicitLen)
	// EnvelopedData (RFC 5652 section 6.1) or AuthEnvelopedData (RFC 5083
	// section 2.1); neither originatorInfo nor attributes.
	out = appendDERHeader(out, asn1.ClassUniversal, asn1.TagSequence, true, envLen)
	out = append(out, asn1.TagInteger, 1, byte(version))
	out = appendDERHeader(out, asn1.ClassUniversal, asn1.TagSet, true, riLen)
	for _, ri := range infos {
		out = append(out, ri...)
	}
	// EncryptedContentInfo, RFC 5652 section 6.1.
	out = appendDERHeader(out, asn1.ClassUniversal, asn1.TagSequence, true, eciLen)
	out = append(out, dataOID...)
	out = append(out, algDER...)
	out = appendDERHeader(out, asn1.ClassContextSpecific, 0, false, ctLen) // encryptedContent [0] IMPLICIT
	start := len(out)
	if aead != nil {
		sealed := aead.Seal(out[start:start], iv, content, nil)
		var tag [gcmTagSize]byte
		copy(tag[:], sealed[ctLen:])
		out = out[:start+ctLen]
		out = append(out, asn1.TagOctetString, gcmTagSize) // mac
		out = append(out, tag[:]...)
	} else {
		out = append(out, content...)
		pad := byte(ctLen - len(content))
		for range pad {
			out = append(out, pad)
		}
		cbc := cipher.NewCBCEncrypter(block, iv)
		cbc.CryptBlocks(out[start:start+ctLen], out[start:start+ctLen])
	}
	if len(out) != total {
		return nil, fmt.Errorf("cms: internal error: encoded %d bytes, computed %d", len(out), total)
	}
	return out, nil
}

// cipherGCM returns AES-GCM with the given nonce and tag sizes.
func cipherGCM(block cipher.Block, nonceSize, tagSize int) (cipher.AEAD, error) {
	var aead cipher.AEAD
	var err error
	switch {
	case nonceSize == gcmNonceSize:
		aead, err = cipher.NewGCMWithTagSize(block, tagSize)
	case tagSize == gcmTagSize:
		aead, err = cipher.NewGCMWithNonceSize(block, nonceSize)
	default:
		return nil, fmt.Errorf("%w: AES-GCM with a %d-byte nonce and a %d-byte tag", ErrUnsupportedAlgorithm, nonceSize, tagSize)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: AES-GCM: %w", err)
	}
	return aead, nil
}

// keyTransRecipient returns the DER of the KeyTransRecipientInfo that carries
// cek to r, and its version.
func keyTransRecipient(rand io.Reader, cek []byte, r Recipient) ([]byte, int, error) {
	if r.Cert == nil {
		return nil, 0, errors.New("cms: recipient without a certificate")
	}
	who := r.Cert.Subject.String()
	if _, _, err := directprofile.CheckCertKey(r.Cert, directprofile.Encryption); err != nil {
		var ke *directprofile.KeyError
		if errors.As(err, &ke) && ke.Weak {
			return nil, 0, fmt.Errorf("%w: recipient %q has %v", ErrWeakKey, who, err)
		}
		return nil, 0, fmt.Errorf("%w (recipient %q: only RSA keys can receive the content-encryption key)",
			&UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: spkiAlgorithm(r.Cert), Name: r.Cert.PublicKeyAlgorithm.String()}, who)
	}
	pub, ok := r.Cert.PublicKey.(*rsa.PublicKey) // the only key type the profile encrypts to
	if !ok {
		return nil, 0, fmt.Errorf("%w (recipient %q: only RSA keys can receive the content-encryption key)",
			&UnsupportedAlgorithmError{Role: RoleKeyTransport, OID: spkiAlgorithm(r.Cert), Name: r.Cert.PublicKeyAlgorithm.String()}, who)
	}

	kt := r.KeyTransport
	if kt == 0 {
		kt = DefaultKeyTransport
	}
	var (
		alg pkix.AlgorithmIdentifier
		ek  []byte
		err error
	)
	// The profile's KeyTransports: what hisp may send (AL-08, AL-09).
	if row, ok := keyTransportRow(kt); ok && row.Send == directprofile.Never {
		return nil, 0, fmt.Errorf("%w: key transport %v is accepted on decryption only (recipient %q)", ErrUnsupportedAlgorithm, kt, who)
	}
	switch kt {
	case RSAPKCS1v15:
		alg = pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1.NullRawValue}
		//lint:ignore SA1019 Direct partners that cannot open RSA-OAEP get RSA PKCS #1 v1.5 key transport when configured for it (AL-08).
		ek, err = rsa.EncryptPKCS1v15(rand, pub, cek)
	case RSAOAEPSHA1:
		// All defaults: the DER of RSAES-OAEP-params is an empty SEQUENCE
		// (RFC 4055 section 4.1, X.690 section 11.5).
		alg = pkix.AlgorithmIdentifier{Algorithm: oidRSAESOAEP, Parameters: asn1.RawValue{FullBytes: []byte{0x30, 0}}}
		ek, err = rsa.EncryptOAEP(sha1.New(), rand, pub, cek, nil)
	case RSAOAEPSHA256:
		alg, err = oaepSHA256Identifier()
		if err == nil {
			ek, err = rsa.EncryptOAEP(sha256.New(), rand, pub, cek, nil)
		}
	default:
		return nil, 0, fmt.Errorf("%w (recipient %q)", &UnsupportedAlgorithmError{Role: RoleKeyTransport, Name: kt.String()}, who)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cms: encrypting the content-encryption key to %q: %w", who, err)
	}

	ri := keyTransRecipientInfo{KeyEncryptionAlgorithm: alg, EncryptedKey: ek}
	if r.UseSKI {
		// RFC 5652 section 6.2.1: version 2 with subjectKeyIdentifier.
		if len(r.Cert.SubjectKeyId) == 0 {
			return nil, 0, fmt.Errorf("cms: recipient %q: the certificate has no subject key identifier", who)
		}
		ri.Version = 2
		ri.RID = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: r.Cert.SubjectKeyId}
	} else {
		ias, err := asn1.Marshal(issuerAndSerialNumber{Issuer: asn1.RawValue{FullBytes: r.Cert.RawIssuer}, SerialNumber: r.Cert.SerialNumber})
		if err != nil {
			return nil, 0, fmt.Errorf("cms: recipient %q: encoding issuer and serial number: %w", who, err)
		}
		ri.RID = asn1.RawValue{FullBytes: ias}
	}
	der, err := asn1.Marshal(ri)
	if err != nil {
		return nil, 0, fmt.Errorf("cms: recipient %q: encoding the recipient info: %w", who, err)
	}
	return der, ri.Version, nil
}

// oaepSHA256Identifier is id-RSAES-OAEP with SHA-256 and MGF1-SHA-256 and the
// default empty label (RFC 4055 section 4.1). The hash identifiers carry NULL
// parameters as RFC 4055 section 2.1 asks.
func oaepSHA256Identifier() (pkix.AlgorithmIdentifier, error) {
	sha := pkix.AlgorithmIdentifier{Algorithm: oidSHA256, Parameters: asn1.NullRawValue}
	shaDER, err := asn1.Marshal(sha)
	if err != nil {
		return pkix.AlgorithmIdentifier{}, err
	}
	params, err := asn1.Marshal(rsaesOAEPParams{
		HashFunc:    sha,
		MaskGenFunc: pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: shaDER}},
	})
	if err != nil {
		return pkix.AlgorithmIdentifier{}, err
	}
	return pkix.AlgorithmIdentifier{Algorithm: oidRSAESOAEP, Parameters: asn1.RawValue{FullBytes: params}}, nil
}

// spkiAlgorithm returns the algorithm OID of the certificate's public key, or nil.
func spkiAlgorithm(cert *x509.Certificate) asn1.ObjectIdentifier {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	return spki.Algorithm.Algorithm
}
