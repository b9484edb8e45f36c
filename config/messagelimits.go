package config

import (
	"fmt"
	"strconv"
	"strings"
)

// MessageLimits are the [limits] keys on message and mailbox sizes (the
// connection limits of the same table are in Limits).
type MessageLimits struct {
	// MessageSize is the largest message the backbone accepts, and the
	// size a sealed message must fit in at a partner: submission accepts
	// a plain message only as large as seals within it (about
	// MessageSize/1.369, see smime.MaxPlainSize). Default 64MB.
	MessageSize Size `toml:"message_size"`
	// MailboxQuota is the quota of every address without one of its own
	// (`hisp address quota`): mail for it over the quota is refused with
	// a failed MDN, an IMAP APPEND with NO [OVERQUOTA]. Default 1GB; 0 =
	// no limit.
	MailboxQuota Size `toml:"mailbox_quota"`
}

// Defaults of MessageLimits.
const (
	DefaultMessageSize  = 64 << 20
	DefaultMailboxQuota = 1 << 30
)

// Size is a byte count, written as an integer or as a string with a unit:
// "500KB", "64MB", "1GB" (powers of 1024).
type Size int64

// UnmarshalTOML reads an integer or a string with a unit.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("size %d: negative", v)
		}
		*s = Size(v)
		return nil
	case string:
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*s = Size(n)
		return nil
	}
	return fmt.Errorf("size %v: want bytes or a string such as \"64MB\"", v)
}

// MarshalText writes the size in bytes.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(s), 10)), nil }

// ParseSize reads a size in bytes, or with a unit KB, MB, GB (powers of
// 1024; K, M, G and B alone too).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want bytes, or a number with KB, MB or GB", s)
	}
	return n * mult, nil
}

// validate checks the message limits.
func (m MessageLimits) validate() []error {
	var errs []error
	if m.MessageSize < 1<<20 || m.MessageSize > 1<<30 {
		errs = append(errs, fmt.Errorf("limits.message_size = %d: want 1MB to 1GB", m.MessageSize))
	}
	if m.MailboxQuota < 0 {
		errs = append(errs, fmt.Errorf("limits.mailbox_quota = %d: want 0 (no limit) or more", m.MailboxQuota))
	}
	return errs
}
