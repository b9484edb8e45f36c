package xdm

import (
	"errors"
	"strings"
	"testing"
)

func TestParseContext(t *testing.T) {
	good := "version: 1.0\r\nid: 2ff7ebd2-6e0d-4d0f-9d8c-1e7e4b1f2a3b\r\npatient-id: 2.16.840.1.113883.19.999999:123456; 2.16.840.1.113883.19.888888:75774\r\n" +
		"type: radiology/report\r\npurpose: research\r\npatient: givenName=John; surname=Doe; middleName=Jacob;\r\n dateOfBirth=1961-12-31; gender=M; postalCode=12345\r\n"
	c, err := ParseContext([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != "1.0" || len(c.PatientIDs) != 2 || c.Type != "radiology/report" || c.Purpose != "research" || len(c.Patient) != 6 ||
		c.Patient[3] != [2]string{"dateOfBirth", "1961-12-31"} {
		t.Fatalf("%+v", c)
	}
	if c.PatientCX() != "123456^^^&2.16.840.1.113883.19.999999&ISO" {
		t.Fatalf("CX %q", c.PatientCX())
	}
	again, err := ParseContext(c.Bytes())
	if err != nil || strings.Join(again.PatientIDs, ",") != strings.Join(c.PatientIDs, ",") || len(again.Patient) != 6 {
		t.Fatalf("round trip: %v %+v", err, again)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"no version", "id: x\n", "no version"},
		{"no id", "version: 1.0\n", "no id"},
		{"bad version", "version: 2.0\nid: x\n", "not 1.x"},
		{"bad patient id", "version: 1.0\nid: x\npatient-id: 12345\n", "patient-id"},
		{"bad type", "version: 1.0\nid: x\ntype: pizza/order\n", "type"},
		{"bad purpose", "version: 1.0\nid: x\npurpose: marketing\n", "purpose"},
		{"bad patient", "version: 1.0\nid: x\npatient: shoeSize=12\n", "patient parameter"},
		{"garbage", "\x00\x01\x02", "not name: value"},
		{"twice", "version: 1.0\nversion: 1.1\nid: x\n", "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseContext([]byte(tc.text))
			if !errors.Is(err, ErrContext) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
