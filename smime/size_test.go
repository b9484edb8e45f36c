package smime

import (
	"testing"

	"github.com/hisp-project/hisp/smime/cms"
)

// TestSealGrowth measures how much Seal grows messages of 10 KB to 10 MB
// and checks that MaxPlainSize keeps every sealed form within its limit
// (the figures in size.go come from its log).
func TestSealGrowth(t *testing.T) {
	p := getPKI(t)
	signer := Signer{Cert: p.rsaSigner.Cert, Key: p.rsaSigner.Key}
	recips := []cms.Recipient{{Cert: p.r1.Cert}, {Cert: p.r2.Cert}}
	sizes := []int{10 << 10, 100 << 10, 1 << 20, 10 << 20}
	if testing.Short() {
		sizes = sizes[:3]
	}
	for _, size := range sizes {
		for _, n := range []int{1, 2} {
			msg := benchMessage(size)
			sealed, err := Seal(msg, signer, recips[:n], SealOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f := float64(len(sealed)) / float64(len(msg))
			t.Logf("plain %d, %d recipient(s): sealed %d, factor %.3f, fixed part %d", len(msg), n, len(sealed), f,
				len(sealed)-len(msg)*SealGrowthPermille/1000)
			if bound := int64(len(msg))*SealGrowthPermille/1000 + SealOverhead + int64(n)*SealPerRecipient; int64(len(sealed)) > bound {
				t.Errorf("plain %d sealed to %d bytes, over the bound %d", len(msg), len(sealed), bound)
			}
			// The largest plain size for exactly this sealed size does
			// not exceed the message: the budget errs on the safe side.
			if max := MaxPlainSize(int64(len(sealed)), n); max > int64(len(msg)) {
				t.Errorf("MaxPlainSize(%d) = %d, more than the %d bytes that sealed to it", len(sealed), max, len(msg))
			}
		}
	}
	if got := MaxPlainSize(1000, 1); got != 0 {
		t.Errorf("MaxPlainSize of a limit below the overhead: %d", got)
	}
}
