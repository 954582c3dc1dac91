package connection

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

// parserE164 is NormalizePhone's answer through libphonenumber's parser alone.
func parserE164(s, region string) (string, bool) {
	n, err := phonenumbers.Parse(s, region)
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return "", false
	}
	return phonenumbers.Format(n, phonenumbers.E164), true
}

// TestE164FastMatchesParser: wherever e164Fast answers, the parser answers the same number
// (and accepts it), under any default region; and it does answer for the common case, valid
// numbers of every region written in E.164. The inputs: every region's example numbers of
// every type, the same with their national prefix put back after the calling code, random
// digit strings after every calling code (2–17 digits, some starting with 0 or the region's
// national prefix), and short, long and odd strings.
func TestE164FastMatchesParser(t *testing.T) {
	rng := rand.New(rand.NewPCG(164, 2026))
	regions := []string{"ZZ", "DE", "US", "IT", "BR", "GB", "RU", "AR", "MX", "IN"}
	var inputs []string
	var examples []string
	neighbours := 40
	if testing.Short() {
		neighbours = 8
	}
	for _, region := range slices.Sorted(maps.Keys(phonenumbers.GetSupportedRegions())) {
		cc := phonenumbers.GetCountryCodeForRegion(region)
		prefix := phonenumbers.GetNddPrefixForRegion(region, true)
		for typ := phonenumbers.FIXED_LINE; typ <= phonenumbers.VOICEMAIL; typ++ {
			ex := phonenumbers.GetExampleNumberForType(region, typ)
			if ex == nil {
				continue
			}
			e := phonenumbers.Format(ex, phonenumbers.E164)
			examples = append(examples, e)
			nsn := phonenumbers.GetNationalSignificantNumber(ex)
			inputs = append(inputs, e, "+"+strconv.Itoa(cc)+prefix+nsn, "+"+strconv.Itoa(cc)+"0"+nsn, e+"0", e[:len(e)-1])
			// Neighbours of the example (its last 1–4 digits changed): mostly valid numbers of
			// the same type, which is what the validity test has to get right.
			for range neighbours {
				b := []byte(e)
				for k := 1 + rng.IntN(min(4, len(nsn))); k > 0; k-- {
					b[len(b)-k] = byte('0' + rng.IntN(10))
				}
				inputs = append(inputs, string(b))
			}
		}
	}
	for _, cc := range slices.Sorted(maps.Keys(phonenumbers.GetSupportedCallingCodes())) {
		region := phonenumbers.GetRegionCodeForCountryCode(cc)
		prefix := phonenumbers.GetNddPrefixForRegion(region, true)
		for range 600 {
			n := 2 + rng.IntN(16)
			d := make([]byte, n)
			for i := range d {
				d[i] = byte('0' + rng.IntN(10))
			}
			switch rng.IntN(4) {
			case 0, 1:
				if prefix != "" && len(prefix) < n {
					copy(d, prefix)
				}
			case 2:
				d[0] = '0'
			}
			inputs = append(inputs, "+"+strconv.Itoa(cc)+string(d))
		}
	}
	for n := 0; n <= 22; n++ {
		d := make([]byte, n)
		for i := range d {
			d[i] = byte('1' + rng.IntN(9))
		}
		inputs = append(inputs, "+"+string(d), "+0"+string(d), "++"+string(d), "+"+string(d)+"#", string(d))
	}
	// Valid as written, but the parser strips Belarus's national prefix 8 and finds the rest
	// invalid: the reason e164Fast leaves numbers starting with a national prefix to it.
	inputs = append(inputs, "+3758102748677", "+3758100042706")
	inputs = append(inputs, examples...)

	fast := 0
	for _, s := range inputs {
		got, ok := e164Fast(s)
		if !ok {
			continue
		}
		fast++
		// The default region plays no part for "+digits": every answer is checked under "ZZ",
		// and under one of the others in turn.
		for _, region := range []string{"ZZ", regions[fast%len(regions)]} {
			want, valid := parserE164(s, region)
			if !valid || got != want {
				t.Fatalf("e164Fast(%q) = %q; the parser (region %s) says %q, valid %v", s, got, region, want, valid)
			}
		}
	}
	// The fast path must carry the common case, or it saves nothing: valid examples in E.164.
	decided := 0
	for _, e := range examples {
		if _, ok := e164Fast(e); ok {
			decided++
		}
	}
	if decided*10 < len(examples)*8 {
		t.Errorf("e164Fast answered %d of %d valid example numbers, want ≥ 80 %%", decided, len(examples))
	}
	if got, ok := e164Fast("+4915100000001"); !ok || got != "+4915100000001" {
		t.Errorf("e164Fast(+4915100000001) = %q, %v", got, ok)
	}
	t.Logf("%d inputs, %d answered by the fast path; %d of %d examples", len(inputs), fast, decided, len(examples))
}

// TestNormalizePhoneUnchanged: NormalizePhone (with its fast path) answers exactly what the
// parser answers, number and validity, for E.164 and other spellings alike.
func TestNormalizePhoneUnchanged(t *testing.T) {
	inputs := []string{" +49 151 00000001 ", "+4915100000001", "015100000001", "+1 650 253 0000", "+16502530000",
		"+390612345678", "+39 06 1234 5678", "+12", "+999123456", "+00491510000001", "+4901510000001", "+44 7400 123456",
		"+447400123456", "+4407400123456", "+8613800138000", "+88612345678", "+80012345678", "+7 912 345 67 89"}
	for i := range 2000 {
		inputs = append(inputs, fmt.Sprintf("+49151%08d", i*7919), fmt.Sprintf("+1%010d", 2000000000+i*104729))
	}
	for _, region := range []string{"", "DE", "US", "IT"} {
		for _, s := range inputs {
			got, err := NormalizePhone("phone", s, region)
			r := region
			if r == "" {
				r = "ZZ"
			}
			want, valid := parserE164(trimmed(s), r)
			if valid != (err == nil) || got != want {
				t.Errorf("NormalizePhone(%q, %q) = %q, %v; the parser: %q, valid %v", s, region, got, err, want, valid)
			}
		}
	}
}

func trimmed(s string) string {
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// BenchmarkNormalizePhoneE164 measures a German mobile number in E.164, fast path and parser.
func BenchmarkNormalizePhoneE164(b *testing.B) {
	b.Run("fast", func(b *testing.B) {
		for i := range b.N {
			if _, err := NormalizePhone("p", fmt.Sprintf("+49151%08d", i%100_000_000), ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parser", func(b *testing.B) {
		for i := range b.N {
			if _, ok := parserE164(fmt.Sprintf("+49151%08d", i%100_000_000), "ZZ"); !ok {
				b.Fatal("invalid")
			}
		}
	})
}
