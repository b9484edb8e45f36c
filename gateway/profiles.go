package gateway

import (
	"fmt"

	"github.com/hisp-project/hisp/agent"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/store"
)

// outboundProfiles reads the [outbound] algorithm keys and the per-domain
// [outbound.profiles] tables: the default profile, and each partner's with
// the keys it leaves out taken from the default.
func outboundProfiles(o config.Outbound) (smime.Profile, map[string]smime.Profile, error) {
	def, err := smime.ParseProfile(o.Cipher, o.OAEP, o.Digest)
	if err != nil {
		return def, nil, fmt.Errorf("[outbound]: %w", err)
	}
	def = def.Complete()
	profiles := make(map[string]smime.Profile, len(o.Profiles))
	for domain, pc := range o.Profiles {
		p, err := smime.ParseProfile(pc.Cipher, pc.OAEP, pc.Digest)
		if err != nil {
			return def, nil, fmt.Errorf("[outbound.profiles.%q]: %w", domain, err)
		}
		d, err := store.NormalizeDomain(domain)
		if err != nil {
			return def, nil, fmt.Errorf("[outbound.profiles.%q]: %w", domain, err)
		}
		profiles[d] = p.Or(def) // keyed as agent looks them up (store.NormalizeAddress)
	}
	return def, profiles, nil
}

// agentProfiles are the agent options that carry the outbound profiles.
func agentProfiles(opts agent.Options, o config.Outbound) (agent.Options, error) {
	def, profiles, err := outboundProfiles(o)
	if err != nil {
		return opts, err
	}
	opts.Seal.Cipher, opts.Seal.Digest = def.Cipher, def.Digest
	opts.KeyTransport = def.KeyTransport
	opts.Profiles = profiles
	return opts, nil
}

// queuedCopies returns what to queue for res: one message per sealed copy
// (one per recipient profile), each with its recipients, all with base's
// envelope fields. The first goes to the queue with the submission's
// extras, the others in EnqueueExtras.More, so that all are committed
// together.
func queuedCopies(base store.QueuedMessage, res *agent.OutboundResult) []store.QueuedMessage {
	var out []store.QueuedMessage
	for _, c := range res.Copies {
		m := base
		m.Data, m.Recipients = c.Data, nil
		for _, i := range c.Recipients {
			r := res.Recipients[i]
			m.Recipients = append(m.Recipients, store.QueuedRecipient{Address: r.Recipient, Local: r.Local})
		}
		out = append(out, m)
	}
	return out
}
