package certs

import (
	"encoding/base64"
	"encoding/binary"
	"net/url"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// certRData builds the RDATA of a CERT record.
func certRData(typ uint16, keyTag uint16, alg uint8, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, keyTag)
	b = append(b, alg)
	return append(b, data...)
}

// unpackCERT decodes rdata as the RDATA of a CERT record at x.example the way
// it arrives in a DNS message.
func unpackCERT(rdata []byte) (*dns.CERT, error) {
	if len(rdata) > 0xffff {
		rdata = rdata[:0xffff]
	}
	wire := []byte("\x01x\x07example\x00")
	wire = binary.BigEndian.AppendUint16(wire, dns.TypeCERT)
	wire = binary.BigEndian.AppendUint16(wire, dns.ClassINET)
	wire = binary.BigEndian.AppendUint32(wire, 300)
	wire = binary.BigEndian.AppendUint16(wire, uint16(len(rdata)))
	wire = append(wire, rdata...)
	rr, _, err := dns.UnpackRR(wire, 0)
	if err != nil {
		return nil, err
	}
	c, ok := rr.(*dns.CERT)
	if !ok {
		return nil, nil
	}
	return c, nil
}

func TestParseCERT(t *testing.T) {
	pki := newTestPKI(t)
	leaf := pki.leaf(t, leafOpts{email: "a@cert.test"})
	for _, tc := range []struct {
		name    string
		rdata   []byte
		wantURL string
		cert    bool
		errHas  string
	}{
		{"PKIX", certRData(dns.CertPKIX, 0, 0, leaf.Raw), "", true, ""},
		{"PKIX with key tag and algorithm", certRData(dns.CertPKIX, 4711, 8, leaf.Raw), "", true, ""},
		{"PKIX garbage", certRData(dns.CertPKIX, 0, 0, []byte("junk")), "", false, "CERT PKIX at x.example."},
		{"PKIX empty", certRData(dns.CertPKIX, 0, 0, nil), "", false, "CERT PKIX"},
		{"IPKIX", certRData(certIPKIX, 0, 0, []byte("http://certs.example/bob.der")), "http://certs.example/bob.der", false, ""},
		{"IPKIX https", certRData(certIPKIX, 0, 0, []byte("https://certs.example:8443/b?x=1")), "https://certs.example:8443/b?x=1", false, ""},
		{"IPKIX ftp", certRData(certIPKIX, 0, 0, []byte("ftp://certs.example/bob.der")), "", false, "only http and https"},
		{"IPKIX relative", certRData(certIPKIX, 0, 0, []byte("/bob.der")), "", false, "only http and https"},
		{"IPKIX userinfo", certRData(certIPKIX, 0, 0, []byte("http://u:p@certs.example/")), "", false, "only http and https"},
		{"IPKIX space", certRData(certIPKIX, 0, 0, []byte("http://certs.example/a b")), "", false, "control, space"},
		{"IPKIX empty", certRData(certIPKIX, 0, 0, nil), "", false, "bad URL length"},
		{"PGP", certRData(dns.CertPGP, 0, 0, []byte("x")), "", false, "skipped CERT type PGP"},
		{"unknown type", certRData(65000, 0, 0, []byte("x")), "", false, "skipped CERT type 65000"},
	} {
		rr, err := unpackCERT(tc.rdata)
		if err != nil {
			t.Errorf("%s: unpack: %v", tc.name, err)
			continue
		}
		cert, u, err := parseCERT(rr)
		switch {
		case tc.errHas != "":
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.errHas)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.cert && (cert == nil || !cert.Equal(leaf)):
			t.Errorf("%s: certificate not parsed", tc.name)
		case u != tc.wantURL:
			t.Errorf("%s: URL %q, want %q", tc.name, u, tc.wantURL)
		}
	}
}

// FuzzParseCERT feeds arbitrary CERT RDATA through the DNS unpacker and the
// record parser: neither may panic, and a result is exactly one of a
// certificate, a checked http(s) URL, or an error.
func FuzzParseCERT(f *testing.F) {
	pki := newTestPKI(f)
	leaf := pki.leaf(f, leafOpts{email: "a@fuzz.test"})
	f.Add(certRData(dns.CertPKIX, 0, 0, leaf.Raw))
	f.Add(certRData(dns.CertPKIX, 1, 5, leaf.Raw[:len(leaf.Raw)/2]))
	f.Add(certRData(certIPKIX, 0, 0, []byte("http://certs.example/bob.der")))
	f.Add(certRData(certIPKIX, 0, 0, []byte("https://[::1]:8443/x?y=z#f")))
	f.Add(certRData(certIPKIX, 0, 0, []byte("http://%41:80/")))
	f.Add(certRData(dns.CertPGP, 0, 0, []byte("pgp")))
	f.Add(certRData(dns.CertURI, 0, 0, []byte("http://certs.example/")))
	f.Add([]byte{0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, rdata []byte) {
		rr, err := unpackCERT(rdata)
		if err != nil || rr == nil {
			return
		}
		cert, u, err := parseCERT(rr)
		n := 0
		if cert != nil {
			n++
		}
		if u != "" {
			n++
		}
		if err != nil {
			n++
		}
		if n != 1 {
			t.Fatalf("cert %v, url %q, err %v: want exactly one", cert != nil, u, err)
		}
		if cert != nil && rr.Type != dns.CertPKIX {
			t.Fatalf("certificate from CERT type %d", rr.Type)
		}
		if u != "" {
			if rr.Type != certIPKIX {
				t.Fatalf("URL from CERT type %d", rr.Type)
			}
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				t.Fatalf("accepted URL %q: %v", u, err)
			}
			raw, _ := base64.StdEncoding.DecodeString(rr.Certificate)
			if string(raw) != u {
				t.Fatalf("URL %q is not the record's %q", u, raw)
			}
		}
	})
}
