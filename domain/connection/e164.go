package connection

import (
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// e164Fast normalises a number already written in E.164 ("+" and 3–17 ASCII digits, nothing
// else) without libphonenumber's parser, and reports false whenever it cannot vouch for the
// parser's answer: the caller then runs the parser (NormalizePhone). When it reports true, the
// result is exactly what phonenumbers.Parse + IsValidNumber + Format(E164) give for s, with any
// default region: it builds the very PhoneNumber the parser builds for such a string and asks
// the library's own IsValidNumber and Format about it. The parser's steps, for "+digits":
//
//   - no RFC 3966 context, nothing before the "+" or after the last digit, no second number
//     (extractPossibleNumber leaves it as is);
//   - viable (VALID_PHONE_NUMBER: "+" and at least three digits);
//   - no extension: every alternative of EXTN_PATTERN needs a character other than a digit
//     (";ext=", a label, x # ~, "- …#", ",", ";");
//   - the "+" is stripped and the country calling code is the shortest prefix (1–3 digits, not
//     starting with 0) that is a supported calling code; the default region plays no part;
//   - the national prefix is stripped only if the region's national_prefix_for_parsing
//     matches the start of the national number: such numbers are left to the parser, as are
//     national numbers with a leading zero (Italian leading zeros), and every number the
//     library finds invalid (so errors keep the parser's wording).
//
// TestE164FastMatchesParser compares it with the parser on hundreds of thousands of numbers
// across every calling code. A 100,000-number broadcast spends ≈ 1.7 s of CPU in the parser
// and a fraction of that here (docs/benchmarks-history.md).
func e164Fast(s string) (string, bool) {
	// "+", a country code of 1–3 digits and a national number of 2–17 (MIN/MAX_LENGTH_FOR_NSN).
	if len(s) < 4 || len(s) > 1+3+17 || s[0] != '+' || s[1] == '0' {
		return "", false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	t := e164Tables()
	digits := s[1:]
	var cc int
	var national string
	for i := 1; i <= 3 && i <= len(digits); i++ {
		c, _ := strconv.Atoi(digits[:i])
		if t.supported[c] {
			cc, national = c, digits[i:]
			break
		}
	}
	if cc == 0 {
		return "", false
	}
	info, ok := t.codes[cc]
	if !ok || len(national) < 2 || len(national) > 17 || national[0] == '0' {
		return "", false
	}
	if info.nationalPrefix != nil && info.nationalPrefix.MatchString(national) {
		return "", false
	}
	nn, err := strconv.ParseUint(national, 10, 64)
	if err != nil {
		return "", false
	}
	if info.valid != nil || info.regions != nil {
		// IsValidNumber's own test, with the patterns compiled once.
		if !info.ok(national) {
			return "", false
		}
		return s, true // Format(E164) is "+", the code and the national number: s itself
	}
	cc32 := int32(cc)
	n := &phonenumbers.PhoneNumber{CountryCode: &cc32, NationalNumber: &nn}
	if !phonenumbers.IsValidNumber(n) {
		return "", false
	}
	return phonenumbers.Format(n, phonenumbers.E164), true
}

// e164Regions returns the tables of the regions of a shared calling code, or nil (IsValidNumber
// is asked) if one lacks metadata or a pattern does not compile.
func e164Regions(regions []string, byRegion map[string]*phonenumbers.PhoneMetadata) []e164Region {
	out := make([]e164Region, 0, len(regions))
	for _, region := range regions {
		md := byRegion[region]
		if md == nil {
			return nil
		}
		var r e164Region
		var err error
		if ld := md.GetLeadingDigits(); ld != "" {
			if r.leading, err = regexp.Compile("^(?:" + ld + ")"); err != nil {
				return nil
			}
		}
		if r.valid, err = newE164Valid(md); err != nil {
			return nil
		}
		out = append(out, r)
	}
	return out
}

// e164Desc is a PhoneNumberDesc as isNumberMatchingDesc reads it: the number's length must be
// one of lengths (when there are any) and the whole number must match re.
type e164Desc struct {
	lengths []int32
	re      *regexp.Regexp
}

func newE164Desc(d *phonenumbers.PhoneNumberDesc) (e164Desc, error) {
	re, err := regexp.Compile("^(?:" + d.GetNationalNumberPattern() + ")$")
	if d == nil {
		return e164Desc{re: re}, err
	}
	return e164Desc{lengths: d.PossibleLength, re: re}, err
}

func (d e164Desc) matches(nsn string) bool {
	if len(d.lengths) > 0 && !slices.Contains(d.lengths, int32(len(nsn))) {
		return false
	}
	return d.re.MatchString(nsn)
}

// e164Valid is libphonenumber's IsValidNumber for a calling code of one region:
// getNumberTypeHelper(nsn, metadata) != UNKNOWN.
type e164Valid struct {
	general e164Desc
	// types are premium rate, toll free, shared cost, VoIP, personal, pager, UAN, voicemail
	// and fixed line: any match is a type other than UNKNOWN.
	types []e164Desc
	// mobile counts only when the metadata does not say mobile and fixed line share a pattern.
	mobile     e164Desc
	sameMobile bool
}

func (v *e164Valid) ok(nsn string) bool {
	if !v.general.matches(nsn) {
		return false
	}
	for _, d := range v.types {
		if d.matches(nsn) {
			return true
		}
	}
	return !v.sameMobile && v.mobile.matches(nsn)
}

func newE164Valid(md *phonenumbers.PhoneMetadata) (*e164Valid, error) {
	v := &e164Valid{sameMobile: md.GetSameMobileAndFixedLinePattern()}
	var err error
	if v.general, err = newE164Desc(md.GetGeneralDesc()); err != nil {
		return nil, err
	}
	if v.mobile, err = newE164Desc(md.GetMobile()); err != nil {
		return nil, err
	}
	for _, d := range []*phonenumbers.PhoneNumberDesc{md.GetPremiumRate(), md.GetTollFree(), md.GetSharedCost(),
		md.GetVoip(), md.GetPersonalNumber(), md.GetPager(), md.GetUan(), md.GetVoicemail(), md.GetFixedLine()} {
		t, err := newE164Desc(d)
		if err != nil {
			return nil, err
		}
		v.types = append(v.types, t)
	}
	return v, nil
}

// e164Code is what e164Fast needs of one calling code's metadata.
type e164Code struct {
	// nationalPrefix matches a national prefix for parsing at the start of a national number
	// (nil: the region has none).
	nationalPrefix *regexp.Regexp
	// valid tests a national number of a code with one region; regions, of a code with
	// several (in the metadata's order). Both nil: e164Fast asks IsValidNumber.
	valid   *e164Valid
	regions []e164Region
}

// e164Region is one region of a calling code shared by several (+1, +7, +44, …).
type e164Region struct {
	// leading matches the region's leading digits at the start of a national number (nil:
	// the region has none).
	leading *regexp.Regexp
	valid   *e164Valid
}

// ok is IsValidNumber for a national number of the code: GetRegionCodeForNumber picks the
// first region whose leading digits match, or, for a region without any, that the number is
// valid for; the number is valid if it is valid for the region picked.
func (c e164Code) ok(nsn string) bool {
	if c.valid != nil {
		return c.valid.ok(nsn)
	}
	for _, r := range c.regions {
		if r.leading != nil {
			if r.leading.MatchString(nsn) {
				return r.valid.ok(nsn)
			}
		} else if r.valid.ok(nsn) {
			return true
		}
	}
	return false
}

type e164Table struct {
	// supported are the calling codes the parser recognises after a "+".
	supported map[int]bool
	// codes holds the calling codes whose metadata the parser uses; a supported code missing
	// here is left to the parser.
	codes map[int]e164Code
}

var (
	e164Once  sync.Once
	e164Built *e164Table
)

// e164Tables builds, once, the calling codes' tables from libphonenumber's own metadata: the
// metadata the parser picks for a code is that of the code's main region
// (GetRegionCodeForCountryCode), or the non-geographic entity's ("001") for that code.
func e164Tables() *e164Table {
	e164Once.Do(func() {
		t := &e164Table{supported: map[int]bool{}, codes: map[int]e164Code{}}
		for c, ok := range phonenumbers.GetSupportedCallingCodes() {
			if ok {
				t.supported[c] = true
			}
		}
		coll, err := phonenumbers.MetadataCollection()
		if err != nil {
			e164Built = t // no metadata of our own: every number goes to the parser
			return
		}
		byRegion := map[string]*phonenumbers.PhoneMetadata{}
		nonGeo := map[int]*phonenumbers.PhoneMetadata{}
		for _, md := range coll.GetMetadata() {
			if md.GetId() == "001" {
				nonGeo[int(md.GetCountryCode())] = md
			} else {
				byRegion[md.GetId()] = md
			}
		}
		for c := range t.supported {
			region := phonenumbers.GetRegionCodeForCountryCode(c)
			var md *phonenumbers.PhoneMetadata
			if region == "001" {
				md = nonGeo[c]
			} else {
				md = byRegion[region]
			}
			if md == nil || int(md.GetCountryCode()) != c {
				continue
			}
			var info e164Code
			if p := md.GetNationalPrefixForParsing(); p != "" {
				re, err := regexp.Compile("^(?:" + p + ")")
				if err != nil {
					continue
				}
				info.nationalPrefix = re
			}
			if regions := phonenumbers.GetRegionCodesForCountryCode(c); len(regions) == 1 {
				if info.valid, err = newE164Valid(md); err != nil {
					continue
				}
			} else {
				info.regions = e164Regions(regions, byRegion)
			}
			t.codes[c] = info
		}
		e164Built = t
	})
	return e164Built
}
