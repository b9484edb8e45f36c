package gateway

import "crypto/tls"

// aeadOnly restricts a server TLS configuration to TLS 1.2 and 1.3 with
// forward-secret AEAD suites: ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305. Go's TLS 1.2 defaults still include the CBC-SHA1
// suites (Lucky13-style padding oracles, SHA-1 MACs); every client hisp
// serves (mail clients, EHRs, other HISPs, browsers) has offered a GCM suite
// for a decade. TLS 1.3 suites are not configurable and all AEAD.
func aeadOnly(c *tls.Config) *tls.Config {
	c.MinVersion = tls.VersionTLS12
	c.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	return c
}
