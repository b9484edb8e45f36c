// Package testccda makes synthetic C-CDA documents of a given size for tests
// and benchmarks. No real patient data.
package testccda

import (
	"bytes"
	"fmt"
)

// Big returns a synthetic C-CDA discharge summary of at least size bytes:
// a header, then sections of narrative tables and coded entries, as an EHR's
// large documents are.
func Big(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 4096)
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!-- Synthetic C-CDA for benchmarks. No real patient data. -->
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.10.20.22.1.1" extension="2015-08-01"/>
  <templateId root="2.16.840.1.113883.10.20.22.1.8" extension="2015-08-01"/>
  <id root="2.16.840.1.113883.19.5.99999.1" extension="TEST-BIG"/>
  <code code="18842-5" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="Discharge Summary"/>
  <title>Discharge Summary</title>
  <effectiveTime value="20261125100000+0000"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <recordTarget><patientRole><id extension="12345" root="2.16.840.1.113883.19.5.99999.2"/>
    <patient><name><given>Testy</given><family>McTestface</family></name>
    <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="19700101"/></patient></patientRole></recordTarget>
  <author><time value="20261125100000+0000"/><assignedAuthor><id extension="1234567890" root="2.16.840.1.113883.4.6"/>
    <assignedPerson><name><given>Alice</given><family>Hospitalist</family></name></assignedPerson></assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="2.16.840.1.113883.19.5.99999"/>
    <name>Synthetic General Hospital</name></representedCustodianOrganization></assignedCustodian></custodian>
  <component><structuredBody>
`)
	for s := 0; b.Len() < size; s++ {
		fmt.Fprintf(&b, "<component><section><code code=\"30954-2\" codeSystem=\"2.16.840.1.113883.6.1\"/><title>Results %d</title><text><table><tbody>\n", s)
		for r := 0; r < 50; r++ {
			fmt.Fprintf(&b, "<tr><td>Synthetic test %d.%d</td><td>%d mg/dL</td><td>2026-11-%02d</td></tr>\n", s, r, (s*50+r)%997, r%28+1)
		}
		b.WriteString("</tbody></table></text>\n")
		for r := 0; r < 50; r++ {
			fmt.Fprintf(&b, "<entry><observation classCode=\"OBS\" moodCode=\"EVN\"><id root=\"2.16.840.1.113883.19.5.99999.9\" extension=\"%d-%d\"/>"+
				"<code code=\"2345-7\" codeSystem=\"2.16.840.1.113883.6.1\"/><value value=\"%d\" unit=\"mg/dL\"/></observation></entry>\n", s, r, (s*50+r)%997)
		}
		b.WriteString("</section></component>\n")
	}
	b.WriteString("</structuredBody></component>\n</ClinicalDocument>\n")
	return b.Bytes()
}
