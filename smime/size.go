package smime

// Sealing grows a message. The signed entity (message/rfc822 wrapper,
// multipart/signed, base64 signature with the signer's chain) is encrypted
// and the ciphertext goes out in base64 lines of 76 characters plus CRLF:
// 4/3 × 78/76 = 1.3684 of the plain size, plus a fixed part (signature,
// certificates, one RecipientInfo per certificate, routing header).
//
// Measured with Seal (RSA-2048 signer with a chain of one, SHA-256,
// AES-128-CBC, one recipient of RSA-2048; TestSealGrowth logs it):
//
//	plain         sealed        factor
//	10,289        18,405        1.789 (the fixed part, ~4.3 KB, dominates)
//	102,407       144,461       1.411
//	1,048,625     1,439,293     1.373
//	10,485,767    14,353,269    1.369
//
// A second recipient (RSA-3072) adds 700 bytes. So a sealed message stays
// within SealGrowthPermille/1000 × plain + SealOverhead + SealPerRecipient
// × recipient certificates.
const (
	// SealGrowthPermille is the asymptotic growth, in thousandths,
	// rounded up: 1.369.
	SealGrowthPermille = 1369
	// SealOverhead bounds the fixed part for one signer with a chain of a
	// few certificates (measured: 4.3 KB for a chain of one).
	SealOverhead = 16 << 10
	// SealPerRecipient bounds what each recipient certificate adds (a
	// RecipientInfo with a 4096-bit RSA key: about 0.8 KB after base64).
	SealPerRecipient = 1 << 10
)

// MaxPlainSize returns the largest plain message whose sealed form, for up
// to recipients certificates, fits in sealedLimit bytes; 0 if none does.
// Submission uses it so that what it accepts fits the backbone's (and a
// partner's) size limit once sealed.
func MaxPlainSize(sealedLimit int64, recipients int) int64 {
	room := sealedLimit - SealOverhead - int64(recipients)*SealPerRecipient
	if room <= 0 {
		return 0
	}
	return room / SealGrowthPermille * 1000
}
