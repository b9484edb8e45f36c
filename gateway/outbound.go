package gateway

import (
	"fmt"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smtp"
)

// outboundRoutes turns [outbound] routes and tls into the deliverer's
// static routes and the policy of MX deliveries.
func outboundRoutes(o config.Outbound) (map[string]smtp.Route, smtp.TLSPolicy, error) {
	def, err := smtp.ParseTLSPolicy(o.TLS)
	if err != nil {
		return nil, 0, fmt.Errorf("outbound.tls: %w", err)
	}
	m := make(map[string]smtp.Route, len(o.Routes))
	for d, r := range o.Routes {
		p := def
		if r.TLS != "" {
			if p, err = smtp.ParseTLSPolicy(r.TLS); err != nil {
				return nil, 0, fmt.Errorf("outbound.routes.%s.tls: %w", d, err)
			}
		}
		m[d] = smtp.Route{Addr: r.Addr, TLS: p}
	}
	routes, err := smtp.ParseRoutes(m)
	return routes, def, err
}

// messageSizes returns the size limits of the backbone and of submission
// from [limits] message_size. The backbone takes messages up to it; a
// submitted message must still fit in it once sealed (sealing grows a
// message by about 37%, smime.MaxPlainSize), so that what submission
// accepts with 250 is not refused by a partner with the same limit.
func messageSizes(l config.Limits) (backbone, submission int64) {
	backbone = int64(l.MessageSize)
	return backbone, smime.MaxPlainSize(backbone, smtp.DefaultMaxRecipients)
}
