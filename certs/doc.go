// Package certs finds, holds and publishes the X.509 certificates of Direct
// addresses.
//
// Discovery (Discoverer) finds the encryption certificates of a remote Direct
// address the way the Direct Applicability Statement and the ONC Direct
// Certificate Discovery Tool (DCDT) define it (CD-01):
//
//  1. DNS CERT, address-bound: bob@b.example at bob.b.example.
//  2. DNS CERT, domain-bound: b.example.
//  3. LDAP, address-bound: servers from SRV _ldap._tcp.b.example, base DNs from
//     the RootDSE namingContexts, entries with mail=bob@b.example.
//  4. LDAP, domain-bound: as 3, with mail=b.example.
//
// Every certificate a step finds is judged by a caller-supplied ValidateFunc
// (path validation and revocation live in package trust; this package does not
// import it). The first step that finds any certificate decides: if some of its
// certificates are trusted, all of those are the result (encrypt to each); if
// none is trusted, discovery stops there with no certificate and does not fall
// back to later steps (the stop rule, CD-08).
//
// DNS answers are cached by their TTL, LDAP answers for a short fixed time and
// empty answers for DiscoveryOptions.NegativeTTL. DiscoverKeyed also caches the
// whole verdict per address and caller key, so a cached recipient costs a map
// look-up.
//
// Publishing (Publisher) is a small authoritative DNS server for the local
// domains: it answers CERT queries (PKIX, CD-10) with the certificates a
// CertSource names, plus SOA and NS at each zone apex, over UDP and TCP.
package certs
